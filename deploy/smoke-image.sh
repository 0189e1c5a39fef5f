#!/usr/bin/env bash
# Build deploy/Containerfile with buildah (chroot isolation, no daemon) and smoke-run the image as it runs
# on Kubernetes: as uid 10001, `packwise --help` and `packwise config`.
#
#   deploy/smoke-image.sh                       # base image from docker.io
#   BASE=localhost/debian:bookworm-slim TORCH_INDEX=https://pypi.org/simple deploy/smoke-image.sh
#
# BASE: a Debian bookworm image where docker.io is out of reach (e.g. one made with debootstrap and
# `buildah from scratch`); TORCH_INDEX: where torch's CPU index is out of reach; EXTRA_CA: a CA bundle for
# the build's downloads behind a TLS-inspecting proxy (mounted into the build, never copied into the image).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/packwise:0.1.0}
args=(--isolation chroot --layers -f deploy/Containerfile -t "$IMAGE")
[[ -n "${BASE:-}" ]] && args+=(--build-arg "BASE=$BASE")
[[ -n "${TORCH_INDEX:-}" ]] && args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
[[ -n "${EXTRA_CA:-}" ]] && args+=(-v "$EXTRA_CA:/etc/ssl/certs/ca-certificates.crt:ro")
buildah ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"} bud "${args[@]}" .

container=$(buildah ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"} from "$IMAGE")
trap 'buildah ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"} rm "$container" >/dev/null' EXIT
run() { buildah ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"} run --isolation chroot --user 10001:10001 "$container" -- "$@"; }
[[ "$(run id -u)" == 10001 ]]
run packwise --help | grep -q worker
run packwise config | grep -q PACKWISE_STATE_DIR
echo "smoke test passed: $IMAGE runs packwise as uid 10001"

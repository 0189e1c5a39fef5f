"""deploy/Containerfile, checked without building it (deploy/smoke-image.sh builds and runs it where a base
image can be pulled): two stages, the image runs `packwise` as a non-root user, carries no credentials and
no model, and declares the only paths it writes as volumes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

CONTAINERFILE = Path(__file__).resolve().parent.parent / "deploy" / "Containerfile"
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|USER_INFO|PRIVATE|\.pem\b|\.key\b|id_rsa", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def stages(steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(step)
    return found


def problems(text: str) -> list[str]:
    steps = instructions(text)
    built = stages(steps)
    final = built[-1] if built else []
    found = [] if len(built) >= 2 else ["not multi-stage: the build tools would ship in the image"]
    users = [args.split(":")[0] for name, args in final if name == "USER"]
    if not users or users[-1] in ("root", "0"):
        found.append("the final stage runs as root")
    entry = next((args for name, args in reversed(final) if name == "ENTRYPOINT"), None)
    if entry is None or shlex.split(entry.strip("[]").replace(",", " "))[:1] != ["packwise"]:
        found.append(f"the entrypoint is {entry}, not packwise")
    found += [f"{name} {token.split('=')[0]} looks like a credential baked into the image"
              for name, args in steps if name in ("ENV", "ARG") for token in args.split() if SECRET_WORDS.search(token)]
    found += [f"COPY {args} puts a model in the image (mount it)" for name, args in steps
              if name in ("COPY", "ADD") and re.search(r"\bruns\b|bundles?\b|\.pt\b", args)]
    volumes = " ".join(args for name, args in final if name == "VOLUME")
    found += [f"{path} is not a volume" for path in ("/var/lib/packwise", "/tmp") if path not in volumes]
    return found


def test_containerfile_is_multi_stage_non_root_and_runs_packwise() -> None:
    text = CONTAINERFILE.read_text(encoding="utf-8")
    assert problems(text) == []
    steps = instructions(text)
    assert [args for name, args in steps if name == "ENTRYPOINT"] == ['["packwise"]']
    final = stages(steps)[-1]
    assert ("USER", "10001:10001") in final  # the uid deploy/k8s runs as (runAsUser)
    assert "PACKWISE_MODEL_PATH=/models/current" in " ".join(args for name, args in final if name == "ENV")
    assert "download.pytorch.org/whl/cpu" in text  # CPU-only torch by default


def test_the_checks_name_what_is_wrong() -> None:
    text = CONTAINERFILE.read_text(encoding="utf-8")
    one_stage = "\n".join(line for line in text.splitlines() if not line.startswith("FROM ${BASE} AS build"))
    one_stage = one_stage.replace("COPY --from=build", "COPY")
    assert problems(one_stage) == ["not multi-stage: the build tools would ship in the image"]
    as_root = text.replace("USER 10001:10001", "USER root").replace('ENTRYPOINT ["packwise"]', 'ENTRYPOINT ["sh"]')
    assert problems(as_root) == ["the final stage runs as root", 'the entrypoint is ["sh"], not packwise']
    leaky = text.replace("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 PACKWISE_KAFKA_PASSWORD=hunter2").replace(
        "COPY schemas /app/schemas", "COPY schemas /app/schemas\nCOPY runs/bundles/current /models/current")
    assert problems(leaky) == ["ENV PACKWISE_KAFKA_PASSWORD looks like a credential baked into the image",
                               "COPY runs/bundles/current /models/current puts a model in the image (mount it)"]
    writable = text.replace('VOLUME ["/var/lib/packwise", "/tmp"]', 'VOLUME ["/var/lib/packwise"]')
    assert problems(writable) == ["/tmp is not a volume"]

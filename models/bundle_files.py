"""A bundle directory's files checked against its manifest, without torch: the worker checks a bundle
this way before its scoring process spends seconds importing torch to load it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

BUNDLE_FORMAT = 1
FILES = ("weights.pt", "tokenizer.model", "config.json", "calibration.json", "metrics.json")


class BundleError(Exception):
    """A bundle directory is missing, incomplete or corrupt."""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_files(path: str | Path) -> dict:
    """The manifest of a bundle whose files are all there and match their checksums; BundleError naming
    the path and the problem otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} does not exist or is not a directory.")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise BundleError(f"bundle {path} has no manifest.json; it is not a packwise bundle or is incomplete.") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BundleError(f"bundle {path} has a corrupt manifest.json.") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle {path} has format {manifest.get('format')!r}; this packwise reads format "
                          f"{BUNDLE_FORMAT}.")
    for name in FILES:
        if not (path / name).is_file():
            raise BundleError(f"bundle {path} is missing {name}.")
        if sha256(path / name) != manifest.get("files", {}).get(name):
            raise BundleError(f"bundle {path} has a corrupt {name} (its checksum does not match the manifest).")
    return manifest


def single_target(path: str | Path) -> tuple[str, float] | None:
    """(version, target) of the bundle at `path`: the target its "certification" holds, the one a worker from
    before per-target certification certified every product at with this bundle (and kept as one verdict
    per product). None when the files cannot tell."""
    path = Path(path)
    try:
        version = json.loads((path / "manifest.json").read_text())["version"]
        return version, float(json.loads((path / "calibration.json").read_text())["target"])
    except (OSError, ValueError, KeyError, TypeError):
        return None

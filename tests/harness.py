"""Worker processes for integration tests: real `packwise worker` processes against the session broker,
started, killed and stopped by pid (streams/workers.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Mapping

from streams.broker import free_port
from streams.settings import Settings
from streams.workers import WorkerProcess, settings_env

__all__ = ["TINY_MODEL_TARGETS", "WorkerProcess", "isolated_settings", "settings_env", "worker_settings",
           "write_marketplaces"]


def isolated_settings(bootstrap: str) -> Settings:
    """Settings for `bootstrap` with a topic prefix and app id (changelog topics) of their own, so tests never
    collide."""
    run = uuid.uuid4().hex[:8]
    return Settings(bootstrap_servers=bootstrap, topic_prefix=f"t{run}.", app_id=f"pw-{run}", partitions=3)


# The targets the session's small model (tests/conftest.py trained_bundle) is certified at, and the marketplaces
# of the worker tests have: its 240 calibration products cannot certify anything at the built-in 0.3-0.5%.
TINY_MODEL_TARGETS = {"NA": 0.05, "EU": 0.04, "JP": 0.03}


def worker_settings(base: Settings, tmp: Path, name: str, model: Path, **changes) -> Settings:
    """Settings for a worker; unless the test chose marketplaces, they have the TINY_MODEL_TARGETS."""
    if not base.marketplaces_file and "marketplaces_file" not in changes:
        changes["marketplaces_file"] = str(write_marketplaces(tmp / "marketplaces.json", TINY_MODEL_TARGETS))
    return base.replace(state_dir=str(tmp / "state"), worker_name=name, web_port=free_port(), model_path=str(model),
                        **changes)


def write_marketplaces(path: Path, target: float | Mapping[str, float]) -> Path:
    """A PACKWISE_MARKETPLACES_FILE setting each marketplace's target: one for all, or one per marketplace."""
    targets = target if isinstance(target, Mapping) else {code: target for code in ("NA", "EU", "JP")}
    path.write_text(json.dumps({code: {"target_damage_rate": rate} for code, rate in targets.items()}))
    return path

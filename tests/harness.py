"""Worker processes for integration tests: real `packwise worker` processes against the session broker,
started, killed and stopped by pid (streams/workers.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from streams.broker import free_port
from streams.settings import Settings
from streams.workers import WorkerProcess, settings_env

__all__ = ["WorkerProcess", "isolated_settings", "settings_env", "worker_settings", "write_marketplaces"]


def isolated_settings(bootstrap: str) -> Settings:
    """Settings for `bootstrap` with a topic prefix and app id (changelog topics) of their own, so tests never
    collide."""
    run = uuid.uuid4().hex[:8]
    return Settings(bootstrap_servers=bootstrap, topic_prefix=f"t{run}.", app_id=f"pw-{run}", partitions=3)


def worker_settings(base: Settings, tmp: Path, name: str, model: Path, **changes) -> Settings:
    return base.replace(state_dir=str(tmp / "state"), worker_name=name, web_port=free_port(), model_path=str(model),
                        **changes)


def write_marketplaces(path: Path, target: float) -> Path:
    path.write_text(json.dumps({code: {"target_damage_rate": target} for code in ("NA", "EU", "JP")}))
    return path

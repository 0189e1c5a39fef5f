"""The worker's view of the model: a bundle loaded once, scoring batches of jobs into ModelViews."""

from __future__ import annotations

from pathlib import Path

from streams import metrics
from streams.errors import PackwiseError
from streams.policy import ModelView
from streams.processor import ScoreJob


class Scorer:
    def __init__(self, bundle) -> None:  # models.bundle.Bundle; imported lazily (torch) by load()
        self.bundle = bundle

    @classmethod
    def load(cls, path: str | Path) -> "Scorer":
        if not str(path):
            raise PackwiseError("no model bundle given: pass --model DIR or set PACKWISE_MODEL_PATH "
                                "(`packwise train --out DIR` writes one)")
        from models.bundle import BundleError, load_bundle

        try:
            return cls(load_bundle(path))
        except BundleError as error:
            raise PackwiseError(f"cannot load the model: {str(error).rstrip('.')}; retrain with "
                                "`packwise train --out DIR`") from None

    @property
    def version(self) -> str:
        return self.bundle.version

    def score(self, jobs: list[ScoreJob]) -> list[ModelView]:
        if not jobs:
            return []
        with metrics.SCORING_SECONDS.time():
            predictions = self.bundle.predict([j.catalog for j in jobs], [j.capture for j in jobs])
        return [ModelView(p.probabilities, p.certified, p.bundle_version) for p in predictions]

"""The worker's view of the model: a bundle loaded once, scoring batches of jobs into ModelViews."""

from __future__ import annotations

import os
from pathlib import Path

from streams import metrics
from streams.errors import PackwiseError
from streams.policy import ModelView
from streams.processor import ScoreJob


class Scorer:
    def __init__(self, bundle) -> None:  # models.bundle.Bundle; imported lazily (torch) by load()
        self.bundle = bundle

    @classmethod
    def load(cls, path: str | Path, threads: int = 0) -> "Scorer":
        if not str(path):
            raise PackwiseError("no model bundle given: pass --model DIR or set PACKWISE_MODEL_PATH "
                                "(`packwise train --out DIR` writes one)")
        import torch

        from models.bundle import BundleError, load_bundle

        try:
            bundle = load_bundle(path)
        except BundleError as error:
            raise PackwiseError(f"cannot load the model: {str(error).rstrip('.')}; retrain with "
                                "`packwise train --out DIR`") from None
        # after load_bundle, which sets one thread per core
        torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0)) - 1))
        scorer = cls(bundle)
        scorer.warm_up()
        return scorer

    def warm_up(self) -> None:
        """Score a synthetic product once, text and images, before the worker takes traffic: torch's first
        calls allocate and pick kernels, and would otherwise add most of a second to the first captures."""
        import numpy as np

        from models.world import World, WorldConfig, capture_record, catalog_record

        product = World.generate(WorldConfig(seed=0, n_products=1)).products[0]
        catalog, capture = catalog_record(product), capture_record(product, np.random.default_rng(0), missing_view_rate=0.0)
        for _ in range(2):
            self.bundle.predict([catalog, None, catalog], [capture, capture, None])

    @property
    def version(self) -> str:
        return self.bundle.version

    def score(self, jobs: list[ScoreJob]) -> list[ModelView]:
        if not jobs:
            return []
        with metrics.SCORING_SECONDS.time():
            predictions = self.bundle.predict([j.catalog for j in jobs], [j.capture for j in jobs])
        return [ModelView(p.probabilities, p.certified, p.bundle_version) for p in predictions]

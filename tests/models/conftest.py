"""One small trained world shared by the model tests (training is the slow part of the suite)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from models.imbalance import Imbalance
from models.network import Modality, NetworkConfig
from models.train import Dataset, FitResult, TrainConfig, fit, prepare
from models.world import WorldConfig

TRAIN_WORLD = WorldConfig(seed=11, n_products=3000)
EPOCHS = 3
# Certified at 0.5% as `packwise train` is by default, and at looser targets that the 900 calibration products of
# this small world can reach (0.5% needs 598 damage-free certified ones), for the per-marketplace checks.
TRAIN_TARGETS = (0.005, 0.007, 0.01, 0.02)


@dataclass(frozen=True)
class Trained:
    data: Dataset
    multimodal: FitResult
    text: FitResult


@pytest.fixture(scope="session")
def trained() -> Trained:
    data = prepare(TRAIN_WORLD, show_progress=False)
    config = TrainConfig(epochs=EPOCHS, imbalance=Imbalance.NONE, seed=11, targets=TRAIN_TARGETS)
    return Trained(data, fit(data, NetworkConfig(modality=Modality.MULTIMODAL), config, show_progress=False),
                   fit(data, NetworkConfig(modality=Modality.TEXT), config, show_progress=False))

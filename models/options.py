"""The closed sets a training run is configured with, in a module without torch, so the `packwise` CLI can
offer them as choices without importing torch for every command."""

from __future__ import annotations

import enum


class Modality(str, enum.Enum):
    MULTIMODAL = "multimodal"
    TEXT = "text"
    IMAGE = "image"


class Imbalance(str, enum.Enum):
    NONE = "none"
    OVERSAMPLE = "oversample"  # draw positive shipments with replacement up to the negatives' count
    UNDERSAMPLE = "undersample"  # keep as many negative shipments as positives, drawn without replacement
    TWO_PHASE = "two_phase"  # phase 1 on undersampled data, phase 2 on all of it
    SMOTE = "smote"  # synthetic positives interpolated in the fused embedding space, head refit
    CLASS_WEIGHT = "class_weight"  # positives weighted by negatives/positives per package type
    FOCAL = "focal"  # focal loss: easy negatives count less

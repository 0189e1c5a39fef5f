"""The damage model: a text tower, an image tower shared across views, and a fusion head giving one
logit of P(damaged) per package type. Text-only and image-only variants are the same code with a tower
switched off."""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
from torch import nn

from models.options import Modality  # noqa: F401 - re-exported: models.network.Modality
from models.features import CAPTURE_NUMERIC, CATALOG_NUMERIC, Features
from models.packtypes import PACK_TYPES
from models.tokenizer import PAD_ID


@dataclass(frozen=True)
class NetworkConfig:
    modality: Modality = Modality.MULTIMODAL
    vocab_size: int = 1500
    token_dim: int = 64
    text_dim: int = 96
    backbone: str = "test_efficientnet"  # one of timm's tiny test models: fast enough for CPU inference
    image_dim: int = 96
    numeric_dim: int = 32
    hidden: int = 128
    dropout: float = 0.1

    @property
    def uses_text(self) -> bool:
        return self.modality in (Modality.MULTIMODAL, Modality.TEXT)

    @property
    def uses_images(self) -> bool:
        return self.modality in (Modality.MULTIMODAL, Modality.IMAGE)


def _numeric_mlp(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.GELU(), nn.Linear(n_out, n_out))


class TextTower(nn.Module):
    """Token embeddings, a width-3 convolution (so "glass-look" differs from "glass"), masked max+mean pool."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.token_dim, padding_idx=PAD_ID)
        self.conv = nn.Conv1d(config.token_dim, config.text_dim, kernel_size=3, padding=1)
        self.project = nn.Linear(2 * config.text_dim, config.text_dim)
        self.numeric = _numeric_mlp(CATALOG_NUMERIC, config.numeric_dim)

    def forward(self, tokens: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        mask = (tokens != PAD_ID).unsqueeze(1).float()  # [B, 1, T]
        h = torch.nn.functional.gelu(self.conv(self.embed(tokens).transpose(1, 2)))  # [B, D, T]
        pooled_max = (h - 1e4 * (1 - mask)).amax(dim=2)
        pooled_mean = (h * mask).sum(2) / mask.sum(2).clamp(min=1)
        pooled_max = torch.where(mask.sum(2) > 0, pooled_max, torch.zeros_like(pooled_max))
        return torch.cat([self.project(torch.cat([pooled_max, pooled_mean], 1)), self.numeric(numeric)], 1)


class ImageTower(nn.Module):
    """A timm backbone applied to every view; features pooled over the views present."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        # channels-last (NHWC) weights and inputs: oneDNN's convolutions then skip reordering each tensor, which
        # takes a quarter to a third off the whole network on one CPU thread at the tunnel's image sizes
        # (bench/RESULTS-worker.md, "channels-last"). Training and inference both run it so, so a loaded bundle
        # scores as the network it was trained as; weights saved in the default layout load into this one.
        self.backbone = timm.create_model(config.backbone, pretrained=False, num_classes=0).to(
            memory_format=torch.channels_last)
        self.project = nn.Linear(self.backbone.num_features, config.image_dim)
        self.numeric = _numeric_mlp(CAPTURE_NUMERIC, config.numeric_dim)

    def forward(self, images: torch.Tensor, view_mask: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        b, v = images.shape[:2]
        present = view_mask.reshape(-1) > 0
        x = images.reshape(b * v, *images.shape[2:])[present].float().div_(255.0).sub_(0.5).div_(0.25)
        per_view = torch.zeros(b * v, self.project.out_features, device=images.device)
        if x.shape[0]:  # only present views pay for the backbone
            per_view[present] = self.project(self.backbone(x.contiguous(memory_format=torch.channels_last)))
        per_view = per_view.reshape(b, v, -1)
        weights = view_mask.unsqueeze(2)
        pooled_mean = (per_view * weights).sum(1) / weights.sum(1).clamp(min=1)
        pooled_max = (per_view - 1e4 * (1 - weights)).amax(1) * (weights.sum(1) > 0)
        return torch.cat([pooled_mean + pooled_max, self.numeric(numeric)], 1)


class DamageNet(nn.Module):
    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = config
        width = 2  # modality flags
        if config.uses_text:
            self.text = TextTower(config)
            width += config.text_dim + config.numeric_dim
        if config.uses_images:
            self.image = ImageTower(config)
            width += config.image_dim + config.numeric_dim
        if config.uses_text and config.uses_images:
            width += 2  # measured vs declared size and weight: how much the vendor packaging adds
        self.fuse = nn.Sequential(nn.Linear(width, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
                                  nn.Linear(config.hidden, config.hidden), nn.GELU())
        self.head = nn.Linear(config.hidden, len(PACK_TYPES))

    def embed(self, f: Features) -> torch.Tensor:
        """The fused embedding the head reads (SMOTE interpolates here)."""
        parts = [f.has_text.unsqueeze(1), f.has_capture.unsqueeze(1)]
        if self.config.uses_text:
            parts.append(self.text(f.tokens, f.catalog_numeric) * f.has_text.unsqueeze(1))
        if self.config.uses_images:
            parts.append(self.image(f.images, f.view_mask, f.capture_numeric) * f.has_capture.unsqueeze(1))
        if self.config.uses_text and self.config.uses_images:
            both = (f.has_text * f.has_capture).unsqueeze(1)
            parts.append((f.capture_numeric[:, 3:5] - f.catalog_numeric[:, 3:5]) * both)
        return self.fuse(torch.cat(parts, 1))

    def forward(self, f: Features) -> torch.Tensor:
        """Logits of P(damaged | package type), [B, 4] in PACK_TYPES order."""
        return self.head(self.embed(f))

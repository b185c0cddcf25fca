"""A CLIP model in pixel space, and its zero-shot classifier.

:class:`PixelCLIP` wraps any open_clip model so that it takes images in [0, 1] and normalizes
them itself (mean/std from the model's preprocess config). Attacks therefore work in pixel
space, an epsilon means pixels, and teachers and students may use different normalizations.

:class:`ZeroShotClassifier` adds a fixed zero-shot head ``W`` (C, D): ``logits = 100 * f(x) @ W.T``.
"""

from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

LOGIT_SCALE = 100.0


class PixelCLIP(nn.Module):
    """An open_clip CLIP model that takes [0, 1] images and returns L2-normalized embeddings."""

    def __init__(
        self,
        model: nn.Module,
        arch: str,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int,
        source: str = "random",
    ) -> None:
        super().__init__()
        self.model = model
        self.arch = arch
        self.source = source
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._tokenizer = open_clip.get_tokenizer(arch)

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    def normalize_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, 3, H, W) -> the model's normalized input at its resolution."""
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return (x - self.mean) / self.std

    def encode_image(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image embeddings (B, D) of [0, 1] images; L2-normalized unless ``normalize=False``."""
        z = self.model.encode_image(self.normalize_pixels(x))
        return F.normalize(z, dim=-1) if normalize else z

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer(list(texts))

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Text embeddings (N, D) of strings, on the model's device."""
        tokens = self.tokenize(texts).to(self.mean.device)
        z = self.model.encode_text(tokens)
        return F.normalize(z, dim=-1) if normalize else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x)


class ZeroShotClassifier(nn.Module):
    """Class logits ``s * f(x) @ W.T`` of a :class:`PixelCLIP` with a fixed text head ``W``."""

    def __init__(self, clip: PixelCLIP, head: torch.Tensor, scale: float = LOGIT_SCALE) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("head", head.detach().clone(), persistent=False)  # (C, D)
        self.scale = scale

    @property
    def num_classes(self) -> int:
        return int(self.head.shape[0])

    def features(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.clip.encode_image(x, normalize=normalize)  # (B, D), L2-normalized by default

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * f @ self.head.to(f.dtype).T  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))

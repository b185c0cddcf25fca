"""Contrastive CLIP pretraining (image-caption InfoNCE): how the built-in world gets its clean CLIPs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmt_ard.data import build_caption_dataset
from mmt_ard.data.batches import batch_indices
from mmt_ard.evaluation import EvalConfig, check_datasets
from mmt_ard.models import ModelSpec, PixelCLIP, TextHeadCache, load_clip
from mmt_ard.models.export import export_open_clip
from mmt_ard.training.loop import LoopConfig, resolve_loop, train_and_export, validation_metrics
from mmt_ard.training.optim import OptimConfig
from mmt_ard.training.run import RunDir

log = logging.getLogger(__name__)


def _pretrain_eval() -> EvalConfig:
    return EvalConfig(dataset="builtin:shapes:split=val", eps=[], limit=1000)


@dataclass
class PretrainConfig:
    """``mmt-ard pretrain``: train both towers of ``model`` on image-caption pairs."""

    model: ModelSpec = field(default_factory=lambda: ModelSpec(arch="mmt-vit-t"))
    data: str = "builtin:captions:split=train"
    output: str = "runs/pretrain"
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(steps=400, batch_size=128, lr=2e-3, weight_decay=0.1, warmup=0.05)
    )
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=_pretrain_eval)


class PretrainTask(nn.Module):
    """Symmetric InfoNCE between image and caption embeddings of one CLIP."""

    def __init__(self, clip: PixelCLIP) -> None:
        super().__init__()
        self.clip = clip

    def named_trainable_parameters(self):  # type: ignore[no-untyped-def]
        return [(n, p) for n, p in self.clip.model.named_parameters() if p.requires_grad]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        x, tokens = batch
        img = self.clip.encode_image(x)  # (B, D)
        txt = F.normalize(self.clip.model.encode_text(tokens), dim=-1)  # (B, D)
        scale = self.clip.model.logit_scale.exp().clamp(max=100.0)
        logits = scale * img @ txt.T  # (B, B)
        target = torch.arange(len(x), device=x.device)
        i2t = F.cross_entropy(logits, target)
        t2i = F.cross_entropy(logits.T, target)
        with torch.no_grad():
            acc = (logits.argmax(-1) == target).float().mean()
        return {"loss": (i2t + t2i) / 2, "loss_i2t": i2t, "loss_t2i": t2i, "batch_acc": acc, "logit_scale": scale}

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.clip.model.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.clip.model.load_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def run_pretrain(cfg: PretrainConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Pretrain, export to ``OUTPUT/model`` (open_clip format) and evaluate zero-shot accuracy."""
    cfg.optim.validate()
    cfg.eval.validate()
    check_datasets(cfg.eval)
    resolved = resolve_loop(cfg.loop)
    device = resolved.device
    cfg = replace(cfg, loop=resolved.loop)  # the run's config (recorded in config.yaml); the caller's is unchanged
    torch.manual_seed(cfg.loop.seed)
    ds = build_caption_dataset(cfg.data)
    clip = load_clip(cfg.model, device=device)
    tokens = clip.tokenize(ds.captions)  # (N, L), tokenized once
    run = RunDir(cfg.output, cfg, resume=resume, overwrite=overwrite)
    task = PretrainTask(clip).to(device)

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = batch_indices(len(ds), cfg.optim.batch_size, cfg.loop.seed, step)
        return ds.images_uint8[idx].to(device).float().div_(255), tokens[idx].to(device)

    heads = TextHeadCache(None)  # the text tower changes during pretraining: no disk cache

    def validate(step: int) -> dict[str, Any]:
        return validation_metrics(clip, cfg.eval, heads, device, name="pretrain")

    return train_and_export(
        task,
        batches,
        cfg.optim,
        cfg.loop,
        run,
        resume,
        validate,
        export=lambda: export_open_clip(clip, run.path / "model"),
        summary={"model": str(run.path / "model"), "arch": cfg.model.arch},
        desc="pretrain",
    )

"""Fine-tuning a CLIP vision tower against its fixed zero-shot head (METHOD.md section 6).

Builds the clean and adversarial teachers, and the adversarial fine-tuning baselines users
compare with. ``f0`` is a frozen copy of the starting model; the head ``W`` comes from the
frozen text encoder and the training classes.

========== ============================= =======================================================
method     training attack               loss
========== ============================= =======================================================
clean      none                          CE(z(x), y)
tecoa      PGD on CE                     CE(z(x'), y)
fare       PGD on ||f(x') - f0(x)||^2    ||f(x') - f0(x)||^2 (no labels; f normalized unless fare.normalize_embeddings=false)
pmg-aft    PGD on CE                     CE(z(x'), y) + KL(p(x)||p(x')) + KL(p0(x')||p(x')), batch means
========== ============================= =======================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmt_ard.attacks import OBJECTIVES, PGDConfig, kl_logits, pgd
from mmt_ard.attacks.objectives import ObjectiveFn, check_random_start
from mmt_ard.data import build_dataset
from mmt_ard.data.batches import step_generator
from mmt_ard.data.pipeline import use_model_preprocess
from mmt_ard.errors import ConfigError
from mmt_ard.evaluation import EvalConfig, check_datasets, validation_eval
from mmt_ard.models import ModelSpec, PixelCLIP, TextHeadCache, ZeroShotClassifier, default_cache_dir, load_clip
from mmt_ard.models.export import export_open_clip
from mmt_ard.models.frozen import Frozen, frozen_copy
from mmt_ard.precision import compute_dtype
from mmt_ard.registry import Registry
from mmt_ard.training.loop import LoopConfig, labeled_batches, resolve_loop, train_and_export, validation_metrics
from mmt_ard.training.optim import OptimConfig
from mmt_ard.training.run import RunDir

Terms = dict[str, torch.Tensor]
FinetuneMethod = Callable[["FinetuneTask", torch.Tensor, torch.Tensor, torch.Generator], Terms]
FINETUNE_METHODS: Registry[FinetuneMethod] = Registry("fine-tuning method")
NEEDS_ORIGINAL = ("fare", "pmg-aft")


@dataclass
class FareOptions:
    """``fare`` only. METHOD.md compares L2-normalized embeddings; FARE's release compares raw ones."""

    normalize_embeddings: bool = True


@dataclass
class FinetuneConfig:
    """``mmt-ard finetune``. The default attack is "Fast2" (2-step PGD at 1/255), as for the paper's teacher."""

    method: str = "pmg-aft"
    model: ModelSpec = field(default_factory=lambda: ModelSpec(arch="mmt-vit-t"))
    data: str = "builtin:shapes:split=train"
    output: str = "runs/finetune"
    attack: PGDConfig = field(default_factory=lambda: PGDConfig(eps=1 / 255, steps=2, step_size=1 / 255))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=300, batch_size=64, lr=1e-4))
    loop: LoopConfig = field(default_factory=LoopConfig)
    eval: EvalConfig = field(default_factory=validation_eval)
    fare: FareOptions = field(default_factory=FareOptions)


class FinetuneTask(nn.Module):
    """A trainable CLIP vision tower, its fixed head, and (for fare/pmg-aft) the frozen original."""

    def __init__(
        self,
        clip: PixelCLIP,
        head: torch.Tensor,
        method: str,
        attack: PGDConfig,
        seed: int,
        precision: str = "fp32",
        fare: FareOptions | None = None,
    ) -> None:
        super().__init__()
        self.method_fn = FINETUNE_METHODS.get(method)
        if method == "fare":
            check_random_start("embedding-l2", attack)
        self.fare = fare or FareOptions()
        clip.model.requires_grad_(False)
        clip.visual.requires_grad_(True)
        self.student = ZeroShotClassifier(clip, head)
        # f0 is frozen: under bf16 its vision tower is held in bf16 (cast once), like a distillation teacher's
        self.original: Frozen | None = None
        if method in NEEDS_ORIGINAL:
            self.original = frozen_copy(self.student, compute_dtype(precision), heavy="clip.model.visual")
        self.attack_cfg = attack
        self.seed = seed
        self.precision = precision

    def named_trainable_parameters(self):  # type: ignore[no-untyped-def]
        return [(n, p) for n, p in self.student.clip.visual.named_parameters() if p.requires_grad]

    def attack(self, x: torch.Tensor, objective: ObjectiveFn, gen: torch.Generator) -> torch.Tensor:
        return pgd(self.student, x, objective, self.attack_cfg, precision=self.precision, generator=gen)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> Terms:
        x, y = batch
        return self.method_fn(self, x, y, step_generator(self.seed, step))

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.student.clip.model.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.student.clip.model.load_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def _ce_attack(task: FinetuneTask, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return task.attack(x, OBJECTIVES.get("ce")(task.student, x, labels=y), gen)


@FINETUNE_METHODS.register("clean")
def clean(task: FinetuneTask, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> Terms:
    return {"loss": F.cross_entropy(task.student(x), y)}


@FINETUNE_METHODS.register("tecoa")
def tecoa(task: FinetuneTask, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> Terms:
    return {"loss": F.cross_entropy(task.student(_ce_attack(task, x, y, gen)), y)}


@FINETUNE_METHODS.register("fare")
def fare(task: FinetuneTask, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> Terms:
    assert task.original is not None
    norm = task.fare.normalize_embeddings
    with torch.no_grad():
        anchor = task.original.run("features", x, normalize=norm)  # f0(x), (B, D)
    x_adv = task.attack(x, OBJECTIVES.get("embedding-l2")(task.student, x, anchor=anchor, normalize=norm), gen)
    return {"loss": (task.student.features(x_adv, normalize=norm) - anchor).pow(2).sum(-1).mean()}


@FINETUNE_METHODS.register("pmg-aft")
def pmg_aft(task: FinetuneTask, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> Terms:
    assert task.original is not None
    x_adv = _ce_attack(task, x, y, gen)
    z_adv, z_clean = task.student(x_adv), task.student(x)
    with torch.no_grad():
        z0_adv = task.original(x_adv)
    ce = F.cross_entropy(z_adv, y)
    kl_clean = kl_logits(z_clean, z_adv).mean()  # KL(p(x) || p(x')), gradient through both
    kl_orig = kl_logits(z0_adv, z_adv).mean()  # KL(p0(x') || p(x'))
    return {"loss": ce + kl_clean + kl_orig, "ce": ce, "kl_clean": kl_clean, "kl_original": kl_orig}


def run_finetune(cfg: FinetuneConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune, export to ``OUTPUT/model`` (open_clip format) and evaluate on the held-out split."""
    FINETUNE_METHODS.get(cfg.method)
    cfg.attack.validate()
    if cfg.method == "fare":
        check_random_start("embedding-l2", cfg.attack)
    elif cfg.fare != FareOptions():
        raise ConfigError(f"fare.* options are set but the method is {cfg.method!r}, which ignores them; drop them")
    cfg.optim.validate()
    cfg.eval.validate()
    check_datasets(cfg.eval)
    resolved = resolve_loop(cfg.loop)
    device = resolved.device
    cfg = replace(cfg, loop=resolved.loop)  # the run's config (recorded in config.yaml); the caller's is unchanged
    torch.manual_seed(cfg.loop.seed)
    ds = build_dataset(cfg.data)
    clip = load_clip(cfg.model, device=device)
    use_model_preprocess(ds, clip)
    heads = TextHeadCache(default_cache_dir())
    head = heads.head(clip, ds.classnames, ds.templates).to(device)
    run = RunDir(cfg.output, cfg, resume=resume, overwrite=overwrite)
    task = FinetuneTask(clip, head, cfg.method, cfg.attack, cfg.loop.seed, cfg.loop.precision, cfg.fare).to(device)

    def validate(step: int) -> dict[str, Any]:
        return validation_metrics(clip, cfg.eval, heads, device)

    return train_and_export(
        task,
        labeled_batches(ds, cfg.optim.batch_size, cfg.loop.seed, device, cfg.loop.data),
        cfg.optim,
        cfg.loop,
        run,
        resume,
        validate,
        export=lambda: export_open_clip(clip, run.path / "model"),
        summary={"model": str(run.path / "model"), "arch": cfg.model.arch, "method": cfg.method},
        desc=f"finetune {cfg.method}",
    )

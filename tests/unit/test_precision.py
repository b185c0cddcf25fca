"""bf16 where it pays: the CPU probe, frozen models held in bf16, the student under autocast.

The probe's branches are tested on every CPU by mocking it; the real probe is checked against the
CPU's own flags, so on an AVX512-BF16/AMX machine and on an AVX2-only one it is each tested for real.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from mmt_ard import precision as prec
from mmt_ard.attacks import PGDConfig
from mmt_ard.config import load_config
from mmt_ard.distill import DistillationTask, InnerAttackConfig, LossConfig
from mmt_ard.distill.run import DistillConfig, run_distill
from mmt_ard.models.frozen import Frozen, frozen_in, held_dtype, hold_in
from mmt_ard.precision import autocast
from mmt_ard.training.finetune import FinetuneTask
from tests.conftest import tiny_classifier, tiny_clip

CPU = torch.device("cpu")


def cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
def test_the_real_probe_agrees_with_the_cpus_own_flags():
    flags = cpu_flags()
    probe = prec.bf16_native(CPU)
    if "avx512_bf16" in flags:  # a CPUID bit: PyTorch's probe must see it (AMX alone may need OS permission)
        assert probe, "/proc/cpuinfo has avx512_bf16 but the probe says no native bf16"
    if not {"avx512_bf16", "amx_bf16", "amx_tile"} & flags:  # AVX2-only: bf16 is emulated
        assert not probe, "no bf16 flag in /proc/cpuinfo but the probe says native bf16"
    assert prec.effective_precision("bf16", CPU) == ("bf16" if probe else "fp32")


class CastRecorder(TorchDispatchMode):
    """Records the shapes of every tensor cast to bf16."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if (
            func in (torch.ops.aten._to_copy.default, torch.ops.aten.to.dtype)
            and isinstance(out, torch.Tensor)
            and out.dtype == torch.bfloat16
        ):
            self.shapes.append(tuple(out.shape))
        return out


def weight_casts(model: torch.nn.Module, x: torch.Tensor) -> int:
    """How many of ``model``'s parameters are cast to bf16 during one forward under bf16 autocast."""
    shapes = {tuple(p.shape) for p in model.parameters() if p.dim() >= 2}
    with torch.no_grad(), autocast(CPU, "bf16"), CastRecorder() as rec:
        model(x)
    return sum(s in shapes for s in rec.shapes)


def test_a_held_teacher_is_cast_once_not_on_every_call(images):
    teacher = tiny_classifier("mmt-vit-t", seed=2)
    reference = copy.deepcopy(teacher)
    assert weight_casts(Frozen(copy.deepcopy(teacher)), images) > 0  # the recorder sees autocast's re-casts
    held = frozen_in(teacher, torch.bfloat16, teacher.clip.visual)
    assert held_dtype(teacher.clip.visual) == torch.bfloat16 and teacher.head.dtype == torch.float32
    assert weight_casts(held, images) == 0  # held: no weight is cast again, under autocast or not
    with torch.no_grad():
        out, truth = held(images), reference(images)
        with autocast(CPU, "bf16"):
            assert torch.equal(held(images), out)  # autocast outside changes nothing: it runs with autocast off
    assert out.dtype == torch.float32  # callers get float32
    assert torch.allclose(out, truth, atol=0.05 * float(truth.abs().max()))  # bf16 rounding, not another model
    assert not torch.equal(out, truth)  # and it did run in bf16


def test_hold_in_is_idempotent_and_float32_is_a_no_op():
    tower = tiny_clip("mmt-vit-s").visual
    assert hold_in(tower, torch.float32) is tower and held_dtype(tower) == torch.float32
    hold_in(tower, torch.bfloat16)
    hooks = len(tower._forward_pre_hooks)
    hold_in(tower, torch.bfloat16)
    assert len(tower._forward_pre_hooks) == hooks  # a second hold registers nothing more
    with pytest.raises(ValueError, match="already held"):
        hold_in(tower, torch.float16)


def bf16_task(precision: str) -> DistillationTask:
    student = tiny_classifier("mmt-vit-s", seed=1)
    student.clip.model.requires_grad_(False)
    student.clip.visual.requires_grad_(True)
    return DistillationTask(
        student,
        tiny_classifier("mmt-vit-t", seed=2),
        tiny_classifier("mmt-rn-s", seed=3),
        InnerAttackConfig(eps=4 / 255, steps=1, step_size=2 / 255),
        LossConfig(),
        seed=7,
        precision=precision,
    )


def test_a_bf16_task_holds_its_teachers_in_bf16_and_trains_a_float32_student(images):
    task = bf16_task("bf16")
    for t in (task.teacher_clean, task.teacher_adv):
        assert held_dtype(t.module.clip.visual) == torch.bfloat16 and t.module.head.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in task.student.parameters())  # float32 master weights
    y = torch.arange(images.shape[0]) % 4
    task.train()
    with autocast(CPU, "bf16"):
        terms = task.training_step((images, y), 0)
    assert terms["loss"].dtype == torch.float32 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    grads = [p.grad for _, p in task.named_trainable_parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    assert all(p.grad is None for t in (task.teacher_clean, task.teacher_adv) for p in t.parameters())
    plain = bf16_task("fp32")
    assert all(held_dtype(t.module.clip.visual) == torch.float32 for t in (plain.teacher_clean, plain.teacher_adv))


@pytest.mark.parametrize("method", ["fare", "pmg-aft"])
def test_the_finetuning_original_is_held_in_bf16_under_bf16(method, images):
    clip, head = tiny_clip("mmt-vit-s", seed=4), tiny_classifier("mmt-vit-s", seed=4).head
    task = FinetuneTask(
        clip, head, method, PGDConfig(eps=8 / 255, steps=1, step_size=4 / 255), seed=1, precision="bf16"
    )
    assert task.original is not None and held_dtype(task.original.module.clip.visual) == torch.bfloat16
    assert held_dtype(task.student.clip.visual) == torch.float32  # the trained copy keeps float32
    task.train()
    with autocast(CPU, "bf16"):
        loss = task.training_step((images, torch.arange(6) % 4), 0)["loss"]
    assert torch.isfinite(loss) and loss.dtype == torch.float32


def test_bf16_teachers_with_a_float32_student(images):
    attack = InnerAttackConfig(eps=4 / 255, steps=1, step_size=2 / 255)
    task = DistillationTask(
        tiny_classifier("mmt-vit-s", seed=1),
        tiny_classifier("mmt-vit-t", seed=2),
        tiny_classifier("mmt-vit-t", seed=3),
        attack,
        LossConfig(),
        seed=7,
        precision="fp32",
        teacher_precision="bf16",
    )
    assert all(held_dtype(t.module.clip.visual) == torch.bfloat16 for t in (task.teacher_clean, task.teacher_adv))
    assert task.precision == "fp32"  # the inner attack and the student run in float32
    task.student.requires_grad_(True)
    task.train()
    terms = task.training_step((images, torch.arange(6) % 4), 0)  # no autocast anywhere
    assert torch.isfinite(terms["loss"]) and terms["loss"].dtype == torch.float32


def _tiny(tmp_path, *extra: str) -> DistillConfig:
    """A one-step distillation of tiny models on 32 built-in images, into ``tmp_path``."""
    overrides = [
        "data=builtin:shapes:split=train,n=32",
        "student.arch=mmt-vit-s",
        "teacher_clean.arch=mmt-vit-t",
        "teacher_adv.arch=mmt-vit-t",
        "optim.steps=1",
        "optim.batch_size=8",
        "attack.steps=1",
        "eval.limit=8",
        "eval.pgd.steps=1",
        *extra,
        f"output={tmp_path}",
    ]
    return load_config(DistillConfig, overrides=overrides)


@pytest.mark.parametrize(
    ("loop", "teachers", "expected"),
    [("bf16", "", ("bf16", torch.bfloat16)), ("fp32", "bf16", ("fp32", torch.bfloat16))],
)
def test_a_bf16_run_on_a_cpu_with_native_bf16_trains_in_bf16(monkeypatch, tmp_path, loop, teachers, expected):
    """The native branch, mocked, so it is tested on AVX2-only machines too (tiny models: emulation is quick)."""
    monkeypatch.setattr(prec, "bf16_native", lambda device: True)
    held = []
    original_init = DistillationTask.__init__

    def recording_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original_init(self, *args, **kwargs)
        held.append((self.precision, held_dtype(self.teacher_adv.module.clip.visual)))

    monkeypatch.setattr(DistillationTask, "__init__", recording_init)
    cfg = _tiny(tmp_path, f"loop.precision={loop}", f"fast.teacher_precision={teachers}")
    summary = run_distill(cfg)
    assert held == [expected]
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["config"]
    assert saved["loop"]["precision"] == loop and saved["fast"]["teacher_precision"] == teachers  # as asked: it ran
    assert summary["val"]["acc"] >= 0  # validation (float32) ran on the student


def test_bf16_teachers_fall_back_to_float32_without_native_bf16(monkeypatch, tmp_path):
    monkeypatch.setattr(prec, "bf16_native", lambda device: False)
    cfg = _tiny(tmp_path, "fast.teacher_precision=bf16")
    run_distill(cfg)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["config"]["fast"]["teacher_precision"] == "fp32"


TINY_RUNS = {
    "distill": [
        "data=builtin:shapes:split=train,n=32",
        "attack.steps=1",
        "fast.teacher_precision=bf16",
        "eval.pgd.steps=1",
    ],
    "finetune": ["data=builtin:shapes:split=train,n=32", "attack.steps=1", "eval.pgd.steps=1"],
    "pretrain": ["data=builtin:captions:split=train,n=32", "eval.eps=[]"],
}


@pytest.mark.parametrize("command", sorted(TINY_RUNS))
def test_a_run_never_changes_the_config_it_is_given(command, monkeypatch, tmp_path):
    """bf16 on a device without native bf16 resolves to fp32: the run folder records what ran, and the
    caller's config object is exactly as it was (mutation caught: resolve_loop writing loop.precision,
    run_distill writing fast.teacher_precision)."""
    from mmt_ard.training.finetune import FinetuneConfig, run_finetune
    from mmt_ard.training.pretrain import PretrainConfig, run_pretrain

    monkeypatch.setattr(prec, "bf16_native", lambda device: False)
    cls, run = {
        "distill": (DistillConfig, run_distill),
        "finetune": (FinetuneConfig, run_finetune),
        "pretrain": (PretrainConfig, run_pretrain),
    }[command]
    common = ["optim.steps=1", "optim.batch_size=8", "eval.limit=8", "loop.precision=bf16", f"output={tmp_path}"]
    cfg = load_config(cls, overrides=[*common, *TINY_RUNS[command]])
    before = copy.deepcopy(cfg)
    run(cfg)
    assert cfg == before and cfg.loop.precision == "bf16"
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["config"]
    assert saved["loop"]["precision"] == "fp32"  # the run folder says what ran
    if command == "distill":
        assert cfg.fast.teacher_precision == "bf16" and saved["fast"]["teacher_precision"] == "fp32"

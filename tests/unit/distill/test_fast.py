"""The distillation fast path changes speed, never the result: cache, fused views, channels-last."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmt_ard.data import build_dataset
from mmt_ard.data.fingerprint import data_fingerprint
from mmt_ard.distill import DistillationTask, InnerAttackConfig, LossConfig, StrategyConfig
from mmt_ard.distill.fast import FastPathConfig, views_are_independent
from mmt_ard.distill.logit_cache import CleanLogitCache
from mmt_ard.distill.lora import LoraConfig, apply_lora
from mmt_ard.distill.run import run_distill
from tests.conftest import tiny_classifier
from tests.helpers import student_weights, tiny_cfg


def make_task(student_arch="mmt-vit-s", cache=None, attack_steps=2, **fast):
    student = tiny_classifier(student_arch, seed=1)
    student.clip.model.requires_grad_(False)
    student.clip.visual.requires_grad_(True)
    attack = InnerAttackConfig(eps=4 / 255, steps=attack_steps, step_size=2 / 255)
    loss = LossConfig(strategy=StrategyConfig(name="confidence"), temperature=2.0)
    fast_cfg = FastPathConfig(cache_clean_logits=cache is not None, **fast)
    return DistillationTask(
        student,
        tiny_classifier("mmt-vit-t", seed=2),
        tiny_classifier("mmt-vit-s", seed=3),
        attack,
        loss,
        seed=7,
        fast=fast_cfg,
        clean_cache=cache,
    )


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 4, (n,), generator=g)


def loss_and_grads(task, b, step=3):
    task.train()
    terms = task.training_step(b, step)
    params = [p for _, p in task.named_trainable_parameters()]
    grads = torch.autograd.grad(terms["loss"], params)
    return terms["loss"].detach(), grads


def relative_difference(a, b) -> float:
    """||a - b|| / ||b|| over all tensors of two gradient lists."""
    flat_a, flat_b = torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b])
    return float((flat_a - flat_b).norm() / flat_b.norm())


def test_fused_student_views_give_the_loss_and_gradients_of_separate_ones():
    fused, separate = make_task(), make_task(fuse_student_views=False)
    calls = []
    fused.student.register_forward_hook(lambda m, a, out: calls.append(m.training and a[0].shape[0]))
    b = batch()
    l1, g1 = loss_and_grads(fused, b)
    l2, g2 = loss_and_grads(separate, b)
    assert [c for c in calls if c] == [12]  # one train-mode forward over both views
    assert torch.allclose(l1, l2, rtol=1e-5, atol=1e-7)  # a swapped view order would change the loss
    assert relative_difference(g1, g2) < 1e-4  # rounding only (batch size changes the matmul blocking)


def test_views_are_fused_only_where_a_batch_cannot_mix_them():
    vit, rn = tiny_classifier("mmt-vit-s"), tiny_classifier("mmt-rn-s")
    assert views_are_independent(vit.train())
    assert not views_are_independent(rn.train())  # BatchNorm batch statistics would mix x and x'
    assert views_are_independent(rn.eval())
    lora = tiny_classifier("mmt-vit-s")
    apply_lora(lora.clip, LoraConfig(enabled=True, rank=2, dropout=0.1))
    assert not views_are_independent(lora.train())  # one pass draws other dropout masks than two
    task = make_task("mmt-rn-s")
    calls = []
    task.student.register_forward_hook(lambda m, a, out: calls.append(m.training and a[0].shape[0]))
    loss_and_grads(task, batch())
    assert [c for c in calls if c] == [6, 6]


def open_cache(tmp_path, teacher, fingerprint="data-v1", n=20, precision="fp32"):
    return CleanLogitCache.open(tmp_path, teacher, fingerprint, n, precision)


def test_cached_clean_logits_are_the_teachers_and_skip_its_forward(tmp_path):
    """Bit-identical to the teacher on the same batch, on every CPU kind.

    CPU kernels are chosen by shape (and CPU kind): the logits of 4 images computed as a batch of 4
    may differ in the last bits from the same images inside a batch of 8 (they do on AVX512/AMX
    CPUs). A batch with any miss therefore runs the teacher on the whole batch (a fixed shape, the
    computation of a run without the cache), and each exact comparison is against the same batch.
    """
    plain = make_task()
    task = make_task(cache=open_cache(tmp_path, tiny_classifier("mmt-vit-t", seed=2)))
    seen = []
    task.teacher_clean.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[0]))
    x, y = batch(8)
    idx = torch.tensor([3, 1, 4, 10, 5, 9, 2, 6])
    with torch.no_grad():
        first, whole = plain.teacher_clean(x[:4]), plain.teacher_clean(x)
    assert torch.equal(task.clean_teacher_logits(x[:4], idx[:4]), first)  # cold: computed
    task.clean_cache.flush()
    mixed = task.clean_teacher_logits(x, idx)  # 4 hits, 4 misses
    assert seen == [4, 8]  # a miss runs the teacher on the whole batch (one shape: nothing recompiles)
    assert torch.equal(mixed, whole)  # the uncached computation exactly
    task.clean_cache.flush()
    stored = torch.cat([first, whole[4:]])  # rows 0-3 from the batch of 4, rows 4-7 stored from the batch of 8
    assert torch.allclose(stored, whole, rtol=1e-5, atol=1e-5)  # (which agree to rounding)
    perm = torch.tensor([7, 0, 5, 2, 6, 1, 4, 3])
    assert torch.equal(task.clean_teacher_logits(x[perm], idx[perm]), stored[perm])  # rows land at their samples
    assert seen == [4, 8] and task.clean_cache.last_hit_rate == 1.0
    # a new process (another run) reads what this one wrote; the step's loss is the uncached one to rounding
    reopened = make_task(cache=open_cache(tmp_path, tiny_classifier("mmt-vit-t", seed=2)))
    assert int(reopened.clean_cache.filled.sum()) == 8
    l_cached, _ = loss_and_grads(reopened, (x, y, idx))
    l_plain, _ = loss_and_grads(plain, (x, y))
    assert torch.allclose(l_cached, l_plain, rtol=1e-5, atol=1e-7)


def test_the_cache_key_changes_with_teacher_data_and_precision(tmp_path):
    teacher = tiny_classifier("mmt-vit-t", seed=2)
    base = open_cache(tmp_path, teacher)
    base.store(torch.tensor([0]), torch.ones(1, 4))
    base.flush()
    assert open_cache(tmp_path, teacher).filled[0] == 1  # same everything: reused
    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        next(changed.clip.visual.parameters()).view(-1)[0] += 1e-3
    assert open_cache(tmp_path, changed).filled[0] == 0
    other_head = copy.deepcopy(teacher)
    other_head.head[0, 0] += 1e-3
    assert open_cache(tmp_path, other_head).filled[0] == 0
    assert open_cache(tmp_path, teacher, fingerprint="data-v2").filled[0] == 0
    assert open_cache(tmp_path, teacher, precision="bf16").filled[0] == 0
    assert len(list(tmp_path.iterdir())) == 5


def test_a_torn_cache_file_is_started_afresh(tmp_path):
    teacher = tiny_classifier("mmt-vit-t", seed=2)
    cache = open_cache(tmp_path, teacher)
    cache.store(torch.tensor([1]), torch.ones(1, 4))
    cache.flush()
    (rows,) = [p for p in cache.directory.iterdir() if p.suffix == ".bin"]
    with open(rows, "r+b") as f:
        f.truncate(5)  # a file of another size (torn under an older version)
    assert int(open_cache(tmp_path, teacher).filled.sum()) == 0


def test_data_fingerprint_follows_content_files_and_transform(tmp_path):
    a = build_dataset("builtin:shapes:split=val,n=40")
    assert data_fingerprint(a) == data_fingerprint(build_dataset("builtin:shapes:split=val,n=40"))
    assert data_fingerprint(a) != data_fingerprint(build_dataset("builtin:shapes:split=val,n=41"))
    a.images_uint8 = a.images_uint8.clone()  # (generated splits are shared between data set objects)
    a.images_uint8[3, 0, 0, 0] ^= 1  # one pixel
    assert data_fingerprint(a) != data_fingerprint(build_dataset("builtin:shapes:split=val,n=40"))
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / cls / f"{i}.png")
    folder = build_dataset(f"folder:{tmp_path}")
    before = data_fingerprint(folder)
    assert before == data_fingerprint(build_dataset(f"folder:{tmp_path}"))
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "dog" / "1.png")  # edited in place
    assert data_fingerprint(build_dataset(f"folder:{tmp_path}")) != before
    resized = build_dataset(f"folder:{tmp_path}")
    before = data_fingerprint(resized)
    from mmt_ard.data.pipeline import Preprocess

    resized.set_preprocess(Preprocess(48))
    assert data_fingerprint(resized) != before


def train_rows(folder):
    import json

    return [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines() if '"train"' in r]


def test_distill_weights_are_the_same_with_the_cache_off_cold_and_warm(tmp_path):
    off = student_weights_of(tmp_path / "off", "fast.cache_clean_logits=false")
    cold = student_weights_of(tmp_path / "cold")
    warm = student_weights_of(tmp_path / "warm")
    for w in (cold, warm):
        assert all(torch.equal(off[k], w[k]) for k in off)
    assert all(r["clean_cache_hits"] == 0.0 for r in train_rows(tmp_path / "cold"))  # 480 images, 96 seen
    assert all(r["clean_cache_hits"] == 1.0 for r in train_rows(tmp_path / "warm"))  # the cold run's rows
    assert "clean_cache_hits" not in train_rows(tmp_path / "off")[0]


def student_weights_of(folder, *extra):
    run_distill(tiny_cfg(folder, *extra))
    return student_weights(folder)


def test_a_resnet_student_trains_channels_last_with_the_same_result(tmp_path):
    # no attack steps: PGD's sign() would turn rounding differences into whole pixel steps
    task = make_task("mmt-rn-s", attack_steps=0)
    conv = next(m for m in task.student.clip.visual.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = make_task("mmt-rn-s", attack_steps=0, channels_last=False)
    assert not conv.weight.is_contiguous()
    b = batch()
    l1, g1 = loss_and_grads(task, b)
    l2, g2 = loss_and_grads(plain, b)
    assert torch.allclose(l1, l2, rtol=1e-5)
    assert relative_difference(g1, g2) < 1e-4  # rounding only
    vit = make_task("mmt-vit-s")  # a ViT's one patch convolution stays as it is
    assert next(vit.student.clip.visual.parameters()).is_contiguous()


class HostReads(TorchDispatchMode):
    """Counts reads of a tensor's value by the host (``.item()``, ``float()``, ``bool()``: syncs on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_steps_between_logs_never_read_device_values(tmp_path):
    from mmt_ard.data.pipeline import StepBatches
    from mmt_ard.distill.run import build_task
    from mmt_ard.models import TextHeadCache
    from mmt_ard.training.loop import train
    from mmt_ard.training.run import RunDir

    cfg = tiny_cfg(tmp_path / "r", "optim.steps=4", "loop.log_every=4", "attack.steps=2")
    ds = build_dataset(cfg.data)
    task = build_task(cfg, ds, torch.device("cpu"), TextHeadCache(None))
    inner = StepBatches(ds, cfg.optim.batch_size, 0, torch.device("cpu"), with_index=True)
    reads_at_step = []
    mode = HostReads()

    def batches(step):
        reads_at_step.append(mode.count)
        return inner(step)

    run = RunDir(cfg.output, cfg)
    with mode:
        train(task, batches, cfg.optim, cfg.loop, run)
    run.close()
    assert reads_at_step[1] == reads_at_step[3]  # steps 1-2 (cache misses, clipping, AdamW) read nothing
    assert mode.count > reads_at_step[3]  # the log at step 4 does (the counter is not blind)
    assert np.isfinite(train_rows(tmp_path / "r")[-1]["loss"])


def test_compile_option_compiles_every_tower_and_keeps_the_loss():
    # no attack steps: sign() would turn rounding differences of the traced graph into pixel steps
    task = make_task(attack_steps=0, compile=True, compile_backend="eager")  # "eager": dynamo traces, no codegen
    towers = [m.clip.visual for m in (task.student, task.teacher_clean.module, task.teacher_adv.module)]
    assert all(t._compiled_call_impl is not None for t in towers)
    assert not any("_orig_mod" in k for k in task.model_state())  # checkpoints keep their keys
    plain = make_task(attack_steps=0)
    l1, _ = loss_and_grads(task, batch())
    l2, _ = loss_and_grads(plain, batch())
    assert torch.allclose(l1, l2, rtol=1e-5)

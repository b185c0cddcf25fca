"""The distillation task: gradients reach only the student (or its adapters); teachers never change."""

import copy

import pytest
import torch

from mmt_ard.distill import DistillationTask, InnerAttackConfig, LoraConfig, LossConfig, StrategyConfig, apply_lora
from mmt_ard.distill.lora import merged_copy
from tests.conftest import tiny_classifier


def make_task(
    student_arch="mmt-vit-s", teacher_arch="mmt-rn-s", lora=False, strategy="confidence", objective="embedding-l2"
):
    student = tiny_classifier(student_arch, seed=1)
    for m in student.modules():  # open_clip zero-inits each residual branch's last BN: make it act, as when trained
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    student.clip.model.requires_grad_(False)
    if lora:
        apply_lora(student.clip, LoraConfig(enabled=True, rank=4, alpha=4, dropout=0.0))
    else:
        student.clip.visual.requires_grad_(True)
    attack = InnerAttackConfig(objective=objective, eps=4 / 255, steps=2, step_size=2 / 255)
    loss = LossConfig(strategy=StrategyConfig(name=strategy))
    # ResNet teachers have BatchNorm: the strictest check that they stay frozen
    return DistillationTask(student, tiny_classifier(teacher_arch, 2), tiny_classifier(teacher_arch, 3), attack, loss)


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 4, (8,), generator=g)


@pytest.mark.parametrize("objective", ["embedding-l2", "kl-clean-teacher", "ce"])
def test_gradients_reach_only_the_student_and_teachers_stay_frozen(objective):
    task = make_task(objective=objective)
    teachers_before = copy.deepcopy([task.teacher_clean.state_dict(), task.teacher_adv.state_dict()])
    task.train()
    assert task.student.training
    assert not task.teacher_clean.training and not task.teacher_adv.training
    assert not any(m.training for m in task.teacher_adv.modules())
    opt = torch.optim.SGD([p for _, p in task.named_trainable_parameters()], lr=0.1)
    for step in range(2):
        terms = task.training_step(batch(), step)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    for teacher in (task.teacher_clean, task.teacher_adv):
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for before, teacher in zip(teachers_before, (task.teacher_clean, task.teacher_adv)):
        for k, v in teacher.state_dict().items():
            assert torch.equal(before[k], v), f"teacher tensor {k} changed"  # BatchNorm stats included
    grads = [p.grad for _, p in task.named_trainable_parameters()]
    assert grads and all(g is not None for g in grads)
    assert all(p.grad is None for n, p in task.student.clip.model.named_parameters() if not n.startswith("visual."))
    for key in ("loss", "loss_kd", "kl_clean", "kl_adv", "loss_cm", "w_adv", "w_clean", "conf_adv", "conf_org"):
        assert key in terms and torch.isfinite(terms[key])


@pytest.mark.parametrize("arch", ["mmt-vit-s", "mmt-rn-s"])
def test_lora_trains_only_adapters_and_merges_exactly(arch):
    task = make_task(student_arch=arch, lora=True)
    names = [n for n, _ in task.named_trainable_parameters()]
    assert names and all("lora_" in n for n in names)
    task.train()
    task.training_step(batch(), 0)["loss"].backward()
    assert all(p.grad is None for n, p in task.student.named_parameters() if "lora_" not in n)
    with torch.no_grad():  # make the adapters non-zero, then the merged copy must agree exactly
        for n, p in task.named_trainable_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    task.eval()
    x = batch()[0]
    merged = merged_copy(task.student.clip).eval()
    with torch.no_grad():
        lora_out, merged_out = task.student.clip.encode_image(x), merged.encode_image(x)
        with task.student.clip.model.visual.disable_adapter():
            base = task.student.clip.encode_image(x)
    assert torch.allclose(lora_out, merged_out, atol=1e-5)
    assert not torch.allclose(lora_out, base, atol=1e-3)  # the adapters do act on the output


def test_teachers_may_have_another_embedding_size():
    task = make_task(student_arch="mmt-vit-s", teacher_arch="mmt-vit-t")
    assert task.student.clip.embed_dim != task.teacher_adv.module.clip.embed_dim
    assert torch.isfinite(task.training_step(batch(), 0)["loss"])


@pytest.mark.parametrize("lora", [False, True])
def test_embedding_anchor_ignores_train_mode(lora):
    """The inner attack's anchor f_S(x) is taken in eval mode: no batch statistics, no dropout,
    no BatchNorm update, and the objective is exactly 0 at delta = 0."""
    from mmt_ard.attacks import OBJECTIVES
    from mmt_ard.models.frozen import eval_mode

    task = make_task(student_arch="mmt-rn-s", lora=lora)
    if lora:
        for m in task.student.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.5
    task.train()
    x = batch()[0]
    buffers = {k: v.clone() for k, v in task.student.named_buffers()}
    fn = OBJECTIVES.get("embedding-l2")(task.student, x)
    assert task.student.training
    assert all(torch.equal(v, buffers[k]) for k, v in task.student.named_buffers())
    with torch.no_grad(), eval_mode(task.student):
        assert fn(x).abs().max() < 1e-10

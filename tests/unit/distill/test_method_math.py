"""The method's formulas, hand-computed on recorded inputs: each test names the mutation it catches."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmt_ard.attacks import OBJECTIVES, PGDConfig, pgd
from mmt_ard.data.batches import step_generator
from mmt_ard.distill import DistillationTask, InnerAttackConfig, LossConfig, StrategyConfig
from mmt_ard.distill.fast import FastPathConfig
from mmt_ard.distill.run import DistillConfig
from mmt_ard.evaluation import EvalConfig
from mmt_ard.training.finetune import FareOptions, FinetuneTask
from tests.conftest import tiny_classifier, tiny_clip


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) per row, written out from the definition."""
    p = p_logits.double().softmax(-1)
    return (p * (p.log() - q_logits.double().log_softmax(-1))).sum(-1)


class RecordingTeacher(nn.Module):
    """A fixed linear 'teacher' over pixels that records every input it sees."""

    def __init__(self, seed: int, num_classes: int = 4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(3 * 32 * 32, num_classes, generator=g))
        self.num_classes = num_classes
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return 0.2 * (x.flatten(1) - 0.5) @ self.w  # (B, C), confident enough to vary DIW weights


def recorded_student_calls(student: nn.Module) -> list[tuple[bool, torch.Tensor, torch.Tensor]]:
    calls: list[tuple[bool, torch.Tensor, torch.Tensor]] = []
    student.register_forward_hook(lambda m, args, out: calls.append((m.training, args[0].detach().clone(), out)))
    return calls


def distill_setup(objective: str, gamma: float = 0.7, temperature: float = 2.0, fuse: bool = True):
    student = tiny_classifier("mmt-vit-s", seed=1)
    student.clip.model.requires_grad_(False)
    student.clip.visual.requires_grad_(True)
    attack = InnerAttackConfig(objective=objective, eps=8 / 255, steps=2, step_size=4 / 255)
    loss = LossConfig(gamma=gamma, temperature=temperature, strategy=StrategyConfig(name="confidence"))
    t_clean, t_adv = RecordingTeacher(10), RecordingTeacher(11)
    task = DistillationTask(student, t_clean, t_adv, attack, loss, seed=5, fast=FastPathConfig(fuse_student_views=fuse))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 3, 32, 32, generator=g), torch.randint(0, 4, (6,), generator=g)
    return task, t_clean, t_adv, x, y


@pytest.mark.parametrize("objective,fuse", [("embedding-l2", True), ("kl-clean-teacher", True), ("ce", False)])
def test_distillation_step_feeds_each_teacher_its_view_and_matches_the_hand_computed_loss(objective, fuse):
    task, t_clean, t_adv, x, y = distill_setup(objective, fuse=fuse)
    calls = recorded_student_calls(task.student)
    task.train()
    terms = task.training_step((x, y), step=3)
    # clean teacher on x, adversarial teacher on x' (catches swapped inputs or teachers)
    assert len(t_clean.inputs) == 1 and torch.equal(t_clean.inputs[0], x)
    assert len(t_adv.inputs) == 1
    x_adv = t_adv.inputs[0]
    assert not torch.equal(x_adv, x) and (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    train_calls = [c for c in calls if c[0]]
    if fuse:  # one train-mode forward over both views (a ViT has no BatchNorm or dropout: exact)
        ((_, xs, out),) = train_calls
        assert torch.equal(xs, torch.cat([x, x_adv]))  # clean first, then adversarial
        s_clean, s_adv = out[: len(x)], out[len(x) :]
    else:  # the two train-mode forwards
        (_, xs_clean, s_clean), (_, xs_adv, s_adv) = train_calls
        assert torch.equal(xs_clean, x) and torch.equal(xs_adv, x_adv)  # the student's views match the teachers'
    z_org = 0.2 * (x.flatten(1) - 0.5) @ t_clean.w  # the teachers' logits, recomputed by hand
    z_adv = 0.2 * (x_adv.flatten(1) - 0.5) @ t_adv.w
    t = 2.0
    kl_clean = kl(z_org / t, s_clean.detach() / t) * t * t  # t^2 factor (catches a missing factor)
    kl_adv = kl(z_adv / t, s_adv.detach() / t) * t * t
    rho = z_adv.softmax(-1).max(-1).values / (z_org.softmax(-1).max(-1).values + 1e-5)  # eq. (3)-(4)
    w_adv = torch.sigmoid(5.0 * (rho - 1.0))  # eq. (5), slope 5, offset 1
    assert 0.05 < float(w_adv.std())  # the weights vary per sample, so swapping them would show
    cm = kl(s_clean.detach(), s_adv.detach()).mean()
    expected = (0.5 * (1 - w_adv) * kl_clean + 3.0 * w_adv * kl_adv).mean() + 0.7 * cm
    assert float(terms["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(terms["loss_cm"]) == pytest.approx(float(cm), rel=1e-5)
    # the consistency target softmax(z_S(x)) is detached: loss_cm sends no gradient to the clean view
    if fuse:
        (g,) = torch.autograd.grad(terms["loss_cm"], [out])
        g_clean, g_adv = g[: len(x)], g[len(x) :]
        assert g_clean.abs().sum() == 0 and g_adv.abs().sum() > 0
    else:
        g_clean, g_adv = torch.autograd.grad(terms["loss_cm"], [s_clean, s_adv], allow_unused=True)
        assert g_clean is None and g_adv is not None and g_adv.abs().sum() > 0


def test_kl_clean_teacher_attack_targets_the_clean_teachers_distribution_on_x():
    task, t_clean, t_adv, x, y = distill_setup("kl-clean-teacher")
    student = task.student
    with torch.no_grad():
        target = (0.2 * (x.flatten(1) - 0.5) @ t_clean.w).softmax(-1)
    objective = OBJECTIVES.get("kl")(student, x, target=target)
    expected = pgd(student, x, objective, task.attack_cfg, generator=step_generator(5, 3))
    task.train()
    task.training_step((x, y), step=3)
    assert torch.equal(t_adv.inputs[0], expected)  # any other target (adversarial teacher, x') differs


def test_cross_modal_term_switches_off_with_gamma_zero():
    task, *_, x, y = distill_setup("embedding-l2", gamma=0.0)
    task.train()
    terms = task.training_step((x, y), 0)
    assert float(terms["loss"]) == pytest.approx(float(terms["loss_kd"]), rel=1e-7) and float(terms["loss_cm"]) > 0


# --- fine-tuning methods (METHOD.md section 6) ------------------------------------------------


def finetune_setup(method: str, fare: FareOptions | None = None):
    clip = tiny_clip("mmt-vit-s", seed=4)
    head = tiny_classifier("mmt-vit-s", seed=4).head
    task = FinetuneTask(clip, head, method, PGDConfig(eps=8 / 255, steps=2, step_size=4 / 255), seed=1, fare=fare)
    with torch.no_grad():  # move the student away from f0, so f(x) and f0(x) differ
        for p in task.student.clip.visual.parameters():
            p.add_(0.05 * torch.randn_like(p))
    seen: list[torch.Tensor] = []
    attack = task.attack
    task.attack = lambda *a: seen.append(attack(*a)) or seen[-1]  # type: ignore[method-assign]
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(6, 3, 32, 32, generator=g), torch.randint(0, 4, (6,), generator=g)
    task.eval()  # no dropout in these tiny ViTs either way; eval keeps the comparison exact
    return task, seen, x, y


def test_tecoa_is_cross_entropy_on_the_adversarial_view():
    task, seen, x, y = finetune_setup("tecoa")
    loss = task.training_step((x, y), 0)["loss"]
    (x_adv,) = seen
    assert not torch.equal(x_adv, x)
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(F.cross_entropy(task.student(x_adv), y)), rel=1e-6)
        assert abs(float(loss) - float(F.cross_entropy(task.student(x), y))) > 1e-4  # not the clean view


@pytest.mark.parametrize("normalize", [True, False])
def test_fare_is_anchored_on_the_original_models_clean_embedding(normalize):
    task, seen, x, y = finetune_setup("fare", FareOptions(normalize_embeddings=normalize))
    loss = task.training_step((x, y), 0)["loss"]
    (x_adv,) = seen
    f, f0 = task.student.clip.encode_image, task.original.module.clip.encode_image
    with torch.no_grad():
        expected = (f(x_adv, normalize=normalize) - f0(x, normalize=normalize)).pow(2).sum(-1).mean()
        wrong_anchor = (f(x_adv, normalize=normalize) - f(x, normalize=normalize)).pow(2).sum(-1).mean()
        other_norm = (f(x_adv, normalize=not normalize) - f0(x, normalize=not normalize)).pow(2).sum(-1).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(loss) - float(wrong_anchor)) > 1e-4 and abs(float(loss) - float(other_norm)) > 1e-4


def test_pmg_aft_has_both_kl_terms_in_their_directions():
    task, seen, x, y = finetune_setup("pmg-aft")
    terms = task.training_step((x, y), 0)
    (x_adv,) = seen
    with torch.no_grad():
        z_adv, z_clean, z0_adv = task.student(x_adv), task.student(x), task.original(x_adv)
    ce = F.cross_entropy(z_adv, y)
    kl_clean, kl_orig = kl(z_clean, z_adv).mean(), kl(z0_adv, z_adv).mean()  # KL(p(x)||p(x')), KL(p0(x')||p(x'))
    assert float(terms["kl_clean"]) == pytest.approx(float(kl_clean), rel=1e-5)
    assert float(terms["kl_original"]) == pytest.approx(float(kl_orig), rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(float(ce + kl_clean + kl_orig), rel=1e-5)
    assert abs(float(kl(z_adv, z_clean).mean()) - float(kl_clean)) > 1e-6  # reversed KL would differ
    assert abs(float(kl(z_adv, z0_adv).mean()) - float(kl_orig)) > 1e-6


# --- METHOD.md's defaults, pinned in one place --------------------------------------------------


def test_method_defaults():
    cfg = DistillConfig()
    a, loss, strategy = cfg.attack, cfg.loss, cfg.loss.strategy
    assert (a.norm, a.eps, a.steps, a.step_size) == ("linf", 2 / 255, 10, 1 / 255)
    assert (a.random_start, a.momentum, a.objective, a.normalize_embeddings) == (True, 0.0, "embedding-l2", True)
    assert (loss.lambda_adv, loss.lambda_org, loss.temperature) == (3.0, 0.5, 1.0)
    assert strategy.name == "confidence"
    assert (strategy.confidence.slope, strategy.confidence.offset) == (5.0, 1.0)
    assert strategy.static.a == 0.5 and (strategy.adaptive_norm.eta, strategy.adaptive_norm.beta) == (0.025, 1.0)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout) == (16, 16.0, 0.1)
    ev = EvalConfig()
    assert ev.eps == [1 / 255, 2 / 255, 3 / 255, 4 / 255] and (ev.pgd.steps, ev.norm, ev.pgd.random_start) == (
        10,
        "linf",
        True,
    )
    assert all(math.isclose(ev.pgd_config(e).alpha, e / 4) for e in ev.eps)
    assert (ev.attack, ev.pgd.restarts) == ("pgd", 1)  # METHOD.md 4: PGD-10 is the default robust accuracy
    assert cfg.optim.warmup == 0.07


def test_released_code_in_the_task_weights_by_the_batch_labels_cosines():
    from mmt_ard.distill.strategies import build_strategy

    task, t_clean, t_adv, x, y = distill_setup("ce", fuse=False)
    task.strategy = build_strategy(StrategyConfig(name="released-code"))
    calls = recorded_student_calls(task.student)
    task.train()
    terms = task.training_step((x, y), step=3)
    (_, _, s_clean), (_, _, s_adv) = [c for c in calls if c[0]]
    x_adv = t_adv.inputs[0]
    z_org = 0.2 * (x.flatten(1) - 0.5) @ t_clean.w
    z_adv = 0.2 * (x_adv.flatten(1) - 0.5) @ t_adv.w
    rows = torch.arange(len(y))
    c_adv, c_org = z_adv[rows, y] / 100, z_org[rows, y] / 100  # cosine = logit / scale, at the true class
    t = 2.0
    kl_clean = kl(z_org / t, s_clean.detach() / t) * t * t
    kl_adv = kl(z_adv / t, s_adv.detach() / t) * t * t
    cm = kl(s_clean.detach(), s_adv.detach()).mean()
    expected = (50 * c_adv * kl_adv + 5 * c_org * kl_clean).mean() / 4 + 0.7 * cm  # C = 4 classes
    assert float(terms["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)

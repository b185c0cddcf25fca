"""Each weighting strategy's loss on fixed logits equals a hand computation (METHOD.md 3.1)."""

import dataclasses
import math
import re

import pytest
import torch

from mmt_ard.config import load_config, to_dict
from mmt_ard.distill import STRATEGIES, DistillLogits, LossConfig, StrategyConfig, build_strategy, kd_kl
from mmt_ard.distill.strategies import (
    OPTION_SECTIONS,
    AdaptiveNorm,
    Confidence,
    Static,
    WeightingStrategy,
    check_strategy_options,
)
from mmt_ard.errors import ConfigError

# two samples, three classes
S_CLEAN = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]
S_ADV = [[0.0, 0.0, 0.0], [1.0, 0.5, 0.0]]
T_CLEAN = [[2.0, 0.0, 0.0], [0.0, 3.0, 1.0]]
T_ADV = [[0.5, 0.0, 0.0], [0.0, 1.0, 1.0]]


def softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def kl(p_logits, q_logits, t=1.0):
    """KL(softmax(p/t) || softmax(q/t)) * t^2, written out."""
    p, q = softmax(p_logits, t), softmax(q_logits, t)
    return t * t * sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def logits(**kw) -> DistillLogits:
    T = torch.tensor
    return DistillLogits(T(S_CLEAN), T(S_ADV), T(T_CLEAN), T(T_ADV), **kw)


def expected(w_adv, w_clean, la=3.0, lo=0.5, t=1.0):
    rows = [
        lo * w_clean[i] * kl(T_CLEAN[i], S_CLEAN[i], t) + la * w_adv[i] * kl(T_ADV[i], S_ADV[i], t) for i in range(2)
    ]
    return sum(rows) / 2


def test_kd_kl_direction_reduction_and_temperature():
    got = kd_kl(torch.tensor(T_CLEAN), torch.tensor(S_CLEAN), 2.0)
    assert got.shape == (2,)
    for i in range(2):
        assert got[i].item() == pytest.approx(kl(T_CLEAN[i], S_CLEAN[i], 2.0), rel=1e-5)
        assert got[i].item() != pytest.approx(kl(S_CLEAN[i], T_CLEAN[i], 2.0), rel=1e-3)  # teacher first


def test_confidence_weights_follow_eqs_3_to_6():
    cfg = StrategyConfig(name="confidence", confidence=Confidence.Options(slope=5.0, offset=1.0))
    out = build_strategy(cfg)(logits())
    w_adv = []
    for i in range(2):
        rho = max(softmax(T_ADV[i])) / (max(softmax(T_CLEAN[i])) + 1e-5)
        w_adv.append(1 / (1 + math.exp(-5.0 * (rho - 1.0))))
    w_clean = [1 - w for w in w_adv]
    assert out["loss_kd"].item() == pytest.approx(expected(w_adv, w_clean), rel=1e-5)
    assert out["w_adv"].item() == pytest.approx(sum(w_adv) / 2, rel=1e-5)
    assert out["w_clean"].item() == pytest.approx(sum(w_clean) / 2, rel=1e-5)


def test_confidence_equal_teachers_give_equal_weights():
    z = logits()
    z.teacher_adv = z.teacher_clean.clone()
    out = build_strategy(StrategyConfig(name="confidence"))(z)
    assert out["w_adv"].item() == pytest.approx(0.5, abs=1e-4)


def test_adv_only_and_static():
    out = build_strategy(StrategyConfig(name="adv-only"))(logits())
    assert out["loss_kd"].item() == pytest.approx(expected([1, 1], [0, 0]), rel=1e-5)
    cfg = StrategyConfig(name="static", static=Static.Options(a=0.25))
    out = build_strategy(cfg)(logits(lambda_adv=2.0, lambda_org=1.0, temperature=3.0))
    assert out["loss_kd"].item() == pytest.approx(expected([0.25] * 2, [0.75] * 2, la=2.0, lo=1.0, t=3.0), rel=1e-5)


def test_average_is_one_kl_on_the_mixed_target():
    out = build_strategy(StrategyConfig(name="average"))(logits())
    total = 0.0
    for i in range(2):
        p = [(a + b) / 2 for a, b in zip(softmax(T_ADV[i]), softmax(T_CLEAN[i]))]
        q = softmax(S_ADV[i])
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    assert out["loss_kd"].item() == pytest.approx(3.0 * total / 2, rel=1e-5)


def test_adaptive_norm_moves_weight_to_the_slower_path_and_keeps_state():
    cfg = StrategyConfig(name="adaptive-norm", adaptive_norm=AdaptiveNorm.Options(eta=0.5, beta=1.0))
    strat = build_strategy(cfg)
    first = strat(logits())
    assert first["w_clean"].item() == pytest.approx(0.5)  # r_clean = r_adv = 1 on step 1
    z = logits()
    z.student_adv = z.teacher_adv.clone()  # the adversarial path's loss fell to 0
    second = strat(z)
    # r_adv = 0, r_clean = 1: target w_clean = 1, w_clean = 0.5 - 0.5 * (0.5 - 1) = 0.75
    assert second["w_clean"].item() == pytest.approx(0.75)
    restored = build_strategy(cfg)
    restored.load_state_dict(strat.state_dict())
    assert restored.state_dict() == strat.state_dict()
    z.lr_scale = 0.0  # eta decays with the learning rate: no move at lr 0
    assert restored(z)["w_clean"].item() == pytest.approx(0.75)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_gives_a_finite_differentiable_loss(name):
    z = logits(labels=torch.tensor([0, 1]))
    z.student_clean.requires_grad_(True)
    z.student_adv.requires_grad_(True)
    out = build_strategy(StrategyConfig(name=name))(z)
    out["loss_kd"].backward()
    assert torch.isfinite(out["loss_kd"]) and z.student_adv.grad is not None


def test_released_code_weights_each_teacher_by_its_true_class_cosine_over_batch_and_classes():
    y = [1, 2]  # not the teachers' argmax for sample 0: using the predicted class would differ
    scale = 4.0
    z = logits(labels=torch.tensor(y), teacher_scale=scale, lambda_adv=7.0, lambda_org=9.0)  # lambdas play no part
    out = build_strategy(StrategyConfig(name="released-code"))(z)
    total = 0.0
    for i in range(2):
        c_adv, c_org = T_ADV[i][y[i]] / scale, T_CLEAN[i][y[i]] / scale  # each teacher's own cosine
        p_adv, q_adv = softmax(T_ADV[i]), softmax(S_ADV[i])
        p_org, q_org = softmax(T_CLEAN[i]), softmax(S_CLEAN[i])
        for c in range(3):  # element-wise KL terms, averaged over batch and classes
            total += 50 * c_adv * p_adv[c] * (math.log(p_adv[c]) - math.log(q_adv[c]))
            total += 5 * c_org * p_org[c] * (math.log(p_org[c]) - math.log(q_org[c]))
    assert out["loss_kd"].item() == pytest.approx(total / (2 * 3), rel=1e-6)
    with pytest.raises(ConfigError, match="true class"):
        build_strategy(StrategyConfig(name="released-code"))(logits())


def test_the_spread_of_the_per_sample_weights_is_logged():
    """w_adv_q10 / w_adv_q90 are the batch's 10th / 90th percentiles of the DIW weights
    (mutation caught: quantiles of w_clean, or of the mean)."""
    torch.manual_seed(0)
    b, c = 50, 6
    z = DistillLogits(*(torch.randn(b, c) * 3 for _ in range(4)), lambda_adv=3.0, lambda_org=0.5, temperature=1.0)
    out = build_strategy(StrategyConfig(name="confidence"))(z)
    conf_adv = torch.softmax(z.teacher_adv, -1).max(-1).values
    conf_org = torch.softmax(z.teacher_clean, -1).max(-1).values
    w = torch.sigmoid(5.0 * (conf_adv / (conf_org + 1e-5) - 1.0))
    assert out["w_adv_q10"].item() == pytest.approx(torch.quantile(w, 0.1).item(), rel=1e-5)
    assert out["w_adv_q90"].item() == pytest.approx(torch.quantile(w, 0.9).item(), rel=1e-5)
    assert out["w_adv_q10"] < out["w_adv"] < out["w_adv_q90"]


# ---- every registered strategy, by construction: a new one is tested the moment it is declared ----


def _other_value(options):
    """``options`` with its first field moved off its default (still a valid value)."""
    first = dataclasses.fields(options)[0]
    return dataclasses.replace(options, **{first.name: getattr(options, first.name) + 0.125})


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_builds_from_the_config_and_owns_its_options_section(name):
    cls = STRATEGIES.get(name)
    assert issubclass(cls, WeightingStrategy) and cls.name == name
    cfg = load_config(LossConfig, overrides=[f"strategy.name={name}"])  # the YAML/CLI key
    strategy = build_strategy(cfg.strategy)
    assert type(strategy) is cls
    if cls.Options is None:  # no options: no section in the config, and none accepted
        assert name not in OPTION_SECTIONS and strategy.options is None
        with pytest.raises(ConfigError, match="has no options"):
            cls(object())
        return
    section = cls.section()
    assert OPTION_SECTIONS[name] == section == name.replace("-", "_")
    assert to_dict(StrategyConfig())[section] == to_dict(cls.Options())  # the section holds its defaults
    assert strategy.options == cls.Options()
    # an option set through its key reaches the strategy
    changed = _other_value(cls.Options())
    key, value = dataclasses.fields(changed)[0].name, getattr(changed, dataclasses.fields(changed)[0].name)
    loaded = load_config(LossConfig, overrides=[f"strategy.name={name}", f"strategy.{section}.{key}={value}"])
    assert build_strategy(loaded.strategy).options == changed


@pytest.mark.parametrize("name", STRATEGIES.names())
@pytest.mark.parametrize("other", sorted(OPTION_SECTIONS))
def test_the_options_of_another_strategy_are_refused(name, other):
    if other == name:
        return
    section = OPTION_SECTIONS[other]
    cfg = StrategyConfig(name=name, **{section: _other_value(getattr(StrategyConfig(), section))})
    message = f"loss.strategy.{section} options are set but the strategy is {name!r}, which ignores them"
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_strategy_options(cfg)
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_strategy(cfg)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategys_weights_are_per_sample_detached_and_as_method_md_says(name):
    """(B,) weights; convex strategies' weights lie in [0, 1] and sum to 1 per sample (METHOD.md 3.1);
    the template's loss_kd is the strategy's own combination of those weights."""
    torch.manual_seed(0)
    b, c = 6, 5
    z = DistillLogits(*(torch.randn(b, c) * 2 for _ in range(4)), labels=torch.arange(b) % c)
    z.student_clean.requires_grad_(True)
    z.student_adv.requires_grad_(True)
    strategy = build_strategy(StrategyConfig(name=name))
    l_clean = kd_kl(z.teacher_clean, z.student_clean, z.temperature)
    l_adv = kd_kl(z.teacher_adv, z.student_adv, z.temperature)
    w_adv, w_clean = strategy.weights(z, l_clean, l_adv)
    assert w_adv.shape == w_clean.shape == (b,)
    if strategy.convex:
        assert torch.allclose(w_adv + w_clean, torch.ones(b)) and bool((w_adv >= 0).all() and (w_clean >= 0).all())
    out = build_strategy(StrategyConfig(name=name))(z)
    loss, _ = strategy.combine(z, l_clean, l_adv, w_adv.detach(), w_clean.detach())
    assert out["loss_kd"].item() == pytest.approx(loss.item(), rel=1e-6)
    assert out["w_adv"].item() == pytest.approx(w_adv.mean().item(), rel=1e-6)
    assert out["w_adv_q10"] <= out["w_adv"] <= out["w_adv_q90"]
    out["loss_kd"].backward()
    assert torch.isfinite(out["loss_kd"]) and z.student_adv.grad is not None
    restored = build_strategy(StrategyConfig(name=name))  # the checkpoint round trip
    restored.load_state_dict(strategy.state_dict())
    assert restored.state_dict() == strategy.state_dict()


def test_the_template_uses_the_strategys_weights_with_the_lambdas():
    """Mutation caught: a template that drops a lambda, or weights the wrong path."""
    z = logits(lambda_adv=2.0, lambda_org=0.25)
    out = build_strategy(StrategyConfig(name="static", static=Static.Options(a=0.2)))(z)
    assert out["loss_kd"].item() == pytest.approx(expected([0.2] * 2, [0.8] * 2, la=2.0, lo=0.25), rel=1e-6)


def test_a_bad_option_of_the_running_strategy_is_refused_when_the_config_is_checked():
    with pytest.raises(ConfigError, match=re.escape("strategy.static.a must be in [0, 1], got 1.5")):
        LossConfig(strategy=StrategyConfig(name="static", static=Static.Options(a=1.5))).validate()

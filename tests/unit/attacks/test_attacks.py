"""Every attack objective: stays in the eps-ball and [0, 1], raises its objective, restores modes."""

import pytest
import torch

from mmt_ard.attacks import OBJECTIVES, PGDConfig, pgd
from mmt_ard.attacks.objectives import NEEDS_RANDOM_START, check_random_start
from mmt_ard.attacks.pgd import random_start
from mmt_ard.errors import ConfigError
from tests.conftest import tiny_classifier


def _context(model, x):
    y = torch.arange(len(x)) % model.num_classes
    with torch.no_grad():
        target = torch.softmax(model(x), -1).roll(1, dims=0)
    return {"labels": y, "target": target}


@pytest.mark.parametrize("objective", OBJECTIVES.names())
@pytest.mark.parametrize("norm, eps", [("linf", 4 / 255), ("l2", 0.5)])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_attack_stays_in_ball_and_raises_objective(objective, norm, eps, momentum, images):
    model = tiny_classifier()
    x = images
    ctx = _context(model, x)
    fn = OBJECTIVES.get(objective)(model, x, **ctx)
    start = objective in NEEDS_RANDOM_START  # zero gradient at x: it would only move by float noise
    cfg = PGDConfig(norm=norm, eps=eps, steps=10, step_size=eps / 4, random_start=start, momentum=momentum)
    x_adv = pgd(model, x, fn, cfg, generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1)
    bound = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (bound <= eps + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        before, after = fn(x).sum(), fn(x_adv).sum()
    assert after > before


def test_random_start_is_seeded_and_in_ball(images):
    model = tiny_classifier()
    fn = OBJECTIVES.get("ce")(model, images, labels=torch.zeros(len(images), dtype=torch.long))
    cfg = PGDConfig(eps=8 / 255, steps=0, random_start=True)
    a = pgd(model, images, fn, cfg, generator=torch.Generator().manual_seed(3))
    b = pgd(model, images, fn, cfg, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, images)
    assert (a - images).abs().max() <= 8 / 255 + 1e-6


def test_attack_uses_eval_mode_and_restores_it(images):
    model = tiny_classifier("mmt-rn-s")
    model.train()
    seen = []
    fn0 = OBJECTIVES.get("ce")(model, images, labels=torch.zeros(len(images), dtype=torch.long))

    def fn(xa):
        seen.append(model.training)
        return fn0(xa)

    bn_before = [b.clone() for n, b in model.named_buffers() if "running_mean" in n]
    pgd(model, images, fn, PGDConfig(steps=2))
    bn_after = [b for n, b in model.named_buffers() if "running_mean" in n]
    assert seen == [False, False] and model.training
    assert all(torch.equal(a, b) for a, b in zip(bn_before, bn_after))


def test_attack_leaves_no_parameter_gradients(images):
    model = tiny_classifier()
    fn = OBJECTIVES.get("embedding-l2")(model, images)
    pgd(model, images, fn, PGDConfig(steps=2))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("bad", [{"eps": 0.0}, {"eps": 2.0}, {"steps": -1}, {"momentum": 1.0}])
def test_bad_attack_settings_are_rejected(bad, images):
    with pytest.raises(ConfigError):
        PGDConfig(**bad).validate()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_covers_both_signs_of_every_coordinate(norm):
    x = torch.zeros(400, 3, 4, 4)
    eps = 0.1
    d = random_start(x, norm, eps, torch.Generator().manual_seed(0))
    bound = d.flatten(1).abs().max(1).values if norm == "linf" else d.flatten(1).norm(dim=1)
    assert (bound <= eps + 1e-7).all()
    lo, hi = d.min(0).values, d.max(0).values  # per coordinate over the draws
    assert (lo < 0).all() and (hi > 0).all()  # a one-sided start (u * eps) fails here
    if norm == "linf":  # and reaches most of [-eps, eps] in every coordinate
        assert (lo < -0.8 * eps).all() and (hi > 0.8 * eps).all()


def test_l2_random_start_is_uniform_in_the_ball():
    dim = 48
    d = random_start(torch.zeros(4000, 3, 4, 4), "l2", 1.0, torch.Generator().manual_seed(1))
    r = d.flatten(1).norm(dim=1)
    # uniform in the volume: P(r <= s) = s^d, so the mean radius is d/(d+1) and the median 0.5^(1/d)
    assert float(r.mean()) == pytest.approx(dim / (dim + 1), abs=0.005)
    assert float(r.median()) == pytest.approx(0.5 ** (1 / dim), abs=0.005)  # U(0, eps) radius gives 0.5


def test_embedding_l2_without_random_start_is_refused():
    with pytest.raises(ConfigError, match="random_start=true"):
        check_random_start("embedding-l2", PGDConfig(random_start=False))
    check_random_start("embedding-l2", PGDConfig(random_start=True))
    check_random_start("ce", PGDConfig(random_start=False))  # CE has a gradient at x


@pytest.mark.parametrize(
    "command",
    [
        ["distill", "attack.random_start=false"],
        ["finetune", "--method", "fare", "attack.random_start=false"],
    ],
)
def test_cli_refuses_an_attack_that_cannot_move(command, tmp_path, capsys):
    from mmt_ard.cli.main import main

    code = main([command[0], "--output", str(tmp_path / "run"), *command[1:], "data=builtin:shapes:split=train,n=64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "random_start=true" in err[0]
    assert not (tmp_path / "run").exists()  # refused before anything was built or written


# ---- every registered objective against its formula written out: a new entry needs one here ----


def _hand_ce(model, x, ctx, xa):
    z = model.scale * model.clip.encode_image(xa) @ model.head.T
    p = torch.softmax(z.float(), -1)
    return -torch.log(p[torch.arange(len(xa)), ctx["labels"]])


def _hand_kl(model, x, ctx, xa):
    t = ctx["target"]
    q = torch.softmax(model(xa).float(), -1)
    return (t * (torch.log(t) - torch.log(q))).sum(-1)


def _hand_embedding_l2(model, x, ctx, xa, normalize=True):
    def f(v):
        raw = model.clip.model.encode_image(model.clip.normalize_pixels(v))
        return raw / raw.norm(dim=-1, keepdim=True) if normalize else raw

    return ((f(xa) - f(x).detach()) ** 2).sum(-1)


HAND = {"ce": _hand_ce, "kl": _hand_kl, "embedding-l2": _hand_embedding_l2}


def test_every_objective_has_its_formula_here():
    assert sorted(HAND) == OBJECTIVES.names(), "write the new objective's formula out in HAND"


@pytest.mark.parametrize("objective", OBJECTIVES.names())
def test_every_objective_equals_its_formula_and_ascends_along_its_gradient(objective, images):
    """Per sample (B,) values equal the formula written out; the gradient is the formula's, each
    sample's loss depends on its own image only, and a small step along the gradient raises the loss
    by about the first-order amount (mutations caught: a wrong sign, a detached input, a batch mean)."""
    model = tiny_classifier().eval()
    x = images
    ctx = _context(model, x)
    fn = OBJECTIVES.get(objective)(model, x, **ctx)
    xa = (x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    xa.requires_grad_(True)
    value = fn(xa)
    hand = HAND[objective](model, x, ctx, xa)
    assert value.shape == (len(x),)
    torch.testing.assert_close(value, hand, rtol=1e-4, atol=1e-6)
    (grad,) = torch.autograd.grad(value.sum(), xa)
    (hand_grad,) = torch.autograd.grad(hand.sum(), xa)
    torch.testing.assert_close(grad, hand_grad, rtol=1e-3, atol=1e-6)
    (first,) = torch.autograd.grad(fn(xa)[0], xa)
    assert first[1:].abs().max() == 0 and first[0].abs().max() > 0  # per sample
    with torch.no_grad():
        h = 1e-3
        unit = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        gain = fn(xa + h * unit) - fn(xa)
        slope = grad.flatten(1).norm(dim=1)
    assert (gain > 0).all()
    torch.testing.assert_close(gain / h, slope, rtol=0.2, atol=1e-3)


def test_embedding_l2_raw_embeddings_and_its_zero_gradient_at_the_clean_image(images):
    model = tiny_classifier().eval()
    xa = images.clone().requires_grad_(True)
    for normalize in (True, False):
        fn = OBJECTIVES.get("embedding-l2")(model, images, normalize=normalize)
        torch.testing.assert_close(fn(xa), _hand_embedding_l2(model, images, {}, xa, normalize), rtol=1e-4, atol=1e-6)
        (grad,) = torch.autograd.grad(fn(xa).sum(), xa)
        assert grad.abs().max() < 1e-5  # hence NEEDS_RANDOM_START
    assert "embedding-l2" in NEEDS_RANDOM_START

"""Every attack objective: stays in the eps-ball and [0, 1], raises its objective, restores modes."""

import pytest
import torch

from mmt_ard.attacks import OBJECTIVES, PGDConfig, pgd
from mmt_ard.errors import ConfigError

from .conftest import tiny_classifier


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
    cfg = PGDConfig(norm=norm, eps=eps, steps=10, step_size=eps / 4, random_start=False, momentum=momentum)
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


@pytest.mark.parametrize("bad", [dict(eps=0.0), dict(eps=2.0), dict(steps=-1), dict(momentum=1.0)])
def test_bad_attack_settings_are_rejected(bad, images):
    with pytest.raises(ConfigError):
        PGDConfig(**bad).validate()

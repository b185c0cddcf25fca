"""Evaluation: robust accuracy of a trained model falls with eps; the report's layout."""

import pytest
import torch

from mmt_ard.data import build_dataset, loader
from mmt_ard.evaluation import (
    EvalConfig,
    ModelResult,
    PGDSettings,
    accuracy_under_attack,
    eps_key,
    evaluate_model,
    results_markdown,
)
from mmt_ard.models import TextHeadCache, ZeroShotClassifier
from mmt_ard.training import batch_indices, labeled_batch
from tests.conftest import tiny_clip


@pytest.fixture(scope="module")
def trained():
    """A ResNet CLIP whose vision tower was trained (CE, 60 steps) on the shapes task."""
    torch.manual_seed(0)
    ds = build_dataset("builtin:shapes:split=train,n=1920")
    clip = tiny_clip("mmt-rn-s")
    head = TextHeadCache(None).head(clip, ds.classnames, ds.templates)
    clf = ZeroShotClassifier(clip, head)
    opt = torch.optim.Adam(clip.visual.parameters(), lr=2e-3)
    clf.train()
    for step in range(60):
        x, y = labeled_batch(ds, batch_indices(len(ds), 64, 0, step))
        loss = torch.nn.functional.cross_entropy(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clf.eval()


def test_robust_accuracy_does_not_rise_with_eps_and_attacks_bite(trained):
    cfg = EvalConfig(eps=[1 / 255, 2 / 255, 4 / 255, 8 / 255], pgd=PGDSettings(steps=5), limit=200)
    ds = build_dataset("builtin:shapes:split=val,n=200")
    data = loader(ds, batch_size=100)
    acc, racc = accuracy_under_attack(trained, data, cfg.eps, cfg, torch.device("cpu"))
    values = [racc[k] for k in ("1/255", "2/255", "4/255", "8/255")]
    assert acc > 15  # trained well above chance (4.2%)
    assert all(a >= b for a, b in zip([acc, *values], values))
    assert values[-1] < acc - 5  # the attack really lowers accuracy
    # with a deterministic attack, never weaker than attacking each eps on its own
    cfg.pgd.random_start = False
    _, racc = accuracy_under_attack(trained, data, cfg.eps, cfg, torch.device("cpu"))
    for e in cfg.eps:
        _, alone = accuracy_under_attack(trained, data, [e], cfg, torch.device("cpu"))
        assert racc[eps_key(e)] <= alone[eps_key(e)]


def test_evaluate_model_result_layout(trained):
    cfg = EvalConfig(
        dataset="builtin:shapes:split=val", eps=[1 / 255], pgd=PGDSettings(steps=1), limit=50, zero_shot_eps=[1 / 255]
    )
    result = evaluate_model(trained.clip, cfg)
    res = result.to_dict()  # results.json's layout
    assert set(res) == {
        "dataset",
        "n",
        "acc",
        "racc",
        "sum_acc",
        "zero_shot",
        "zero_shot_racc",
        "attack",
        "protocol",
        "racc_by_attack",
        "sanity",
    }
    assert (res["dataset"], res["n"]) == ("builtin:shapes:split=val", 50)
    assert res["protocol"]["chain"][0]["attacks"][0]["steps"] == 1  # the settings the numbers were made with
    assert res["sum_acc"]["1/255"] == pytest.approx(res["acc"] + res["racc"]["1/255"])
    assert set(res["zero_shot"]) == {"combos", "outlines"}
    assert ModelResult.from_dict(res) == result and result.flat()["sum_acc/1/255"] == res["sum_acc"]["1/255"]


def test_eps_keys():
    assert [eps_key(k / 255) for k in (1, 2, 3, 4)] == ["1/255", "2/255", "3/255", "4/255"]
    assert eps_key(0.5) == "0.5"


def test_markdown_table_has_one_table_1_per_architecture():
    res = ModelResult(acc=50.0, racc={"1/255": 40.0}, sum_acc={"1/255": 90.0}, zero_shot={"combos": 30.0})
    other = ModelResult(acc=60.0, racc={"1/255": 20.0}, sum_acc={"1/255": 80.0}, zero_shot={"combos": 35.0})
    table = results_markdown({"vit/baseline": res, "vit/mmt-ard": res, "rn/mmt-ard": other}, EvalConfig(eps=[]))
    vit, rest = table.split("**Table 1: rn**")
    rn, zero_shot = rest.split("**Zero-shot accuracy (clean)**")  # the zero-shot table follows Table 1
    assert "**Table 1: vit**" in vit and "| method | eps | acc | racc | sum-acc | clip-zero |" in vit
    assert "| baseline | 1/255 | 50.00 | 40.00 | 90.00 | 30.00* |" in vit and "rn" not in vit.split("\n", 1)[1]
    assert "| mmt-ard | 1/255 | 60.00 | 20.00 | 80.00 | 35.00* |" in rn and "baseline" not in rn
    assert "| vit/baseline | 30.00 |" in zero_shot and "| rn/mmt-ard | 35.00 |" in zero_shot


def test_evaluation_leaves_the_global_rng_alone(trained):
    state = torch.get_rng_state()
    evaluate_model(trained.clip, EvalConfig(eps=[1 / 255], pgd=PGDSettings(steps=1), limit=20, zero_shot=[]))
    assert torch.equal(state, torch.get_rng_state())


class Spy(torch.nn.Module):
    """Records every logits tensor the evaluation computes."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        out = self.model(x)
        self.seen.append(out.detach().clone())
        return out


def test_evaluation_is_float32_inside_bf16_autocast(trained):
    cfg = EvalConfig(eps=[2 / 255], pgd=PGDSettings(steps=2, random_start=False), limit=40)
    data = loader(build_dataset("builtin:shapes:split=val,n=40"), batch_size=40)
    reference = Spy(trained)
    plain = accuracy_under_attack(reference, data, cfg.eps, cfg, torch.device("cpu"))  # outside any autocast
    spy = Spy(trained)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = accuracy_under_attack(spy, data, cfg.eps, cfg, torch.device("cpu"))
    assert plain == inside
    assert all(t.dtype == torch.float32 for t in spy.seen)
    assert len(spy.seen) == len(reference.seen)
    assert all(torch.equal(a, b) for a, b in zip(spy.seen, reference.seen))  # bit-identical, not just close


class Band(torch.nn.Module):
    """Fooled only while the mean pixel shift is in a band: PGD passes through it and out again.

    Logits of 3 classes over s = mean(x) - 0.5: the true class 0 is constant, class 1 is a bump
    around s = 1.5a (wins there), class 2 rises slowly, so the cross-entropy rises all the way
    while the prediction is wrong only at the middle iterate.
    """

    def forward(self, x):
        s = x.flatten(1).mean(1) - 0.5
        a = 1 / 255
        bump = 3.0 - ((s - 1.5 * a) / (0.6 * a)) ** 2
        return torch.stack([torch.full_like(s, 2.0), bump, 2.0 * s / a - 6.0], dim=1)


def test_a_sample_fooled_by_any_iterate_counts_as_broken():
    x = torch.full((4, 3, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    model = Band()
    cfg = EvalConfig(eps=[3 / 255], pgd=PGDSettings(steps=2, step_size=1.5 / 255, random_start=False))
    with torch.no_grad():  # check the construction: start correct, middle fooled, end correct
        for k in (0.0, 1.5, 3.0):
            assert (model(x + k / 255).argmax(-1) == 0).tolist() == [k != 1.5] * 4
    acc, racc = accuracy_under_attack(model, [(x, y)], cfg.eps, cfg, torch.device("cpu"))
    assert acc == 100.0 and racc["3/255"] == 0.0  # judged by the last iterate alone it would be 100


def test_duplicate_eps_are_rejected():
    from mmt_ard.errors import ConfigError

    with pytest.raises(ConfigError, match="same eps twice"):
        EvalConfig(eps=[2 / 255, 0.00784313725490196]).validate()

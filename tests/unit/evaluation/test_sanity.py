"""Sanity checks fire on gradient masking and weak attacks, and stay quiet on a normal model."""

import logging

import torch

from mmt_ard.evaluation import APGDSettings, EvalConfig, PGDSettings, TargetedSettings
from mmt_ard.evaluation.attacks import AttackTrace
from mmt_ard.evaluation.results import ModelResult
from mmt_ard.evaluation.sanity import (
    check_chance,
    check_gradients,
    check_loss_rises,
    check_monotone,
    check_stronger,
    run_sanity_checks,
)
from mmt_ard.evaluation.tables import build_sanity
from mmt_ard.models import ZeroShotClassifier
from mmt_ard.tables import markdown_table
from tests.conftest import tiny_classifier


class RoundingClassifier(ZeroShotClassifier):
    """Sees only each channel's mean, quantized: noise averages out and every input gradient is 0."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.round(x.mean(dim=(2, 3), keepdim=True) * 4) / 4
        return self.clip.encode_image(mean.expand_as(x))


class ConstantClassifier(ZeroShotClassifier):
    """Always predicts class 0: not robust, just blind; its accuracy under any attack is chance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([5.0, 0.0, 0.0, 0.0]) + 0 * x.sum(dim=(1, 2, 3)).unsqueeze(1)


def test_a_constant_classifier_is_at_chance_not_robust():
    plain = tiny_classifier("mmt-vit-s")
    blind = ConstantClassifier(plain.clip, plain.head).eval()
    x = torch.rand(32, 3, 32, 32)
    y = torch.arange(32) % 4  # clean accuracy 25% = chance
    flags = run_sanity_checks(
        blind, [(x, y)], {"2/255": 25.0, "8/255": 25.0}, EvalConfig(**CFG), _trace(blind, [(x, y)])
    )
    assert flags["large_eps_to_chance"]["ok"] and flags["large_eps_to_chance"]["value"] == 25.0
    assert not flags["nonzero_gradients"]["ok"]  # but its gradients are flagged


def _data(clf, n=16):
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = clf(x).argmax(-1)
    return [(x[:8], y[:8]), (x[8:], y[8:])]


def _trace(clf, data):
    trace = AttackTrace(["pgd"])
    for x, y in data:
        trace.start_batch(clf, x, y, len(y))
    return trace


CFG = {
    "eps": [2 / 255, 8 / 255],
    "pgd": PGDSettings(steps=3),
    "sanity_samples": 16,
    "apgd_ce": APGDSettings(4, 1),
    "apgd_t": TargetedSettings(4, 1, 1),
}


def test_each_check_fires_on_a_bad_case_and_not_on_a_good_one():
    assert not check_monotone({"1/255": 30.0, "2/255": 40.0, "4/255": 10.0})["ok"]
    assert check_monotone({"1/255": 30.0, "2/255": 30.0, "4/255": 10.0})["ok"]
    assert not check_chance(80.0, num_classes=4, margin=10)["ok"]  # chance is 25 %
    assert check_chance(30.0, num_classes=4, margin=10)["ok"]
    assert not check_stronger(weak=20.0, strong=25.0, what="x", tolerance=2)["ok"]
    assert check_stronger(weak=20.0, strong=21.0, what="x", tolerance=2)["ok"]
    assert not check_loss_rises([1.0, 1.0, 1.0])["ok"] and check_loss_rises([1.0, 0.9, 1.5])["ok"]
    assert not check_gradients(1, 100)["ok"] and check_gradients(0, 100)["ok"]
    bad = check_monotone({"1/255": 30.0, "2/255": 40.0})
    assert "2/255" in bad["detail"] and "steps" in bad["fix"]  # names where, and what to try


def test_gradient_masking_is_flagged_with_cause_and_fix(caplog):
    plain = tiny_classifier("mmt-vit-s")
    masked = RoundingClassifier(plain.clip, plain.head).eval()
    data = _data(masked)
    cfg = EvalConfig(**CFG)
    with caplog.at_level(logging.WARNING, logger="mmt_ard"):
        flags = run_sanity_checks(masked, data, {"2/255": 100.0, "8/255": 100.0}, cfg, _trace(masked, data))
    failed = {k for k, f in flags.items() if not f["ok"]}
    assert {"nonzero_gradients", "loss_rises", "large_eps_to_chance"} <= failed
    assert flags["nonzero_gradients"]["value"] == {"zero": 16, "checked": 16}
    assert "gradient masking" in flags["nonzero_gradients"]["cause"]
    assert "sanity check large_eps_to_chance failed" in caplog.text and "Try:" in caplog.text
    text = markdown_table(build_sanity({"masked": ModelResult(acc=90.0, sanity=flags)}))
    assert "nonzero_gradients FAILED" in text and "likely gradient masking" in text and "try: " in text


def test_a_normal_model_passes_every_check(caplog):
    clf = tiny_classifier("mmt-vit-s").eval()
    data = _data(clf)
    cfg = EvalConfig(attack="pgd+apgd-ce+apgd-t", **CFG)
    with caplog.at_level(logging.WARNING, logger="mmt_ard"):
        flags = run_sanity_checks(clf, data, {"2/255": 40.0, "8/255": 5.0}, cfg, _trace(clf, data))
    assert set(flags) == {
        "monotone_in_eps",
        "nonzero_gradients",
        "large_eps_to_chance",
        "more_steps_not_weaker",
        "loss_rises",
        "autoattack_not_weaker",
    }
    assert all(f["ok"] for f in flags.values()), flags
    assert "sanity check" not in caplog.text
    assert "all checks pass" in markdown_table(build_sanity({"m": ModelResult(acc=90.0, sanity=flags)}))
    assert build_sanity({"m": ModelResult(acc=90.0)}) is None  # no checks run: no table

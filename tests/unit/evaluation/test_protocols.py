"""The named evaluation protocols against pyautoattack's own AutoAttack, and their config sections."""

from dataclasses import replace

import pytest
import torch
from pyautoattack import AutoAttack
from torch import nn

from mmt_ard.config import from_dict
from mmt_ard.errors import ConfigError
from mmt_ard.evaluation import (
    APGDSettings,
    EvalConfig,
    PGDSettings,
    SquareSettings,
    TargetedSettings,
    accuracy_under_attack,
)
from mmt_ard.evaluation import autoattack as aa
from mmt_ard.evaluation.attacks import AttackTrace
from mmt_ard.evaluation.protocols import PROTOCOLS, describe

EPS = 4 / 255
# autoattack-standard with every budget cut, for the equivalence run (both sides get the same cut)
SMALL = {
    "apgd_ce": APGDSettings(20, 1),
    "apgd_t": TargetedSettings(20, 1, 9),
    "fab_t": TargetedSettings(20, 1, 9),
    "square": SquareSettings(queries=200),
}
# per attack, what AutoAttack sets (APGD keeps rho as thr_decr); each must exist on both sides
ATTRIBUTES = {
    "apgd-ce": ("n_iter", "n_restarts", "thr_decr", "eot_iter", "loss", "eps", "norm", "seed"),
    "apgd-t": ("n_iter", "n_restarts", "n_target_classes", "thr_decr", "eot_iter", "loss", "eps", "norm", "seed"),
    "fab-t": (
        "n_iter",
        "n_restarts",
        "n_target_classes",
        "targeted",
        "alpha_max",
        "eta",
        "beta",
        "eps",
        "norm",
        "seed",
    ),
    "square": ("n_queries", "n_restarts", "p_init", "rescale_schedule", "loss", "targeted", "eps", "norm", "seed"),
}


class TinyNet(nn.Module):
    """A 10-class convolutional classifier on 8x8 images: AutoAttack's 9 targets fit (C - 1 = 9)."""

    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def data():
    model = TinyNet().eval()
    x = torch.rand(24, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(-1)
    y[:3] = (y[:3] + 1) % 10  # three samples start misclassified
    return model, x, y


def _reference(model, x, y, version, attacks=None, small=False) -> torch.Tensor:
    """Per-sample robust flags from pyautoattack's own ``run_standard_evaluation`` (``small``: see SMALL)."""
    runner = AutoAttack(model, norm="Linf", eps=EPS, seed=0, version=version, attacks=attacks, device="cpu")
    if small:
        for apgd in (runner.apgd, runner.apgd_targeted):  # APGD derives its checkpoints from n_iter at init
            apgd.n_iter = SMALL["apgd_ce"].iterations
            apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = (max(int(f * apgd.n_iter), 1) for f in (0.22, 0.06, 0.03))
        runner.fab.n_iter, runner.square.n_queries = SMALL["fab_t"].iterations, SMALL["square"].queries
    x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=len(y))
    with torch.no_grad():
        return model(x_adv).argmax(-1) == y


def _ours(model, x, y, protocol) -> tuple[float, AttackTrace]:
    cfg = EvalConfig(attack=protocol, eps=[EPS], sanity=False, seed=0)
    trace = AttackTrace.for_eval(cfg, "m")
    _, racc = accuracy_under_attack(model, [(x, y)], [EPS], cfg, torch.device("cpu"), trace=trace)
    return racc["4/255"], trace


@pytest.mark.parametrize(
    "protocol,version,attacks",
    [
        ("autoattack", "custom", ["apgd-ce", "apgd-t"]),
        ("autoattack-standard", "standard", None),
    ],
)
def test_a_protocol_gets_pyautoattacks_own_robust_accuracy(data, protocol, version, attacks, monkeypatch):
    """Same model, images and seed: the same robust accuracy as AutoAttack's own run.

    ``autoattack`` runs as it is; ``autoattack-standard`` with fewer iterations and queries on both sides
    (FAB-T and Square at full budget cost 20 s of Python here). That each protocol asks for AutoAttack's
    budgets is the next test's."""
    model, x, y = data
    small = protocol == "autoattack-standard"
    if small:
        monkeypatch.setitem(PROTOCOLS, protocol, replace(PROTOCOLS[protocol], fixed=SMALL))
    ref = _reference(model, x, y, version, attacks, small)
    racc, _ = _ours(model, x, y, protocol)
    assert racc == round(100 * ref.float().mean().item(), 2)
    assert 0 < ref.sum() < 21  # some samples survive, some are broken: the comparison means something


@pytest.mark.parametrize(
    "protocol,version,attacks",
    [
        ("autoattack", "custom", ["apgd-ce", "apgd-t"]),
        ("autoattack-standard", "standard", None),
    ],
)
def test_a_protocol_configures_each_attack_as_autoattack_does(data, protocol, version, attacks):
    model = data[0]
    runner = AutoAttack(model, norm="Linf", eps=EPS, seed=0, version=version, attacks=attacks, device="cpu")
    theirs = {"apgd-ce": runner.apgd, "apgd-t": runner.apgd_targeted, "fab-t": runner.fab, "square": runner.square}
    runner.fab.targeted, runner.fab.n_restarts = True, 1  # what run_standard_evaluation sets before fab-t
    assert PROTOCOLS[protocol].attacks == tuple(runner.attacks_to_run)
    cfg = EvalConfig(attack=protocol)
    for name in PROTOCOLS[protocol].attacks:
        ours = aa.make_attack(protocol, name, model, EPS, cfg, torch.device("cpu"))
        for attr in ATTRIBUTES[name]:
            assert getattr(ours, attr) == getattr(theirs[name], attr), (protocol, name, attr)


def test_results_record_each_attack_with_its_settings():
    cfg = EvalConfig(attack="pgd+autoattack", pgd=PGDSettings(steps=20))
    rec = describe(["pgd", "autoattack"], cfg.sections(), "linf", 0)
    assert rec["name"] == "pgd+autoattack" and rec["norm"] == "linf" and rec["precision"] == "fp32"
    pgd, auto = rec["chain"]
    assert pgd["attacks"][0]["steps"] == 20
    assert [(a["attack"], a["restarts"]) for a in auto["attacks"]] == [("apgd-ce", 5), ("apgd-t", 1)]
    assert auto["attacks"][1]["targets"] == 9 and "custom" in auto["source"]
    standard = describe(["autoattack-standard"], cfg.sections(), "linf", 0)["chain"][0]["attacks"]
    assert [a["attack"] for a in standard] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert standard[0]["restarts"] == 1 and standard[3]["queries"] == 5000


def test_sections_are_independent_and_protocols_fixed():
    cfg = EvalConfig(attack="apgd-ce+apgd-t", pgd=PGDSettings(restarts=4))
    assert cfg.apgd_ce.restarts == 5 and cfg.apgd_t.restarts == 1  # PGD's restarts reach no APGD attack
    changed = EvalConfig(attack="pgd+autoattack", apgd_ce=APGDSettings(10, 1))
    with pytest.raises(ConfigError, match="fixed.*eval.attack=apgd-ce\\+apgd-t"):
        changed.validate()
    EvalConfig(attack="apgd-ce+autoattack", apgd_ce=APGDSettings(10, 1)).validate()  # the change reaches apgd-ce
    with pytest.raises(ConfigError, match="fixed"):
        EvalConfig(attack="autoattack-standard", square=SquareSettings(queries=100)).validate()
    with pytest.raises(ConfigError, match="'eval.steps' has moved: write 'eval.pgd.steps'"):
        from_dict(EvalConfig, {"steps": 3}, "eval")
    with pytest.raises(ConfigError, match="apgd_t.targets"):
        from_dict(EvalConfig, {"n_target_classes": 3}, "eval")


def test_square_alone_uses_its_section_and_stays_in_the_ball(data):
    model, x, y = data
    cfg = EvalConfig(attack="square", square=SquareSettings(queries=30))
    attack = aa.make_attack("square", "square", model, EPS, cfg, torch.device("cpu"))
    assert attack.n_queries == 30 and attack.p_init == 0.8 and attack.rescale_schedule is False
    with aa.reference_attack_mode(model, x.device):
        x_adv = attack.perturb(x, y)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1


def test_attack_flags_reach_only_the_attacks_the_chain_names(capsys):
    from mmt_ard.cli.evaluate import eval_values
    from mmt_ard.cli.main import build_parser, main

    args = build_parser().parse_args(["evaluate", "--apgd-iterations", "50", "--target-classes", "3"])
    assert eval_values(args, ["apgd-ce", "apgd-t"]) == {
        "eval.apgd_ce.iterations": "50",
        "eval.apgd_t.iterations": "50",
        "eval.apgd_t.targets": "3",
    }
    one = build_parser().parse_args(["evaluate", "--apgd-iterations", "50"])
    assert eval_values(one, ["apgd-ce", "autoattack"]) == {"eval.apgd_ce.iterations": "50"}  # not autoattack's
    EvalConfig(attack="apgd-ce+autoattack", apgd_ce=APGDSettings(50)).validate()  # so the protocol stays itself
    assert main(["evaluate", "--model", "m=mmt-vit-s", "--attack", "autoattack", "--target-classes", "3"]) == 2
    assert "names none (autoattack and autoattack-standard have fixed settings)" in capsys.readouterr().err


def test_a_pgd_eval_section_of_an_earlier_version_is_recognised_not_retrained():
    from mmt_ard.config import to_dict
    from mmt_ard.evaluation import validation_eval
    from mmt_ard.evaluation.config import upgrade_saved_config

    today = to_dict(validation_eval())  # PGD-5, what every demo stage validates with
    old = {k: v for k, v in today.items() if k not in ("pgd", "apgd_ce", "apgd_t", "fab_t", "square")}
    old.update(steps=5, step_size=None, random_start=True, restarts=1, apgd_iterations=100, n_target_classes=9)
    assert upgrade_saved_config({"data": "x", "eval": old}) == {"data": "x", "eval": today}
    assert upgrade_saved_config({"eval": {**old, "random_start": False}})["eval"] != today  # every key carried
    apgd = {**old, "attack": "pgd+autoattack"}  # APGD shared eval.restarts: no exact translation
    assert upgrade_saved_config({"eval": apgd}) == {"eval": apgd}

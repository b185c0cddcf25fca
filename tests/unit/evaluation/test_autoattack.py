"""Evaluation attacks: APGD from pyautoattack on our classifiers, the per-sample chain, resume."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmt_ard.cli.main import main
from mmt_ard.errors import ConfigError, UserError
from mmt_ard.evaluation import (
    APGDSettings,
    EvalConfig,
    PGDSettings,
    SquareSettings,
    TargetedSettings,
    accuracy_under_attack,
    evaluate_model,
)
from mmt_ard.evaluation import autoattack as aa
from mmt_ard.evaluation.attacks import AttackTrace, attack_survivors
from mmt_ard.evaluation.chain import EVAL_ATTACKS, AttackContext
from tests.conftest import tiny_classifier, tiny_clip

EPS = 8 / 255


@pytest.fixture(scope="module")
def clf():
    return tiny_classifier("mmt-vit-s").eval()


@pytest.fixture
def batch(clf):
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = clf(x).argmax(-1)  # every sample starts correct
    return x, y


SMALL = "apgd-ce+apgd-t"  # the two APGD attacks under their own names, with the small settings of _cfg


def _cfg(**kw):
    return EvalConfig(
        **{"apgd_ce": APGDSettings(5, 1), "apgd_t": TargetedSettings(5, 1, 2), "pgd": PGDSettings(steps=3), **kw}
    )


def test_apgd_stays_in_the_ball_and_lowers_accuracy(clf, batch):
    x, y = batch
    for name in ("apgd-ce", "apgd-t"):
        attack = aa.make_attack(name, name, clf, EPS, _cfg(), x.device)
        with aa.reference_attack_mode(clf, x.device):
            x_adv = attack.perturb(x, y)
        assert (x_adv - x).abs().max() <= EPS + 1e-6, name
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            assert (clf(x_adv).argmax(-1) != y).sum() >= 3, name  # a random tiny ViT is fragile


def test_target_classes_are_capped_by_the_number_of_classes(clf):
    assert aa.target_classes(9, 4) == 3
    assert aa.target_classes(2, 24) == 2
    assert aa.target_classes(9, 3) == 0  # targeted DLR reads the 4th-largest logit: skipped
    attack = aa.make_attack("apgd-t", "apgd-t", clf, EPS, _cfg(apgd_t=TargetedSettings(targets=9)), torch.device("cpu"))
    assert attack.n_target_classes == 3  # 4 classes in the fixture
    assert aa.make_attack("fab-t", "fab-t", clf, EPS, _cfg(), torch.device("cpu")).n_target_classes == 3
    three = tiny_classifier("mmt-vit-s", classes=["red circle", "blue square", "green triangle"])
    assert aa.make_attack("apgd-t", "apgd-t", three, EPS, _cfg(), torch.device("cpu")) is None
    assert aa.make_attack("fab-t", "fab-t", three, EPS, _cfg(), torch.device("cpu")).n_target_classes == 2


def test_autoattack_is_deterministic_and_leaves_the_global_rng_alone(clf, batch):
    x, y = batch
    state = torch.get_rng_state()
    first = aa.run_reference("apgd-t", clf, x, y, EPS, _cfg(seed=3), AttackContext())
    assert torch.equal(state, torch.get_rng_state())
    second = aa.run_reference("apgd-t", clf, x, y, EPS, _cfg(seed=3), AttackContext())
    assert torch.equal(first, second)
    assert not first.all()


def test_chain_is_the_per_sample_worst_case(clf, batch, monkeypatch):
    x, y = batch
    calls = []

    def breaks(parity):
        def attack(classifier, xs, ys, eps, cfg, gen, ctx):
            calls.append(len(ys))
            return torch.tensor([int(v) % 2 != parity for v in xs[:, 0, 0, 0] * 1e4])

        return attack

    monkeypatch.setitem(EVAL_ATTACKS._items, "odd", breaks(1))
    monkeypatch.setitem(EVAL_ATTACKS._items, "even", breaks(0))
    trace = AttackTrace(["odd", "even"])
    correct = attack_survivors(clf, x, y, EPS, _cfg(attack="odd+even"), torch.Generator(), trace)
    assert not correct.any()  # each sample broken by one of the two
    n_odd = sum(int(v) % 2 == 1 for v in x[:, 0, 0, 0] * 1e4)
    assert calls == [12, 12 - n_odd]  # the second attack only sees the survivors of the first
    assert trace.hits == {"odd": {EPS: 12 - n_odd}, "even": {EPS: 0}}


def test_resume_skips_the_attacks_a_state_file_says_are_done(clf, batch, tmp_path, monkeypatch):
    x, y = batch
    ctx = AttackContext(tmp_path, "m", batch=1)
    small = {"apgd_ce": APGDSettings(5, 1), "apgd_t": TargetedSettings(5, 1, 2)}
    monkeypatch.setitem(aa.PROTOCOLS, "autoattack", replace(aa.PROTOCOLS["autoattack"], fixed=small))  # fast
    done = aa.run_reference("autoattack", clf, x, y, EPS, _cfg(), ctx)
    (state_file,) = tmp_path.glob("m-autoattack-b1-eps8_255.json")
    called = []
    real = aa.make_attack
    monkeypatch.setattr(aa, "make_attack", lambda element, name, *a: called.append(name) or real(element, name, *a))
    assert torch.equal(aa.run_reference("autoattack", clf, x, y, EPS, _cfg(), ctx), done)
    assert called == []  # everything restored from the state file
    partial = aa.ResumableState.from_disk(state_file)
    partial._run_attacks = {"apgd-ce"}
    partial.to_disk()
    aa.run_reference("autoattack", clf, x, y, EPS, _cfg(), ctx)
    assert called == ["apgd-t"]  # an interrupted run continues with the attack that was missing
    partial.settings = {**partial.settings, "seed": 99}  # made with other settings: not resumed
    partial.to_disk()
    called.clear()
    aa.run_reference("autoattack", clf, x, y, EPS, _cfg(), ctx)
    assert called == ["apgd-ce", "apgd-t"]


def test_autoattack_is_float32_inside_bf16_autocast(clf, batch):
    x, y = batch
    data = [(x, y)]
    cfg = _cfg(attack=SMALL, eps=[4 / 255], sanity=False)
    dtypes = []
    hook = clf.clip.model.visual.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    try:
        plain = accuracy_under_attack(clf, data, cfg.eps, cfg, torch.device("cpu"))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = accuracy_under_attack(clf, data, cfg.eps, cfg, torch.device("cpu"))
    finally:
        hook.remove()
    assert plain == inside
    assert len(dtypes) > 20 and set(dtypes) == {torch.float32}  # every forward of every attack step


def test_bad_attack_names_are_user_errors():
    with pytest.raises(UserError, match="unknown evaluation attack 'pgd2'.*autoattack"):
        EvalConfig(attack="pgd+pgd2").validate()
    with pytest.raises(UserError, match="twice"):
        EvalConfig(attack="autoattack+autoattack").validate()
    with pytest.raises(UserError, match="eval.apgd_t.targets"):
        EvalConfig(apgd_t=TargetedSettings(targets=0)).validate()
    with pytest.raises(UserError, match="eval.square.queries"):
        EvalConfig(square=SquareSettings(queries=0)).validate()


def test_evaluate_model_reports_pgd_and_the_worst_case(clf):
    cfg = _cfg(
        attack="pgd+" + SMALL,
        eps=[1 / 255, 4 / 255],
        limit=24,
        zero_shot=[],
        sanity=False,
        dataset="builtin:shapes:split=val",
    )
    res = evaluate_model(clf.clip, cfg)
    assert res.attack == "pgd+" + SMALL and set(res.racc_by_attack) == {"pgd", "apgd-ce", "apgd-t"}
    for eps, worst in res.racc.items():
        by = res.racc_by_attack
        assert worst == by["apgd-t"][eps] <= by["apgd-ce"][eps] <= by["pgd"][eps]
    assert res.n == 24


def test_gap_table_puts_pgd_next_to_the_worst_case():
    from mmt_ard.evaluation import ModelResult
    from mmt_ard.evaluation.tables import build_attack_gap
    from mmt_ard.tables import markdown_table

    res = ModelResult(acc=50.0, attack="pgd+autoattack", racc={"1/255": 25.0}, racc_by_attack={"pgd": {"1/255": 30.0}})
    assert "| m | 1/255 | 30.00 | 25.00 | 5.00 |" in markdown_table(build_attack_gap({"m": res}))
    res.attack = "autoattack"
    assert build_attack_gap({"m": res}) is None  # no PGD-alone number to compare


def three_class_folder(root: Path) -> Path:
    for c, name in enumerate(["red circle", "blue square", "green triangle"]):
        (root / name).mkdir(parents=True)
        for i in range(2):
            img = torch.zeros(32, 32, 3, dtype=torch.uint8)
            img[8:24, 8:24, c] = 255 - 40 * i
            Image.fromarray(img.numpy()).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("attack", ["apgd-t", "pgd+autoattack"])
def test_apgd_t_on_fewer_than_4_classes_is_an_error_before_anything_runs(tmp_path, capsys, monkeypatch, attack):
    data = three_class_folder(tmp_path / "three")
    loaded = []
    monkeypatch.setattr("mmt_ard.evaluation.run.load_clip", lambda *a, **k: loaded.append(a))
    args = [
        "evaluate",
        "--model",
        "m=mmt-vit-s",
        "--output",
        str(tmp_path / "out"),
        "--attack",
        attack,
        f"eval.dataset=folder:{data}:size=32",
        "eval.zero_shot=[]",
        "eval.sanity=false",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "needs at least 4 classes" in err and "eval.skip_unrunnable=true" in err and "3 classes" in err
    assert loaded == [] and not (tmp_path / "out" / "results.json").exists()  # nothing ran


def test_a_chain_skips_apgd_t_only_when_asked_and_says_so(tmp_path):
    data = three_class_folder(tmp_path / "three")
    cfg = EvalConfig(
        dataset=f"folder:{data}:size=32",
        zero_shot=[],
        eps=[2 / 255],
        pgd=PGDSettings(steps=2),
        attack="pgd+autoattack",
        sanity=False,
        skip_unrunnable=True,
    )
    r = evaluate_model(tiny_clip("mmt-vit-s"), cfg, name="m")
    assert r.skipped_attacks == {"three": ["apgd-t (3 classes, needs 4)"]}
    assert 0 <= r.racc["2/255"] <= r.acc
    cfg.skip_unrunnable = False
    with pytest.raises(ConfigError, match="needs at least 4 classes"):
        evaluate_model(tiny_clip("mmt-vit-s"), cfg, name="m")


TINY = {
    "pgd": PGDSettings(steps=2),
    "apgd_ce": APGDSettings(2, 1),
    "apgd_t": TargetedSettings(2, 1, 2),
    "fab_t": TargetedSettings(2, 1, 2),
    "square": SquareSettings(20, 1, 0.8),
}


@pytest.mark.parametrize("name", EVAL_ATTACKS.names())
def test_every_registered_attack_runs_bounds_racc_and_records_its_settings(name, monkeypatch):
    """Over the whole registry: a new attack or protocol is tested by construction."""
    from dataclasses import asdict

    for key, protocol in list(aa.PROTOCOLS.items()):  # the protocols' fixed settings, CPU-sized
        monkeypatch.setitem(aa.PROTOCOLS, key, replace(protocol, fixed={s: TINY[s] for s in protocol.fixed}))
    cfg = EvalConfig(
        **({} if name in aa.PROTOCOLS else {k: replace(v) for k, v in TINY.items()}),  # a protocol fixes its own
        attack=name,
        dataset="builtin:shapes:split=val",
        zero_shot=[],
        eps=[4 / 255],
        limit=8,
        sanity=False,
    )
    res = evaluate_model(tiny_clip("mmt-vit-s"), cfg, name="m")
    assert 0 <= res.racc["4/255"] <= res.acc <= 100
    assert res.attack == name and res.racc_by_attack[name] == res.racc
    (element,) = res.protocol["chain"]
    assert element["name"] == name and element["attacks"]
    for entry in element["attacks"]:  # the settings it ran with, by section
        section = {"pgd": "pgd", "apgd-ce": "apgd_ce", "apgd-t": "apgd_t", "fab-t": "fab_t", "square": "square"}
        assert {k: entry[k] for k in asdict(TINY[section[entry["attack"]]])} == asdict(TINY[section[entry["attack"]]])

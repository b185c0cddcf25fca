"""evaluation/results.py: ModelResult reads and writes results.json exactly, old files included; one flattener."""

import json

import pytest

from mmt_ard.errors import UserError
from mmt_ard.evaluation.results import ModelResult, read_results, results_from_dict, write_results

TODAY = {
    "dataset": "builtin:shapes:split=test",
    "n": 24,
    "acc": 62.5,
    "racc": {"1/255": 41.67, "2/255": 25.0},
    "sum_acc": {"1/255": 104.17, "2/255": 87.5},
    "zero_shot": {"combos": 33.33},
    "skipped_attacks": {"three": ["apgd-t (3 classes, needs 4)"]},
    "attack": "pgd+apgd-ce",
    "protocol": {"name": "pgd+apgd-ce", "summary": "`pgd` (...)", "chain": [{"name": "pgd", "attacks": []}]},
    "racc_by_attack": {"pgd": {"1/255": 45.83, "2/255": 29.17}, "apgd-ce": {"1/255": 41.67, "2/255": 25.0}},
    "sanity": {"monotone_in_eps": {"ok": True, "value": [41.67, 25.0], "detail": "non-increasing in eps"}},
    "zero_shot_racc": {"combos": {"1/255": 20.83}},
}
# a file of an earlier version: no dataset, n, protocol, sanity, sum_acc; a key this version does not know
OLD = {"acc": 50.0, "racc": {"2/255": 30.0}, "zero_shot": {}, "attack": "pgd", "racc_by_attack": {}, "note": "x"}


@pytest.mark.parametrize("data", [TODAY, OLD], ids=["today", "earlier-version"])
def test_results_json_round_trips_exactly(data, tmp_path):
    res = ModelResult.from_dict(json.loads(json.dumps(data)))
    assert res.to_dict() == data and json.dumps(res.to_dict()) == json.dumps(data)  # same keys, order, values
    write_results(tmp_path / "results.json", {"m": res})
    assert json.loads((tmp_path / "results.json").read_text()) == {"m": data}
    assert read_results(tmp_path / "results.json") == {"m": res}


def test_fields_are_typed_and_optional_ones_are_none_when_not_recorded():
    res = ModelResult.from_dict(TODAY)
    assert res.racc["2/255"] == 25.0 and res.racc_by_attack["pgd"]["2/255"] == 29.17 and res.n == 24
    old = ModelResult.from_dict(OLD)
    assert (old.dataset, old.n, old.protocol, old.sanity, old.zero_shot_racc) == (None, None, None, None, None)
    assert old.sum_acc_at("2/255") == 80.0 and old.sum_acc_at("4/255") is None  # acc + racc where not recorded
    assert old.extra == {"note": "x"}
    res.to_dict()["racc"]["2/255"] = 0.0
    assert res.racc["2/255"] == 25.0  # to_dict is a copy


def test_clip_zero_robust_where_measured_else_clean():
    res = ModelResult.from_dict(TODAY)
    assert res.clip_zero("1/255") == (20.83, True) and res.clip_zero("2/255") == (33.33, False)
    assert ModelResult(acc=1.0).clip_zero("1/255") == (None, False)


def test_one_flattener_and_its_inverse():
    res = ModelResult.from_dict(TODAY)
    flat = res.flat()
    assert flat == {
        "acc": 62.5,
        "racc/1/255": 41.67,
        "racc/2/255": 25.0,
        "sum_acc/1/255": 104.17,
        "sum_acc/2/255": 87.5,
        "zero_shot/combos": 33.33,
    }
    back = ModelResult.from_flat({**flat, "step": 4, "split": "val"})
    assert (back.acc, back.racc, back.sum_acc, back.zero_shot) == (res.acc, res.racc, res.sum_acc, res.zero_shot)


def test_pgd_alone_only_for_chains_that_start_with_pgd_and_run_more():
    res = ModelResult.from_dict(TODAY)
    assert res.pgd_alone() == {"1/255": 45.83, "2/255": 29.17}
    res.attack = "pgd"
    assert res.pgd_alone() is None
    res.attack = "apgd-ce+pgd"
    assert res.pgd_alone() is None


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"acc": "high", "racc": {}}, "m acc must be a number in percent, got 'high'"),
        ({"acc": 1.0, "racc": {"2/255": None}}, "m racc[2/255] must be a number"),
        ({"acc": 1.0, "racc": {}, "sum_acc": [1]}, "m sum_acc must be an object, got list"),
        ({"acc": 1.0, "racc": {}, "zero_shot": {"c": True}}, "m zero_shot[c] must be a number"),
        ({"acc": 1.0}, "m is not an evaluation result"),
    ],
)
def test_a_hand_edited_entry_is_a_user_error_naming_the_field(entry, needle):
    with pytest.raises(UserError, match="rerun `mmt-ard evaluate`") as err:
        results_from_dict({"m": entry}, "f.json")
    assert needle in str(err.value) and str(err.value).startswith("f.json: ")
    with pytest.raises(UserError, match="non-empty object"):
        results_from_dict([], "f.json")

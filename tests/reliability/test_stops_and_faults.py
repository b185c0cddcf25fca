"""Runs that survive: non-finite steps skipped, stop signals and time budgets checkpoint cleanly."""

import json
import os
import signal

import pytest
import torch

from mmt_ard.cli.main import main
from mmt_ard.distill.task import DistillationTask
from mmt_ard.errors import UserError
from mmt_ard.training.guards import NonFiniteGuard
from mmt_ard.training.loop import _optimizer_step
from mmt_ard.training.optim import OptimConfig, build_optimizer
from tests.helpers import TINY, student_weights, tiny_cfg


def rows(folder, split="train"):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_a_non_finite_step_changes_neither_weights_nor_optimizer_state():
    model = torch.nn.Linear(3, 2)
    opt, _ = build_optimizer(model.named_parameters(), OptimConfig(lr=0.1))
    guard = NonFiniteGuard(torch.device("cpu"), max_in_a_row=3)
    params = list(model.parameters())
    x = torch.randn(4, 3)
    _optimizer_step(model(x).pow(2).mean(), params, opt, 1.0, guard)  # one good step: state exists
    before = [p.detach().clone() for p in params]
    state = {k: v.clone() for k, v in opt.state[params[0]].items()}
    norm = _optimizer_step(model(x).pow(2).mean() * float("nan"), params, opt, 1.0, guard)
    assert not torch.isfinite(norm)
    assert all(torch.equal(a, p) for a, p in zip(before, params))
    assert all(torch.equal(state[k], v) for k, v in opt.state[params[0]].items())  # m, v and the step count
    _optimizer_step(model(x).pow(2).mean(), params, opt, 0.0, guard)  # finite again, clipping off
    assert not all(torch.equal(a, p) for a, p in zip(before, params))
    assert guard.check(3, "ck") == 1 and int(guard.in_a_row) == 0


def nan_at(monkeypatch, steps):
    original = DistillationTask.training_step

    def step_with_nan(self, batch, step):
        terms = original(self, batch, step)
        if step in steps:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(DistillationTask, "training_step", step_with_nan)


def test_an_injected_nan_is_skipped_and_reported(tmp_path, monkeypatch):
    from mmt_ard.distill.run import run_distill

    nan_at(monkeypatch, {3})
    run_distill(tiny_cfg(tmp_path / "r"))
    logged = rows(tmp_path / "r")
    assert [r["skipped_steps"] for r in logged] == [0, 0, 0, 1, 1, 1]  # step 4 (index 3) was skipped
    assert all(torch.isfinite(v).all() for v in student_weights(tmp_path / "r").values())


def test_too_many_non_finite_steps_in_a_row_stop_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    from mmt_ard.distill.run import run_distill

    nan_at(monkeypatch, {2, 3, 4, 5})
    with pytest.raises(UserError, match="not finite for 2 steps in a row"):
        run_distill(tiny_cfg(tmp_path / "r", "loop.max_nonfinite=2", "loop.checkpoint_every=1"))
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_stop_signals_checkpoint_at_the_end_of_the_step_and_resume_exactly(tmp_path, monkeypatch, capsys, sig):
    original = DistillationTask.training_step
    handler_before = signal.getsignal(sig)

    def signalled(self, batch, step):
        if step == 2:
            os.kill(os.getpid(), sig)  # what SLURM / Kubernetes / Ctrl-C do
        return original(self, batch, step)

    monkeypatch.setattr(DistillationTask, "training_step", signalled)
    args = ["distill", "--output", str(tmp_path / "r"), *TINY]
    assert main(args) == 128 + sig
    assert "--resume" in capsys.readouterr().err
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 3  # step index 2 was finished, then the run stopped
    monkeypatch.setattr(DistillationTask, "training_step", original)
    assert main([*args, "--resume"]) == 0
    assert main(["distill", "--output", str(tmp_path / "once"), *TINY]) == 0
    once, resumed = student_weights(tmp_path / "once"), student_weights(tmp_path / "r")
    assert all(torch.equal(once[k], resumed[k]) for k in once)
    assert signal.getsignal(sig) == handler_before  # the run's handlers are gone afterwards


@pytest.mark.parametrize("peer_lost", [True, False])
def test_a_dead_peer_leaves_sigterm_ignored_and_any_other_error_restores_the_handlers(monkeypatch, peer_lost):
    """torchrun SIGTERMs the survivors of a dead worker: it must not cut off the error that explains it."""
    from mmt_ard import distributed
    from mmt_ard.training.guards import STOP_SIGNALS, StopRequests

    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    monkeypatch.setattr(distributed, "peer_failure", lambda e: peer_lost and "peer" in str(e))
    try:
        with pytest.raises(RuntimeError), StopRequests():
            raise RuntimeError("Connection closed by peer")
        after = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    expected = {**before, signal.SIGTERM: signal.SIG_IGN} if peer_lost else before
    assert after == expected  # only SIGTERM, only for a dead peer; Ctrl-C and SIGUSR1 work as before


def test_max_time_stops_with_a_checkpoint(tmp_path):
    from mmt_ard.distill.run import run_distill

    out = run_distill(tiny_cfg(tmp_path / "r", "loop.max_time=1e-6"))
    assert out["stopped_at"] == 1 and out["reason"] == "max_time"
    assert torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["step"] == 1
    assert not (tmp_path / "r" / "student").exists()


def test_same_seed_and_config_give_identical_runs_and_another_seed_does_not(tmp_path):
    from mmt_ard.distill.run import run_distill

    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_distill(tiny_cfg(tmp_path / name, f"loop.seed={seed}", "loop.eval_every=3"))
    a, b, c = (student_weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # wall-clock, and the clean-logit cache's hit rate (run b reads what run a wrote): all that may differ
    drop = ("images_per_s", "train_seconds", "clean_cache_hits")
    clean = [
        [{k: v for k, v in r.items() if k not in drop} for r in rows(tmp_path / n, s)]
        for n in "ab"
        for s in ("train", "val")
    ]
    assert clean[0] == clean[2] and clean[1] == clean[3]
    assert not all(torch.equal(a[k], c[k]) for k in a)

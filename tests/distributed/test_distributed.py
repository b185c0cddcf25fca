"""Data-parallel runs under torchrun equal single-process runs with the same global batch.

Two gloo processes on CPU train a few distill steps on the built-in world; the student must match
a single-process run up to float summation order (the two halves of the batch are reduced
separately, then averaged), and the run resumes in one process. Tolerance: 1e-5 absolute on every
weight (lr 5e-4), and a difference under 1% of what two more steps change (in norm). The residual is float summation order, amplified by Adam where a weight's true
gradient is zero (attention key biases: softmax ignores them), so its update normalizes float
noise: it grows with the learning rate (1.7e-4 at lr 5e-3), not with the number of processes.
"""

import json
from pathlib import Path

import pytest
import torch

from mmt_ard import distributed
from mmt_ard.data.batches import batch_indices
from mmt_ard.data.pipeline import StepBatchSampler
from mmt_ard.distill.run import run_distill
from mmt_ard.errors import ConfigError
from tests.helpers import tiny_cfg, torchrun_distill

TOLERANCE = 5e-5
RUN = [
    "optim.steps=4",
    "optim.batch_size=8",
    "attack.steps=2",
    "loop.device=cpu",
    "loop.eval_every=1",
    "eval.limit=24",
    "eval.batch_size=8",
    "eval.pgd.random_start=false",  # a deterministic attack: the sharded evaluation must count the same hits
]


def fake_world(monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world)


def test_ranks_split_each_global_batch_into_contiguous_slices(monkeypatch):
    slices = []
    for rank in range(4):
        fake_world(monkeypatch, rank, 4)
        slices.append(next(iter(StepBatchSampler(100, 8, seed=3, start=7))))
    assert [i for s in slices for i in s] == batch_indices(100, 8, 3, 7).tolist()  # same global batch, in order
    with pytest.raises(ConfigError, match="multiple of 3"):
        fake_world(monkeypatch, 0, 3)
        distributed.rank_slice(batch_indices(100, 8, 3, 7))


def test_random_starts_do_not_depend_on_the_rank(monkeypatch):
    """Rank r skips the draws of the ranks before it: its slice gets the single-process noise."""
    whole = torch.rand((4, 3, 5, 5), generator=torch.Generator().manual_seed(11))
    for rank in range(2):
        fake_world(monkeypatch, rank, 2)
        gen = distributed.skip_to_rank(torch.Generator().manual_seed(11), whole[:2])
        assert torch.equal(torch.rand((2, 3, 5, 5), generator=gen), whole[2 * rank : 2 * rank + 2])


def _torchrun(output: Path, *extra: str) -> None:
    overrides = [a for a in tiny_cfg_args(output) if not a.startswith("output=")]
    done = torchrun_distill(output, *overrides, *extra)
    assert done.returncode == 0, done.stderr[-3000:]


def tiny_cfg_args(output: Path) -> list[str]:
    from tests.helpers import TINY

    return [*TINY, f"output={output}", *RUN]


def checkpoint_model(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoints" / "last.pt", weights_only=True)["model"]


def val_rows(folder: Path) -> list[dict]:
    """Validation rows without their wall-clock (``train_seconds``)."""
    rows = [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows if r["split"] == "val"]


def train_rows(folder: Path) -> list[dict]:
    rows = [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "train"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def norm_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return sum(float((a[k].float() - b[k].float()).square().sum()) for k in a) ** 0.5


def test_two_processes_equal_one_and_resume_in_one(tmp_path):
    run_distill(tiny_cfg(tmp_path / "one", *RUN, "loop.stop_after=2"))
    one_at_2 = checkpoint_model(tmp_path / "one")
    run_distill(tiny_cfg(tmp_path / "one", *RUN), resume=True)
    one_final = checkpoint_model(tmp_path / "one")

    _torchrun(tmp_path / "two", "loop.stop_after=2")
    two_at_2 = checkpoint_model(tmp_path / "two")
    diff = max_difference(one_at_2, two_at_2)
    assert diff < TOLERANCE, f"2 processes vs 1 after 2 steps: max |dw| = {diff:g}"
    print(f"max |dw| after 2 steps, 1 vs 2 processes: {diff:g}")
    # two more steps move the student 100 times further than the two runs disagree
    assert norm_difference(one_at_2, one_final) > 100 * norm_difference(one_at_2, two_at_2)
    # the sharded validation counts exactly the hits of the single process (deterministic attack)
    assert val_rows(tmp_path / "two") == val_rows(tmp_path / "one")[:2]
    train_one, train_two = train_rows(tmp_path / "one")[:2], train_rows(tmp_path / "two")
    assert [r["step"] for r in train_two] == [1, 2]  # rank 0 alone wrote the log
    for a, b in zip(train_one, train_two):  # logged terms are means over both ranks' halves
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["loss_cm"] == pytest.approx(a["loss_cm"], rel=1e-3)

    run_distill(tiny_cfg(tmp_path / "two", *RUN), resume=True)  # the 2-process run, continued in 1
    diff = max_difference(one_final, checkpoint_model(tmp_path / "two"))
    assert diff < TOLERANCE, f"2 processes then 1 vs 1 throughout: max |dw| = {diff:g}"
    print(f"max |dw| 1 vs 2 processes: {diff:g}")


DIES = """
import os, sys
from mmt_ard.distill.task import DistillationTask
original = DistillationTask.training_step

def dying(self, batch, step):
    if step == 2 and os.environ.get("RANK") == "1":
        os._exit(17)  # a worker lost mid-run (OOM killer, node failure)
    return original(self, batch, step)

DistillationTask.training_step = dying

# rank 0's way out made slow, as on a cold machine: torchrun's SIGTERM (0.1 s after the death) lands before
# the error is printed, and must not cut it off (it did, once in CI: the run ended without rank 0's message)
from mmt_ard.training.run import RunDir
close = RunDir.close

def slow_close(self):
    if os.environ.get("RANK") == "0":
        import time
        time.sleep(1.0)
    close(self)

RunDir.close = slow_close
from mmt_ard.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_dead_worker_ends_the_run_quickly_and_it_resumes(tmp_path):
    import time

    script = tmp_path / "dies.py"
    script.write_text(DIES)
    overrides = [a for a in tiny_cfg_args(tmp_path / "r") if not a.startswith("output=")]
    args = [*overrides, "loop.checkpoint_every=1"]
    t0 = time.monotonic()
    done = torchrun_distill(tmp_path / "r", *args, script=script, env={"MMT_ARD_DIST_TIMEOUT": "30"})
    assert done.returncode != 0 and time.monotonic() - t0 < 120  # no hang
    # rank 0 says why, and was not killed by torchrun's SIGTERM on its way out
    assert "another process of this run failed" in done.stderr and "--resume" in done.stderr, done.stderr[-4000:]
    assert torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    run_distill(tiny_cfg(tmp_path / "r", *RUN), resume=True)  # continues in one process
    assert [r["step"] for r in train_rows(tmp_path / "r")] == [1, 2, 3, 4]


def test_device_auto_joins_the_process_group_too(monkeypatch):
    """Under torchrun the default loop.device=auto must join the group (it used to return before setup)."""
    from mmt_ard.training import loop

    joined = []
    monkeypatch.setattr(distributed, "setup", lambda device: joined.append(device) or device)
    assert loop.resolve_device("auto").type in ("cpu", "cuda") and len(joined) == 1
    loop.resolve_device("cpu")
    assert [d.type for d in joined][-1] == "cpu" and len(joined) == 2

"""SIGKILL at many moments, checkpoint writes included: the run resumes and ends where an uninterrupted one does.

The killed runs are children of a fork server that has imported torch, open_clip and the CLI once
(``multiprocessing``'s ``forkserver`` with a preload), so each of them starts in a fraction of a
second instead of paying the interpreter start-up; they are separate processes killed with SIGKILL
all the same. The last resume and the reference run are plain ``python`` subprocesses.
"""

import io
import json
import multiprocessing
import os
import random
import subprocess
import sys
import time

import torch

from tests.helpers import TINY, student_weights

STEPS = [
    "optim.steps=12",
    "optim.batch_size=8",
    "loop.checkpoint_every=1",
    "eval.dataset=builtin:shapes:split=val,n=64",
]


def killable_run(argv: list[str], flag: str, err: str) -> None:
    """The child: the CLI with checkpoint writes slowed down in the middle of the file, announcing in
    ``flag`` when a write has begun, so that the parent can kill it mid-write on purpose."""
    from mmt_ard import io as mio
    from mmt_ard.cli.main import main
    from mmt_ard.training import checkpoint

    def slow_save(obj, path):
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()

        def write(f):
            f.write(data[: len(data) // 2])
            f.flush()
            with open(flag, "a") as out:
                out.write("w\n")
            time.sleep(0.4)
            f.write(data[len(data) // 2 :])

        return mio._atomic_write(path, write)

    checkpoint.atomic_torch_save = slow_save
    fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)  # the parent reads a failed child's traceback from here
    sys.exit(main(argv))


def checkpoint_step(folder):
    path = folder / "checkpoints" / "last.pt"
    return torch.load(path, weights_only=True)["step"] if path.exists() else 0  # never half-written


def logged_steps(folder):
    path = folder / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(r)["step"] for r in lines if json.loads(r)["split"] == "train"]


def test_sigkill_at_ten_moments_then_resume_equals_one_run(tmp_path):
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["mmt_ard.cli.main"])
    run, flag, err = tmp_path / "run", tmp_path / "writing", tmp_path / "stderr"
    args = ["distill", "--output", str(run), *TINY, *STEPS]
    rng = random.Random(0)
    kills, mid_write = 0, 0
    while kills < 10:
        resume = ["--resume"] if (run / "checkpoints" / "last.pt").exists() else ["--overwrite"]
        child = ctx.Process(target=killable_run, args=([*args, *resume], str(flag), str(err)))
        child.start()
        writes = flag.read_text().count("w") if flag.exists() else 0
        logged = len(logged_steps(run))
        deadline = time.monotonic() + 120
        while child.exitcode is None and time.monotonic() < deadline and kills:  # the first kill: during start-up
            if kills % 2 and flag.exists() and flag.read_text().count("w") > writes:
                break  # odd kills: in the middle of a checkpoint write
            if not kills % 2 and len(logged_steps(run)) > logged:
                time.sleep(rng.uniform(0.0, 0.3))  # even kills: at a random moment after a step
                break
            time.sleep(0.01)
        if child.exitcode is not None:  # the run finished before the kill
            assert child.exitcode == 0, err.read_text()[-2000:]
            break
        child.kill()  # SIGKILL
        child.join()
        assert child.exitcode == -9
        kills += 1
        mid_write += bool(list((run / "checkpoints").glob(".*.tmp")))  # a killed writer's partial file
        done = checkpoint_step(run)  # loads: no checkpoint is ever half-written
        assert done >= max(logged_steps(run), default=0) - 1  # at most the steps since the last checkpoint
    assert kills == 10 and mid_write >= 3
    cli = [sys.executable, "-m", "mmt_ard.cli.main"]
    final = subprocess.run([*cli, *args, "--resume"], capture_output=True)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    assert not list((run / "checkpoints").glob(".*.tmp"))  # partial files of killed writers are cleaned up
    once = subprocess.run([*cli, "distill", "--output", str(tmp_path / "once"), *TINY, *STEPS], capture_output=True)
    assert once.returncode == 0, once.stderr.decode()[-2000:]
    a, b = student_weights(tmp_path / "once"), student_weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)

"""SIGKILL at many moments, checkpoint writes included: the run resumes and ends where an uninterrupted one does."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import torch

from .test_distill_run import TINY, student_weights

# The child runs the CLI with checkpoint writes slowed down in the middle of the file, and says
# when a write has begun, so that the parent can kill it mid-write on purpose.
CHILD = textwrap.dedent("""
    import io, os, sys, time
    import torch
    from mmt_ard import io as mio
    from mmt_ard.training import checkpoint

    def slow_save(obj, path):
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()

        def write(f):
            f.write(data[: len(data) // 2])
            f.flush()
            with open(os.environ["WRITING"], "a") as flag:
                flag.write("w\\n")
            time.sleep(0.4)
            f.write(data[len(data) // 2 :])

        return mio._atomic_write(path, write)

    checkpoint.atomic_torch_save = slow_save
    from mmt_ard.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")

STEPS = ["optim.steps=12", "optim.batch_size=8", "loop.checkpoint_every=1", "eval.dataset=builtin:shapes:split=val,n=64"]


def checkpoint_step(folder):
    path = folder / "checkpoints" / "last.pt"
    return torch.load(path, weights_only=True)["step"] if path.exists() else 0  # never half-written


def logged_steps(folder):
    path = folder / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(r)["step"] for r in lines if json.loads(r)["split"] == "train"]


def test_sigkill_at_ten_moments_then_resume_equals_one_run(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run, flag = tmp_path / "run", tmp_path / "writing"
    env = {**os.environ, "WRITING": str(flag), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, str(script), "distill", "--output", str(run), *TINY, *STEPS]
    rng = random.Random(0)
    kills, mid_write = 0, 0
    while kills < 10:
        resume = ["--resume"] if (run / "checkpoints" / "last.pt").exists() else ["--overwrite"]
        child = subprocess.Popen([*args, *resume], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        writes = flag.read_text().count("w") if flag.exists() else 0
        logged = len(logged_steps(run))
        deadline = time.monotonic() + 120
        while child.poll() is None and time.monotonic() < deadline and kills:  # the first kill: during start-up
            if kills % 2 and flag.exists() and flag.read_text().count("w") > writes:
                break  # odd kills: in the middle of a checkpoint write
            if not kills % 2 and len(logged_steps(run)) > logged:
                time.sleep(rng.uniform(0.0, 0.3))  # even kills: at a random moment after a step
                break
            time.sleep(0.01)
        if child.poll() is not None:  # the run finished before the kill
            assert child.returncode == 0, child.stderr.read().decode()[-2000:]
            break
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        mid_write += bool(list((run / "checkpoints").glob(".*.tmp")))  # a killed writer's partial file
        done = checkpoint_step(run)  # loads: no checkpoint is ever half-written
        assert done >= max(logged_steps(run), default=0) - 1  # at most the steps since the last checkpoint
    assert kills == 10 and mid_write >= 3
    final = subprocess.run([*args, "--resume"], env=env, capture_output=True)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    assert not list((run / "checkpoints").glob(".*.tmp"))  # partial files of killed writers are cleaned up
    once = subprocess.run([sys.executable, "-m", "mmt_ard.cli.main", "distill", "--output", str(tmp_path / "once"),
                           *TINY, *STEPS], capture_output=True)
    assert once.returncode == 0, once.stderr.decode()[-2000:]
    a, b = student_weights(tmp_path / "once"), student_weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)

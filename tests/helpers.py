"""Helpers shared by tests of several folders (fixtures live in conftest.py)."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

import mmt_ard
from mmt_ard.config import load_config
from mmt_ard.distill.run import DistillConfig

TINY = [
    "data=builtin:shapes:split=train,n=480",
    "student.arch=mmt-vit-s",
    "teacher_clean.arch=mmt-rn-s",
    "teacher_adv.arch=mmt-vit-s",
    "optim.steps=6",
    "optim.batch_size=16",
    "attack.steps=1",
    "loop.log_every=1",
    "loop.eval_every=0",
    "loop.checkpoint_every=0",
    "eval.limit=32",
    "eval.pgd.steps=1",
]


def tiny_cfg(output, *extra) -> DistillConfig:
    return load_config(DistillConfig, overrides=[*TINY, f"output={output}", *extra])


def torchrun_distill(
    output: Path, *args: str, nproc: int = 2, script: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``mmt-ard distill --output OUTPUT ARGS`` under ``torchrun --standalone --nproc_per_node NPROC``, this
    checkout's package on PYTHONPATH, one thread per process; ``script`` replaces ``-m mmt_ard.cli.main`` (an
    entry point with patches). The caller checks the result."""
    entry = [str(script)] if script is not None else ["-m", "mmt_ard.cli.main"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *entry]
    src = str(Path(mmt_ard.__file__).resolve().parents[1])
    full_env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [*cmd, "distill", "--output", str(output), *args], env=full_env, capture_output=True, text=True, timeout=300
    )


def student_weights(folder):
    return load_file(str(folder / "student" / "open_clip_model.safetensors"))


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so that tqdm draws its bars into it."""

    def isatty(self) -> bool:
        return True


LOG = re.compile(r"(DEBUG|INFO|WARNING|ERROR) mmt_ard")


def log_inside_a_bar(raw: str) -> list[str]:
    """Log lines written after a bar on the same terminal line (a line starts after a newline, or after the
    carriage return with which tqdm clears its bars before a line is written above them)."""
    return [raw[max(m.start() - 60, 0) : m.end() + 20] for m in LOG.finditer(raw) if raw[m.start() - 1] not in "\r\n"]


def stage_lines(raw: str) -> list[str]:
    """The per-stage lines: ``[3/12] pretrain-rn-s: ...``."""
    return [line.strip() for line in re.split(r"[\r\n]", raw) if re.search(r"\[\d+/\d+\] \S", line)]

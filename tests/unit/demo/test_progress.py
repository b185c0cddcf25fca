"""Progress bars and log lines on one terminal: the training loop's bar is never cut by a log line,
and the demo's overall bar counts stages with one line each and the time left."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from mmt_ard.cli.common import setup_logging
from mmt_ard.demo.progress import StageProgress
from mmt_ard.training.loop import LoopConfig, train
from mmt_ard.training.optim import OptimConfig
from mmt_ard.training.progress import log_lines_above_bars
from mmt_ard.training.run import RunDir
from tests.helpers import Terminal, log_inside_a_bar, stage_lines


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch):
    """Call it in the test (pytest puts its own stderr back between set-up and call) for stderr as a terminal
    with the CLI's logging on it; the root logger is as it was afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("mmt_ard").level

    def install() -> Terminal:
        term = Terminal()
        monkeypatch.setattr(sys, "stderr", term)
        setup_logging(verbose=False)
        return term

    yield install
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("mmt_ard").setLevel(saved[2])


class Line(torch.nn.Module):
    """The smallest task the loop trains: fit one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def named_trainable_parameters(self):
        return list(self.named_parameters())

    def training_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        return {"loss": ((self.w - batch) ** 2).mean()}

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)

    def extra_state(self) -> dict[str, int]:
        return {}

    def load_extra_state(self, state: dict[str, int]) -> None:
        pass


def test_validation_logs_above_the_training_bar_never_inside_it(terminal, tmp_path):
    terminal = terminal()
    log = logging.getLogger("mmt_ard.evaluation.metrics")

    def validate(step: int) -> dict[str, float]:
        log.info("validation at step %d", step)  # as validation's data-set line did in every distillation bar
        log.debug("data set builtin:shapes:split=val: 1000 images")
        return {"acc": 1.0}

    run = RunDir(tmp_path / "run", LoopConfig())
    optim = OptimConfig(steps=6, batch_size=1, lr=0.1)
    train(Line(), lambda step: torch.ones(1), optim, LoopConfig(eval_every=2), run, validate=validate, desc="distill")
    run.close()
    raw = terminal.getvalue()
    assert "distill:" in raw and "%|" in raw  # the bar was drawn
    assert raw.count("INFO mmt_ard.evaluation.metrics: validation at step") == 3  # steps 2, 4 and the end
    assert not log_inside_a_bar(raw), log_inside_a_bar(raw)
    assert "data set" not in raw  # DEBUG stays off the console
    assert logging.getLogger().handlers[-1].get_name() == "mmt-ard"  # the console handler is back, unchanged


def test_the_overall_bar_counts_stages_with_one_line_each_and_the_time_left(terminal):
    terminal = terminal()
    with log_lines_above_bars(), StageProgress(4) as progress:
        progress.finish("pretrain-teacher", 0.0, reused="the finished run in runs/demo/pretrain-teacher")
        progress.start("pretrain-vit-s")
        assert "demo: pretrain-vit-s 1/4 stages |" in terminal.getvalue()  # the stage in progress
        logging.getLogger("mmt_ard.training.loop").info("a line while the bar is up")
        progress.finish("pretrain-vit-s", 120.0)
        raw = terminal.getvalue()
        assert "about 4 min left" in raw  # two stages left at the 120 s the one trained stage took
        progress.start("evaluate")
        progress.finish("evaluate", 30.0)
        assert "about 75 s left" in terminal.getvalue()  # (120 + 30) / 2 s for the last one
        progress.finish("reduced chain vs autoattack", 0.0, reused="runs/demo/protocol-gap.json")
    raw = terminal.getvalue()
    assert stage_lines(raw) == [
        "INFO mmt_ard.demo.progress: [1/4] pretrain-teacher: reusing the finished run in runs/demo/pretrain-teacher",
        "INFO mmt_ard.demo.progress: [2/4] pretrain-vit-s: ran in 120.0 s",
        "INFO mmt_ard.demo.progress: [3/4] evaluate: ran in 30.0 s",
        "INFO mmt_ard.demo.progress: [4/4] reduced chain vs autoattack: reusing runs/demo/protocol-gap.json",
    ]
    assert "demo 4/4 stages |" in raw and not log_inside_a_bar(raw)


def test_without_a_terminal_the_stage_lines_remain_and_no_bar(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="mmt_ard")
    with StageProgress(2, bar=False) as progress:
        progress.finish("a", 1.0)
        progress.finish("b", 0.0, reused="x")
    assert [r.getMessage() for r in caplog.records] == ["[1/2] a: ran in 1.0 s", "[2/2] b: reusing x"]
    assert progress.bar.disable

"""``run_demo``: the whole demo into one folder, reusing every stage that is already finished.

Its page is the one report writer's (:func:`mmt_ard.reporting.write_report`): ``report/report.html`` and
``report/report.md``, with the same Markdown as ``report.md`` in the folder; what the writer cannot
read from ``results.json`` and ``protocol-gap.json`` (the test set, the reduced chain, the seconds per
stage, the machine, the plan) the demo records in ``demo-run.json`` (:class:`~mmt_ard.reporting.DemoFacts`).

On the terminal: one line per stage (reused, or how long it ran) above an overall bar with the time
left; everything, DEBUG lines included, also goes to ``demo.log`` in the output folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

from mmt_ard.demo.curves import plot_curves
from mmt_ard.demo.evaluate import Results, evaluate_all, protocol_gap
from mmt_ard.demo.plan import DemoPlan
from mmt_ard.demo.progress import StageProgress
from mmt_ard.demo.stages import Stage, plan_stages, run_stages
from mmt_ard.evaluation import results_markdown
from mmt_ard.evaluation.chain import attack_names
from mmt_ard.evaluation.protocols import summary
from mmt_ard.io import atomic_write_text, code_version, environment
from mmt_ard.reporting import DemoFacts, write_report
from mmt_ard.training.progress import log_lines_above_bars

__all__ = ["run_demo"]

log = logging.getLogger(__name__)
T = TypeVar("T")
REPORT_FOLDER = "report"  # the page and its figures, inside the output folder


@contextmanager
def log_file(path: Path) -> Iterator[None]:
    """Every ``mmt_ard`` record, DEBUG included, appended to ``path``; the console keeps the level it had."""
    logger, root = logging.getLogger("mmt_ard"), logging.getLogger()
    level = logger.getEffectiveLevel()
    # handlers without a level of their own show what the logger let through: pin them to that before opening it
    unpinned = [h for h in root.handlers + logger.handlers if h.level == logging.NOTSET]
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = logger.level
    for h in unpinned:
        h.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.setLevel(saved)
        logger.removeHandler(handler)
        handler.close()
        for h in unpinned:
            h.setLevel(logging.NOTSET)


def _step(
    progress: StageProgress, name: str, seconds: dict[str, float], work: Callable[[], tuple[T, bool]], target: Path
) -> T:
    """One evaluation step of the demo, counted like a stage."""
    progress.start(name)
    t0 = time.perf_counter()
    value, reused = work()
    seconds[name] = round(time.perf_counter() - t0, 1)
    progress.finish(name, seconds[name], reused=str(target) if reused else None)
    return value


def _run(out: Path, plan: DemoPlan, force: bool) -> tuple[list[Stage], Results, dict[str, float]]:
    """Train (or reuse) every stage, evaluate, measure the protocol gap (``protocol-gap.json``); returns
    the stages, the results and the seconds of each step."""
    t0 = time.perf_counter()
    stages = plan_stages(out, plan)
    eval_cfg = plan.eval_config()
    with StageProgress(len(stages) + 2) as progress:
        seconds = run_stages(stages, force, progress=progress)
        results = _step(
            progress,
            "evaluate",
            seconds,
            lambda: evaluate_all(out, plan, eval_cfg, reuse=not force),
            out / "results.json",
        )
        _step(
            progress,
            "reduced chain vs autoattack",
            seconds,
            lambda: protocol_gap(out, plan, reuse=not force),
            out / "protocol-gap.json",
        )
    seconds["total"] = round(time.perf_counter() - t0, 1)
    return stages, results, seconds


def demo_facts(plan: DemoPlan, quick: bool, seconds: dict[str, float], report: str) -> DemoFacts:
    """What the page says about this run beyond its results: test set, reduced chain, seconds, machine, plan."""
    cfg = plan.eval_config()
    return DemoFacts(
        quick=quick,
        world="Built-in shapes world",
        dataset=cfg.dataset,
        test_images=cfg.limit,
        zero_shot=[spec.split(":")[1] for spec in cfg.zero_shot],
        chain=cfg.attack,
        chain_summary=summary(attack_names(cfg.attack), cfg.sections()),
        norm=cfg.norm,
        seconds=seconds,
        machine=environment(),
        code=code_version(),
        plan=asdict(plan),
        report=report,
    )


def run_demo(
    output: str | Path, quick: bool = False, force: bool = False, device: str = "auto", plan: DemoPlan | None = None
) -> Path:
    """Run the demo into ``output`` with ``plan`` (default: the ``default`` or, with ``quick``, the ``quick``
    preset on ``device``); returns the path of ``report.md``."""
    out = Path(output)
    plan = plan or (DemoPlan.quick(device) if quick else DemoPlan.default(device))
    out.mkdir(parents=True, exist_ok=True)
    with log_file(out / "demo.log"), log_lines_above_bars():
        stages, results, seconds = _run(out, plan, force)
    plot_curves(out, [s for s in stages if s.name.startswith("distill-")], out / "curves.png")
    demo_facts(plan, quick, seconds, f"{REPORT_FOLDER}/report.html").save(out)
    report = out / "report.md"
    title = "MMT-ARD demo" + (" (quick)" if quick else "")
    html = write_report([out], out / REPORT_FOLDER, title=title, markdown_copy=report)
    atomic_write_text(out / "table.md", results_markdown(results, plan.eval_config()))
    print(f"\nDemo finished in {seconds['total']:.0f} s. Report: {report} (one page with figures: {html})\n")
    print(report.read_text())
    return report

"""Named experiments: the registry, and running one into its folder (tables, figures, ``results.json``).

Layout of an output folder::

    OUTPUT/world/           the built-in world (builtin preset; ``--world`` points elsewhere)
    OUTPUT/runs/            every distillation, keyed by its config (shared by all experiments)
    OUTPUT/NAME/            results.json, tables.md, tables.json and the figures of experiment NAME
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmt_ard.errors import UserError
from mmt_ard.experiments import analyses, efficiency, tables
from mmt_ard.experiments.base import Context, Result
from mmt_ard.experiments.presets import Preset
from mmt_ard.experiments.store import RunStore
from mmt_ard.io import atomic_write_json, atomic_write_text, code_version, environment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    name: str
    paper: str  # what of the paper it reproduces
    title: str
    run: Callable[[Context], Result]


EXPERIMENTS = {
    e.name: e
    for e in (
        Experiment("table1", "Table 1, Figure 1", "every student x {baseline, MMT-ARD} x eps 1-4/255", tables.table1),
        Experiment("table2", "Table 2", "adversarial teacher only / average / confidence-weighted", tables.table2),
        Experiment("table3", "Table 3", "single-KL / dual-KL 0.5:0.5 / + adaptive norm / confidence", tables.table3),
        Experiment("table4", "Table 4", "the lambda_adv : lambda_org sweep", tables.table4),
        Experiment(
            "components", "(not in the paper)", "strategy and cross-modal term, one factor at a time", tables.components
        ),
        Experiment(
            "released-code",
            "(not in the paper)",
            "the authors' released weighting vs the paper's DIW",
            tables.released_code,
        ),
        Experiment(
            "gradcam", "Figure 3, Table 5", "Grad-CAM maps of teachers and students, L2 distances", analyses.gradcam
        ),
        Experiment("bound", "Section 4", "distribution of the robustness radius estimate", analyses.bound),
        Experiment(
            "dynamic-weights",
            "eqs. (3)-(6)",
            "DIW slope/offset sweep and the w_adv distribution",
            tables.dynamic_weights,
        ),
        Experiment(
            "efficiency",
            "Section 5, the 2.3x claim",
            "steps and seconds to the baseline's final sum-acc",
            efficiency.efficiency,
        ),
    )
}


def experiment_names(name: str) -> list[str]:
    """``all`` or one name -> the experiments to run, with a clear error for an unknown name."""
    if name == "all":
        return list(EXPERIMENTS)
    if name not in EXPERIMENTS:
        raise UserError(
            f"unknown experiment {name!r}; one of: all, {', '.join(EXPERIMENTS)} (mmt-ard experiment --list)"
        )
    return [name]


def listing() -> str:
    width = max(map(len, EXPERIMENTS))
    return "\n".join(f"{e.name:<{width}}  {e.paper:<26} {e.title}" for e in EXPERIMENTS.values())


def _markdown(name: str, result: dict[str, Any]) -> str:
    from mmt_ard.tables import Table, markdown_table

    lines = [
        f"# {result['title']}",
        "",
        (f"Preset `{result['preset']}`, seeds {result['seeds']}, {result['wall_seconds']:.0f} s."),
        "",
    ]
    for table in result["tables"]:
        plain = Table.from_dict({**table, "notes": []})  # the notes follow as paragraphs
        lines += [f"## {table['title']}", "", markdown_table(plain, title=False).rstrip("\n"), ""]
        lines += [f"{n}" for n in table.get("notes", [])] + [""]
    for fig in result["figures"]:
        lines += [f"![{fig['title']}]({fig['path']})", ""]
    if result["summary"]:
        lines += ["## Findings", "", *[f"- {s}" for s in result["summary"]], ""]
    return "\n".join(lines)


def run_experiment(name: str, preset: Preset, seeds: list[int], output: Path, device: str = "auto") -> Path:
    """Run experiment ``name`` into ``output/name``; returns that folder."""
    experiment = EXPERIMENTS[name]
    out = output / name
    out.mkdir(parents=True, exist_ok=True)
    store = RunStore(output, device)
    t0 = time.perf_counter()
    log.info("experiment %s (%s), preset %s, seeds %s", name, experiment.paper, preset.name, seeds)
    result = experiment.run(Context(preset, store, seeds, out))
    protocol = preset.test_eval.protocol_note()
    for table in result.tables:  # every number says which protocol made it
        if any("racc" in str(c) or "sum-acc" in str(c) for c in table.get("columns", [])):
            table.setdefault("notes", []).append(protocol)
    data = {
        "kind": "mmt-ard-experiment",
        "version": 1,
        "experiment": name,
        "title": f"{experiment.paper}: {experiment.title}"
        if not experiment.paper.startswith("(")
        else experiment.title,
        "paper": experiment.paper,
        "preset": preset.name,
        "seeds": seeds,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "runs_trained": len(store.trained),
        "environment": {**environment(), "code": code_version()},
        "protocol": preset.test_eval.protocol_record(),
        "tables": result.tables,
        "figures": result.figures,
        "radar": result.radar,
        "summary": result.summary,
        "notes": preset.notes,
        "data": result.data,
    }
    atomic_write_json(out / "results.json", data)
    atomic_write_json(out / "tables.json", result.tables)
    atomic_write_text(out / "tables.md", _markdown(name, data))
    log.info("experiment %s finished in %.0f s: %s", name, data["wall_seconds"], out / "tables.md")
    return out

"""Read result folders into :class:`~mmt_ard.reporting.model.Run` objects, checking every field.

Each folder holds ``results.json`` in one of two layouts:

* an **experiment** (``"kind": "mmt-ard-experiment"``, ``"version": 1``)::

      {"kind": "mmt-ard-experiment", "version": 1, "experiment": "table1", "title": "...",
       "paper": "Table 1", "preset": "builtin", "seeds": [0, 1, 2], "wall_seconds": 812.3,
       "environment": {...free-form...},
       "tables": [{"id": "...", "title": "...", "columns": ["method", "eps", "acc"],
                   "rows": [[CELL, ...], ...], "notes": ["...", ...]}],
       "figures": [{"id": "curves", "title": "...", "path": "curves.png"}],
       "radar": [{"student": "vit-s", "axes": ["acc", "racc", "sum-acc", "clip-zero"],
                  "series": {"baseline": [30.1, 18.2, 48.3, 22.9], "mmt-ard": [...]}}],
       "summary": ["one-sentence finding", ...]}

  A CELL is text, a number, null (shown as ``-``) or ``{"mean", "std", "n", "mark"}`` (shown as
  ``mean ± std`` plus the mark). ``figures``, ``radar``, ``summary`` and ``notes`` may be absent;
  figure paths are relative to the folder and must exist.
* an **evaluation** as ``mmt-ard demo`` and ``mmt-ard evaluate`` write it: model name -> evaluation
  entry (:class:`~mmt_ard.evaluation.results.ModelResult`), converted by
  :mod:`mmt_ard.reporting.evaluation_runs`.

Either way the run's per-student tables (columns method, eps, acc, racc) are then read back into a
headline sentence per student (:mod:`mmt_ard.reporting.headline`).

Every problem raises :class:`~mmt_ard.errors.UserError` naming the file, the field and the fix, before
the report writes anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmt_ard.errors import UserError
from mmt_ard.evaluation.results import is_results
from mmt_ard.reporting.evaluation_runs import evaluation_run
from mmt_ard.reporting.figures import IMAGE_TYPES
from mmt_ard.reporting.headline import add_headlines
from mmt_ard.reporting.model import Cell, Figure, Radar, Run, Table

RESULTS = "results.json"
EXPERIMENT_KIND = "mmt-ard-experiment"
VERSIONS = (1,)  # experiment-file versions this code reads
PRODUCERS = "`mmt-ard demo`, `mmt-ard evaluate` or an experiment run"


def load_runs(folders: Sequence[str | Path]) -> list[Run]:
    """:func:`load_run` for each folder, in order; at least one folder."""
    if not folders:
        raise UserError(f"no result folders given; pass one or more folders written by {PRODUCERS}")
    return [load_run(Path(f)) for f in folders]


def load_run(folder: Path) -> Run:
    """The run in ``folder`` (an experiment or a demo / evaluate folder, told apart by ``kind``), with a
    headline per student read from its tables."""
    return add_headlines(_read_run(folder))


def _read_run(folder: Path) -> Run:
    if not folder.exists():
        raise UserError(f"result folder {str(folder)!r} does not exist; pass a folder written by {PRODUCERS}")
    if not folder.is_dir():
        raise UserError(f"{str(folder)!r} is a file, not a result folder; pass the folder that holds {RESULTS}")
    path = folder / RESULTS
    if not path.is_file():
        raise UserError(
            f"{str(folder)!r} has no {RESULTS}; pass a folder written by {PRODUCERS} "
            "(an interrupted run writes it only when it finishes: rerun it)"
        )
    data = read_json(path)
    if isinstance(data, dict) and "kind" in data:
        if data["kind"] != EXPERIMENT_KIND:
            raise UserError(
                f"{path}: unknown kind {data['kind']!r}; this version of mmt-ard reads kind "
                f"{EXPERIMENT_KIND!r} and the model -> results layout of demo/evaluate "
                "(upgrade mmt-ard or point at the right folder)"
            )
        return parse_experiment(data, folder)
    if is_results(data):
        return evaluation_run(folder, data)
    raise UserError(
        f'{path}: not a results file mmt-ard knows: expected {{"kind": {EXPERIMENT_KIND!r}, ...}} '
        'or a dict of model name -> {"acc", "racc", ...} as `mmt-ard evaluate` writes'
    )


def read_json(path: Path) -> Any:
    """The parsed file; malformed JSON names the line and column."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
            "fix the file or rerun the run that wrote it"
        ) from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text; rerun the run that wrote it") from e


def parse_experiment(data: dict[str, Any], folder: Path) -> Run:
    """A checked :class:`Run` from an experiment's ``results.json`` dict."""
    where = str(folder / RESULTS)
    version = data.get("version")
    if version not in VERSIONS:
        known = ", ".join(map(str, VERSIONS))
        raise UserError(
            f"{where}: version {version!r} is not one this mmt-ard reads ({known}); "
            "upgrade mmt-ard or rerun the experiment"
        )
    title = _optional(data, "title", str, where) or _optional(data, "experiment", str, where) or folder.name
    return Run(
        folder=folder,
        title=title,
        kind="experiment",
        meta=_experiment_meta(data, where),
        summary=_strings(data.get("summary"), f"{where}: summary"),
        tables=[
            _table(t, f"{where}: tables[{i}]") for i, t in enumerate(_list(data.get("tables"), f"{where}: tables"))
        ],
        figures=[
            _figure(f, folder, f"{where}: figures[{i}]")
            for i, f in enumerate(_list(data.get("figures"), f"{where}: figures"))
        ],
        radars=[_radar(r, f"{where}: radar[{i}]") for i, r in enumerate(_list(data.get("radar"), f"{where}: radar"))],
        environment=_optional(data, "environment", dict, where) or {},
    )


def _experiment_meta(data: dict[str, Any], where: str) -> dict[str, str]:
    meta = {key: str(data[key]) for key in ("experiment", "paper", "preset") if data.get(key) is not None}
    seeds = data.get("seeds")
    if seeds:
        meta["seeds"] = ", ".join(map(str, _list(seeds, f"{where}: seeds")))
    seconds = data.get("wall_seconds")
    if seconds is not None:
        if not _is_number(seconds):
            raise UserError(f"{where}: wall_seconds must be a number of seconds, got {seconds!r}")
        meta["wall time"] = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return meta


def _table(raw: Any, where: str) -> Table:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a table must be an object with id, columns and rows, got {type(raw).__name__}")
    table_id = _required(raw, "id", str, where)
    where = f"{where} ({table_id!r})"
    columns = _strings(_required(raw, "columns", list, where), f"{where}: columns")
    if not columns:
        raise UserError(f"{where}: columns is empty; list the column names")
    rows = []
    for r, row in enumerate(_list(raw.get("rows"), f"{where}: rows")):
        if not isinstance(row, list) or len(row) != len(columns):
            raise UserError(
                f"{where}: row {r} has {len(row) if isinstance(row, list) else 'no list of'} cells "
                f"for {len(columns)} columns {columns}; give one cell per column (null for none)"
            )
        rows.append([_cell(c, f"{where}: row {r}, column {columns[i]!r}") for i, c in enumerate(row)])
    return Table(
        id=table_id,
        title=_optional(raw, "title", str, where) or table_id,
        columns=columns,
        rows=rows,
        notes=_strings(raw.get("notes"), f"{where}: notes"),
    )


def _cell(value: Any, where: str) -> Cell:
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, dict):
        if not _is_number(value.get("mean")):
            raise UserError(
                f"{where}: a statistic needs a numeric 'mean', got {value!r}; "
                'write {"mean": 30.1, "std": 0.4, "n": 3}'
            )
        if value.get("std") is not None and not _is_number(value["std"]):
            raise UserError(f"{where}: 'std' must be a number, got {value['std']!r}")
        if value.get("n") is not None and not isinstance(value["n"], int):
            raise UserError(f"{where}: 'n' must be a whole number of seeds, got {value['n']!r}")
        if value.get("mark") is not None and not isinstance(value["mark"], str):
            raise UserError(f"{where}: 'mark' must be text such as \"†\", got {value['mark']!r}")
        return value
    raise UserError(
        f'{where}: a cell must be text, a number, null or {{"mean", "std", "n", "mark"}}, '
        f"got {type(value).__name__} {value!r}"
    )


def _figure(raw: Any, folder: Path, where: str) -> Figure:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a figure must be an object with id, title and path")
    fig_id = _required(raw, "id", str, where)
    rel = _required(raw, "path", str, f"{where} ({fig_id!r})")
    path = folder / rel
    if path.suffix.lower() not in IMAGE_TYPES:
        raise UserError(
            f"{where} ({fig_id!r}): {rel!r} is not an image type a report can embed; "
            f"save it as one of {', '.join(IMAGE_TYPES)}"
        )
    if not path.is_file():
        raise UserError(
            f"{where} ({fig_id!r}): the figure file {str(path)!r} does not exist; "
            "write it there (paths are relative to the result folder) or drop the entry from 'figures'"
        )
    return Figure(id=fig_id, title=_optional(raw, "title", str, where) or fig_id, path=path)


def _radar(raw: Any, where: str) -> Radar:
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a radar must be an object with student, axes and series")
    student = _required(raw, "student", str, where)
    where = f"{where} ({student!r})"
    axes = _strings(_required(raw, "axes", list, where), f"{where}: axes")
    if len(axes) < 3:
        raise UserError(f"{where}: a radar needs at least 3 axes, got {axes}; show fewer numbers as a table instead")
    series = _required(raw, "series", dict, where)
    if not series:
        raise UserError(f"{where}: series is empty; give at least one method -> values")
    for name, values in series.items():
        if not isinstance(values, list) or len(values) != len(axes) or not all(_is_number(v) for v in values):
            raise UserError(
                f"{where}: series {name!r} must be {len(axes)} numbers, one per axis {axes}, got {values!r}"
            )
    return Radar(
        student=student,
        axes=axes,
        series={k: [float(v) for v in vs] for k, vs in series.items()},
        title=_optional(raw, "title", str, where) or "",
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _list(value: Any, where: str) -> list[Any]:
    """A missing or null list is empty; anything else must be a list."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise UserError(f"{where} must be a list, got {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(s, str) for s in items):
        raise UserError(f"{where} must be a list of text, got {items!r}")
    return items


def _required(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in raw:
        raise UserError(f"{where}: missing {key!r}; add it (the results.json layout: mmt_ard/reporting/gather.py)")
    return _optional(raw, key, kind, where)


def _optional(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = raw.get(key)
    if value is not None and not isinstance(value, kind):
        raise UserError(f"{where}: {key!r} must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value

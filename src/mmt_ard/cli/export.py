"""``mmt-ard export``: a trained model in a format other tools load (see :mod:`mmt_ard.export`)."""

from __future__ import annotations

from pathlib import Path

from mmt_ard.errors import UserError
from mmt_ard.export import export_model
from mmt_ard.export.card import CardEvaluation, run_folder, write_card
from mmt_ard.io import is_main_process
from mmt_ard.models import ModelSpec, load_clip
from mmt_ard.models.export import CONFIG

RUN_EXPORTS = ("student", "model")  # where distill / pretrain / finetune runs put their export folder


def resolve_source(text: str) -> ModelSpec:
    """A run folder (its ``student/`` or ``model/``), an export folder, or ``ARCH[@WEIGHTS][,vision=PATH]``."""
    path = Path(text)
    if path.is_dir() and not (path / CONFIG).is_file():
        found = [path / sub for sub in RUN_EXPORTS if (path / sub / CONFIG).is_file()]
        if not found:
            raise UserError(
                f"{text!r} is a folder but neither an export folder (no {CONFIG}) nor a finished run "
                f"(no {'/ or '.join(RUN_EXPORTS)}/ export inside); pass a run folder, an export folder or ARCH@WEIGHTS"
            )
        path = found[0]
        text = str(path)
    return ModelSpec.parse(text)[1]


def card_evaluation(results: str | None, run: Path | None) -> CardEvaluation | None:
    """The numbers of the card: ``--results FILE[:NAME]``, else the run's last validation, else none."""
    if results:
        path, _, name = results.rpartition(":") if not Path(results).is_file() else (results, "", "")
        return CardEvaluation.from_results(path, name or None)
    return CardEvaluation.from_run(run) if run is not None else None


def run_export(source: str, fmt: str, output: str, device: str = "cpu", results: str | None = None) -> Path:
    """Load ``source`` and write it to the folder ``output`` in format ``fmt``, with its model card."""
    spec = resolve_source(source)
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {str(out)!r} is not empty; choose another --output or empty it")
    weights = Path(spec.pretrained or "")  # a tag like "openai" is no path: no run to read
    run = run_folder(weights if weights.is_dir() else weights.parent) if spec.pretrained and weights.exists() else None
    evaluation = card_evaluation(results, run)  # a bad results file fails before anything is written
    clip = load_clip(spec, device=device)
    export_model(clip, out, fmt)
    if is_main_process():
        write_card(out, fmt, spec.arch, evaluation, run)
    return out

"""``mmt-ard export``: a trained model in a format other tools load (see :mod:`mmt_ard.export`)."""

from __future__ import annotations

from pathlib import Path

from mmt_ard.errors import UserError
from mmt_ard.export import export_model
from mmt_ard.models import ModelSpec, load_clip
from mmt_ard.models.export import CONFIG

RUN_EXPORTS = ("student", "model")  # where distill / pretrain / finetune runs put their export folder


def resolve_source(text: str) -> ModelSpec:
    """A run folder (its ``student/`` or ``model/``), an export folder, or ``ARCH[@WEIGHTS][,vision=PATH]``."""
    from mmt_ard.cli.evaluate import parse_model_arg

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
    return parse_model_arg(text)[1]


def run_export(source: str, fmt: str, output: str, device: str = "cpu") -> Path:
    """Load ``source`` and write it to the folder ``output`` in format ``fmt``."""
    spec = resolve_source(source)
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {str(out)!r} is not empty; choose another --output or empty it")
    clip = load_clip(spec, device=device)
    export_model(clip, out, fmt)
    return out

"""What every subcommand shares: presets, overrides, logging and the error contract."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, TypeVar

from mmt_ard.config import load_config

C = TypeVar("C")
PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


def add_run_args(p: argparse.ArgumentParser, output_default: str | None = None) -> None:
    """``--config``, ``--output``, ``--resume``, ``--overwrite``, ``--device`` and overrides."""
    p.add_argument("--config", help="YAML preset: a file path or a shipped preset name (see `mmt-ard list`)")
    p.add_argument("--output", default=output_default, help="run folder (config key: output)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing run folder")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides, e.g. optim.lr=1e-4")


def preset_path(name: str | None) -> Path | None:
    """A preset file: the path as given, or a shipped preset by name."""
    if name is None:
        return None
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = PRESET_DIR / f"{name}.yaml"
    if shipped.exists():
        return shipped
    from mmt_ard.errors import ConfigError

    names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise ConfigError(f"unknown preset {name!r}; pass a YAML file or one of: {names}")


def build_config(cls: type[C], args: argparse.Namespace, values: dict[str, Any] | None = None) -> C:
    """The command's config: defaults <- preset <- flags (raw ``values``) <- ``key=value`` overrides."""
    values = dict(values or {})
    if getattr(args, "output", None):
        values["output"] = args.output
    if getattr(args, "device", None):
        values["loop.device"] = args.device
    preset = preset_path(getattr(args, "config", None))
    return load_config(cls, preset, list(getattr(args, "overrides", []) or []), values=values)


class _DropOpenClipNoise(logging.Filter):
    """open_clip warns on every model built without pretrained weights: expected here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_DropOpenClipNoise())
    handler.set_name("mmt-ard")
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "mmt-ard"] + [handler]
    # open_clip logs chatty INFO lines on the root logger: keep the root at WARNING
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("mmt_ard").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("PIL", "matplotlib", "urllib3", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def print_summary(data: Any) -> int:
    """Print a run's summary; the exit code: 0, or 128 + signal number for a run stopped by a signal."""
    import json
    import signal

    print(json.dumps(data, indent=2, default=str))
    reason = data.get("reason") if isinstance(data, dict) else None
    if reason is None or "stopped_at" not in data:
        return 0
    print(
        f"mmt-ard: stopped at step {data['stopped_at']} ({reason}) with a checkpoint saved; "
        "continue with the same command and --resume",
        file=sys.stderr,
    )
    return 128 + int(signal.Signals[reason]) if reason.startswith("SIG") else 0

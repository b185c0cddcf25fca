"""Model cards: a ``README.md`` in the Hugging Face format beside every export.

The card carries YAML metadata (``library_name``, ``tags``, ``base_model``, ``datasets``, ``metrics``
and a ``model-index`` with each number) and a body a person reads: what the model is, its clean and
robust accuracies under the named protocol with its settings, the eps range, the training recipe and
its teachers, and the code version. Nothing is uploaded; an ``hf`` folder with its card is what
``huggingface_hub.upload_folder`` takes.

The numbers come from one :class:`CardEvaluation`: an ``mmt-ard evaluate`` results file (``--results``)
or, without one, the run's own last validation (``summary.json``, under the run's ``eval`` config).
They are copied, never recomputed, so the card says exactly what the results file says.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmt_ard.errors import UserError
from mmt_ard.evaluation.results import ModelResult
from mmt_ard.io import atomic_write_text, code_version
from mmt_ard.training.run import read_metrics

LIBRARY = {"open_clip": "open_clip", "hf": "transformers", "vision-state-dict": "pytorch"}
PIPELINE = {
    "open_clip": "zero-shot-image-classification",
    "hf": "image-feature-extraction",
    "vision-state-dict": "image-feature-extraction",
}
TAGS = ["clip", "adversarial-robustness", "robust-distillation", "mmt-ard"]
NORM_NAMES = {"linf": "Linf", "l2": "L2"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def base_model(training: dict[str, Any]) -> str | None:
    """The student's starting weights when they are a Hugging Face Hub id (``owner/name``), else None."""
    student = training.get("student") or training.get("model") or {}
    pretrained = str(student.get("pretrained") or "")
    pretrained = pretrained.removeprefix("hf-hub:")
    return pretrained if HUB_ID.match(pretrained) and not Path(pretrained).exists() else None


@dataclass
class CardEvaluation:
    """Clean and robust accuracy (percent) of one model, with where and how they were measured."""

    acc: float
    racc: dict[str, float]  # eps key ("2/255") -> robust accuracy
    dataset: str
    protocol: str  # e.g. "pgd+autoattack"
    protocol_summary: str
    source: str  # the file the numbers were copied from
    n: int | None = None
    zero_shot: dict[str, float] = field(default_factory=dict)
    norm: str = "linf"

    @classmethod
    def from_results(cls, path: str | Path, name: str | None = None) -> CardEvaluation:
        """Model ``name`` of an ``mmt-ard evaluate`` ``results.json`` (the only one when ``name`` is None)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot read the results file {path}: {e}; pass the results.json `mmt-ard evaluate` wrote"
            ) from e
        results = data.get("results", data) if isinstance(data, dict) else {}
        if name is None and len(results) != 1:
            raise UserError(
                f"{path} holds {len(results)} models ({', '.join(results)}); name one: --results {path}:NAME"
            )
        name = name or next(iter(results))
        if name not in results or "acc" not in results[name]:
            raise UserError(f"{path} has no model {name!r}; it has {', '.join(results) or 'none'}")
        res = ModelResult.from_dict(results[name], str(path), name)
        protocol = res.protocol or {}
        return cls(
            acc=res.acc,
            racc=dict(res.racc),
            dataset=res.dataset or "(not recorded)",
            protocol=protocol.get("name", res.attack or "pgd"),
            protocol_summary=protocol.get("summary", "(not recorded: results from an older version)"),
            source=f"{path}:{name}",
            n=res.n,
            zero_shot=dict(res.zero_shot),
            norm=protocol.get("norm", "linf"),
        )

    @classmethod
    def from_run(cls, run: Path) -> CardEvaluation | None:
        """The validation of the exported model (the selected step's with ``loop.select``, else the last),
        under the run's ``eval`` section."""
        summary_file, config_file = run / "summary.json", run / "config.yaml"
        if not (summary_file.is_file() and config_file.is_file()):
            return None
        done = json.loads(summary_file.read_text())
        val, where = done.get("val") or {}, f"{summary_file} (the run's last validation)"
        step = (done.get("selected") or {}).get("step")
        if step is not None:  # the exported model is an earlier step's: its own validation row
            rows = read_metrics(run)
            val = next((r for r in rows if r.get("split") == "val" and r.get("step") == step), {})
            where = f"{run / 'metrics.jsonl'} (the validation of step {step}, the exported model)"
        section = _training(run).get("eval")
        if "acc" not in val or section is None:
            return None
        res = ModelResult.from_flat(val)
        protocol, text = _protocol_of(section)
        return cls(
            acc=res.acc,
            racc=res.racc,
            dataset=section.get("dataset", "(not recorded)"),
            protocol=protocol,
            protocol_summary=text,
            source=where,
            n=section.get("limit"),
            norm=section.get("norm", "linf"),
        )


def _protocol_of(section: dict[str, Any]) -> tuple[str, str]:
    """The chain name and its one-line summary from a run's ``eval`` config section."""
    from mmt_ard.config import from_dict
    from mmt_ard.errors import ConfigError
    from mmt_ard.evaluation import EvalConfig
    from mmt_ard.evaluation.chain import attack_names
    from mmt_ard.evaluation.protocols import summary

    try:
        cfg = from_dict(EvalConfig, section, "eval")
    except ConfigError:  # a run of an earlier version (eval.steps, ...): its numbers stand, its settings are its own
        return str(section.get("attack", "pgd")), "settings of an earlier version, in the run's config.yaml"
    return cfg.attack, summary(attack_names(cfg.attack), cfg.sections())


def run_folder(model_folder: Path) -> Path | None:
    """The training run an export folder came from (its parent, when that holds ``config.yaml``)."""
    for candidate in (model_folder, model_folder.parent):
        if (candidate / "config.yaml").is_file() and (candidate / "summary.json").is_file():
            return candidate
    return None


def _training(run: Path | None) -> dict[str, Any]:
    """The run's config (``config.yaml`` holds it under ``config`` beside the version and environment)."""
    if run is None:
        return {}
    data = yaml.safe_load((run / "config.yaml").read_text()) or {}
    return data.get("config", data)


def metadata(fmt: str, arch: str, evaluation: CardEvaluation | None, training: dict[str, Any]) -> dict[str, Any]:
    """The card's YAML front matter (Hugging Face model card metadata)."""
    meta: dict[str, Any] = {
        "library_name": LIBRARY[fmt],
        "pipeline_tag": PIPELINE[fmt],
        "tags": [*TAGS, arch],
        "license": "other",
    }
    base = base_model(training)
    if base is not None:  # the Hub checks base_model: only a Hub id goes here, anything else is in the body
        meta["base_model"] = base
    if training.get("data"):
        meta["datasets"] = [str(training["data"])]
    if evaluation is not None:
        meta["metrics"] = ["accuracy", "robust-accuracy"]
        metrics = [{"type": "accuracy", "name": "clean accuracy", "value": evaluation.acc}]
        norm = NORM_NAMES.get(evaluation.norm, evaluation.norm)
        metrics += [
            {
                "type": "robust-accuracy",
                "name": f"robust accuracy ({evaluation.protocol}, {norm} eps {eps})",
                "value": value,
                "args": {"eps": eps, "protocol": evaluation.protocol},
            }
            for eps, value in evaluation.racc.items()
        ]
        meta["model-index"] = [
            {
                "name": arch,
                "results": [
                    {
                        "task": {"type": "zero-shot-image-classification"},
                        "dataset": {"name": evaluation.dataset or "unknown", "type": evaluation.dataset or "unknown"},
                        "metrics": metrics,
                    }
                ],
            }
        ]
    return meta


def _body(fmt: str, arch: str, evaluation: CardEvaluation | None, training: dict[str, Any], run: Path | None) -> str:
    lines = [f"# {arch}: an adversarially robust CLIP vision encoder (MMT-ARD)", ""]
    loss, attack = training.get("loss") or {}, training.get("attack") or {}
    if training.get("student") or training.get("model"):
        lines += [f"Student: `{_spec(training.get('student') or training.get('model'))}`.", ""]
    if training.get("teacher_adv"):
        strategy = (loss.get("strategy") or {}).get("name", "confidence")
        lines += [
            (
                "Distilled with multi-teacher adversarial robust distillation (MMT-ARD, arXiv 2511.17448): "
                f"the student learned from a clean teacher (`{_spec(training.get('teacher_clean'))}`) on clean "
                f"images and an adversarial teacher (`{_spec(training['teacher_adv'])}`) on its own adversarial "
                f"examples, weighting `{strategy}`, gamma {loss.get('gamma', 1.0)}."
            ),
            "",
        ]
    else:
        lines += ["A CLIP model exported by mmt-ard.", ""]
    if evaluation is None:
        lines += [
            "## Evaluation",
            "",
            (
                "Not evaluated: export with `--results RESULTS.json[:NAME]` (from "
                "`mmt-ard evaluate`) or from a run folder with a finished validation to carry numbers."
            ),
            "",
        ]
    else:
        n = f", {evaluation.n} images" if evaluation.n else ""
        lines += [
            "## Evaluation",
            "",
            (
                f"On `{evaluation.dataset}`{n}; robust accuracy is the per-sample worst case under the protocol "
                f"`{evaluation.protocol}`: {evaluation.protocol_summary}; "
                f"{NORM_NAMES.get(evaluation.norm, evaluation.norm)}, float32, eval mode."
            ),
            "",
            "| eps | clean accuracy | robust accuracy |",
            "|---|---|---|",
        ]
        lines += [f"| {eps} | {evaluation.acc:.2f} | {value:.2f} |" for eps, value in evaluation.racc.items()]
        eps = list(evaluation.racc)
        lines += [
            "",
            f"Eps range: {eps[0]} to {eps[-1]}." if eps else "No robust accuracy measured.",
            f"Numbers copied from `{evaluation.source}`.",
            "",
        ]
        if evaluation.zero_shot:
            lines += ["Zero-shot (clean): " + ", ".join(f"{k} {v:.2f}" for k, v in evaluation.zero_shot.items()), ""]
    if training:
        recipe = {
            k: training[k]
            for k in ("student", "teacher_clean", "teacher_adv", "data", "attack", "loss", "optim", "lora")
            if k in training
        }
        lines += [
            "## Training",
            "",
            f"Run folder: `{run}`. Its config (`config.yaml`):",
            "",
            "```yaml",
            yaml.safe_dump(recipe, sort_keys=False).rstrip(),
            "```",
            "",
        ]
        if attack:
            lines += [f"Training attack: eps {attack.get('eps')}, {attack.get('steps')} PGD steps.", ""]
    lines += [
        "## Use",
        "",
        USE[fmt],
        "",
        "## Provenance",
        "",
        "Code: " + ", ".join(f"{k} {v}" for k, v in code_version().items()) + ".",
        "",
    ]
    return "\n".join(lines)


USE = {
    "open_clip": "`open_clip.create_model_and_transforms(ARCH, pretrained='open_clip_model.safetensors')`, or "
    "`mmt-ard evaluate --model NAME=THIS_FOLDER`.",
    "hf": "`transformers.CLIPVisionModelWithProjection.from_pretrained(THIS_FOLDER)` (or `CLIPVisionModel`, e.g. as "
    "LLaVA-1.5's `mm_vision_tower`); `huggingface_hub.upload_folder(folder_path=THIS_FOLDER, repo_id=...)` "
    "uploads it with this card.",
    "vision-state-dict": "`visual.load_state_dict(torch.load('vision_encoder.pt', weights_only=True))` on the "
    "architecture in `vision_info.json`, or `mmt-ard evaluate --model NAME=ARCH,vision=PATH`.",
}


def _spec(spec: Any) -> str:
    if not isinstance(spec, dict):
        return str(spec)
    text = str(spec.get("arch", ""))
    if spec.get("pretrained"):
        text += f"@{spec['pretrained']}"
    if spec.get("vision"):
        text += f",vision={spec['vision']}"
    return text


def write_card(folder: Path, fmt: str, arch: str, evaluation: CardEvaluation | None, run: Path | None) -> Path:
    """``folder/README.md``: YAML metadata between ``---`` lines, then the body."""
    training = _training(run)
    meta = yaml.safe_dump(metadata(fmt, arch, evaluation, training), sort_keys=False)
    path = folder / "README.md"
    atomic_write_text(path, f"---\n{meta}---\n\n{_body(fmt, arch, evaluation, training, run)}")
    return path


def read_card(path: str | Path) -> tuple[dict[str, Any], str]:
    """The metadata and body of a card :func:`write_card` wrote."""
    text = Path(path).read_text()
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body

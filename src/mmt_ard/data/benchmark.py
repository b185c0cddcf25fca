"""The zero-shot suite through CLIP_benchmark: ``clip_benchmark:NAME:root=DIR[,split=test][,download=true]``.

``clip_benchmark`` (``pip install mmt-ard[benchmark]``) supplies the data set builders, class names
and prompt templates that zero-shot tables are usually made with, so results line up with them.
Nothing is downloaded unless the spec says ``download=true``: without it the root must exist.
Examples (METHOD.md section 7)::

    clip_benchmark:cifar10:root=/data/cifar10            clip_benchmark:imagenet-r:root=/data/imagenet-r
    clip_benchmark:stl10:root=/data/stl10                clip_benchmark:imagenet_sketch:root=/data/sketch
    clip_benchmark:pcam:root=/data/pcam                  clip_benchmark:caltech101:root=/data/caltech101

Only map-style data sets are supported (not clip_benchmark's streaming ``wds/...`` kinds).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mmt_ard.data.datasets import DATASETS, DatasetSpec, LabeledImages, _check_options, _int_option
from mmt_ard.data.pipeline import Preprocess
from mmt_ard.errors import UserError

log = logging.getLogger(__name__)

INSTALL = "pip install 'mmt-ard[benchmark]'"
_LABEL_ATTRS = ("targets", "labels", "_labels", "y")  # where torchvision-style data sets keep labels


def _clip_benchmark_builder() -> Any:
    try:
        from clip_benchmark.datasets.builder import build_dataset
    except ImportError as err:
        raise UserError(f"clip_benchmark data sets need the optional extra: {INSTALL} ({err})") from None
    return build_dataset


class BenchmarkImages(LabeledImages):
    """A CLIP_benchmark data set (it decodes to PIL; :attr:`preprocess` makes the tensor)."""

    def __init__(self, name: str, spec: str, source: Any, size: int) -> None:
        classnames = [str(c) for c in source.classes]
        super().__init__(name, classnames, list(source.templates), spec, _labels(source))
        self.source = source
        self.set_preprocess(Preprocess(size))

    def set_preprocess(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess
        self._transform = preprocess.transform()

    def image(self, index: int) -> torch.Tensor:
        img, _ = self.source[index]
        if not isinstance(img, Image.Image):
            raise UserError(f"{self.spec}: sample {index} is a {type(img).__name__}, not an image")
        return self._transform(img.convert("RGB"))


def _labels(source: Any) -> torch.Tensor:
    """All labels without decoding images where the data set keeps them in a list."""
    for attr in _LABEL_ATTRS:
        values = getattr(source, attr, None)
        if values is not None and len(values) == len(source):
            return torch.as_tensor([int(v) for v in values], dtype=torch.long)
    log.warning("%s keeps no label list: reading every sample once to find the labels", type(source).__name__)
    return torch.tensor([int(source[i][1]) for i in range(len(source))], dtype=torch.long)


@DATASETS.register("clip_benchmark")
def _build_benchmark(spec: DatasetSpec, captions: bool) -> BenchmarkImages:
    """Options: ``root`` (required), ``split`` (default test), ``download`` (default false), ``size``."""
    if captions:
        raise UserError(f"clip_benchmark data sets give class labels, not captions: {str(spec)!r}")
    _check_options(spec, ("root", "split", "download", "size"))
    if "root" not in spec.options:
        raise UserError(f"{str(spec)!r} needs root=DIR, the folder holding the data set")
    root = Path(spec.options["root"]).expanduser()
    download = spec.options.get("download", "false").lower()
    if download not in ("true", "false"):
        raise UserError(f"download={download!r} in {str(spec)!r} must be true or false")
    if download == "false" and not root.exists():
        raise UserError(
            f"{str(spec)!r}: root {root} does not exist; prepare the data set there (see the README), "
            "or add download=true to let clip_benchmark fetch it"
        )
    build = _clip_benchmark_builder()
    try:
        source = build(
            spec.name,
            root=str(root),
            transform=None,
            split=spec.options.get("split", "test"),
            download=download == "true",
        )
    except (ValueError, AssertionError, OSError, RuntimeError) as err:
        raise UserError(f"clip_benchmark cannot build {str(spec)!r}: {err}") from err
    if getattr(source, "classes", None) is None or not hasattr(source, "__len__"):
        raise UserError(f"{str(spec)!r} is not a classification data set with class names (zero-shot needs both)")
    return BenchmarkImages(spec.name, str(spec), source, _int_option(spec, "size", 224))

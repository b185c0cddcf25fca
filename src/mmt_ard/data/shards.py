"""WebDataset tar shards, read by index: ``wds:PATTERN:classnames=FILE|imagenet[,templates=...]``.

``PATTERN`` names the shards with braces, as WebDataset does (``/data/in1k/train-{000000..000146}.tar``).
Each sample is a group of tar members sharing a key (``000123.jpg`` + ``000123.cls``): an image
(jpg, jpeg, png or webp) and an integer class (``cls``). The shards are indexed once when the data
set is built (tar headers only), then read by random access: the same step-indexed, resumable,
rank-sliced batches as an image folder (data/pipeline.py), with DataLoader workers streaming
sequential reads of large files. :func:`write_shards` converts an image folder with the
``webdataset`` package's own writer.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import torch
import webdataset
from PIL import Image

from mmt_ard.data.datasets import (
    DATASETS,
    DatasetSpec,
    LabeledImages,
    _check_options,
    _int_option,
    _read_lines,
)
from mmt_ard.data.pipeline import Preprocess
from mmt_ard.data.readable import UnreadableImage, strict_option, with_retries
from mmt_ard.errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def _split_name(name: str) -> tuple[str, str]:
    """``dir/000123.seg.jpg`` -> (``dir/000123``, ``seg.jpg``): WebDataset's key and extension."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def index_shard(path: Path) -> list[tuple[int, int, int]]:
    """``(image offset, image size, label)`` per sample of one shard, in tar order."""
    images: dict[str, tuple[int, int]] = {}
    labels: dict[str, int] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                if ext in IMAGE_EXTS:
                    images[key] = (member.offset_data, member.size)
                elif ext == "cls":
                    labels[key] = int(tar.extractfile(member).read().decode().strip())  # type: ignore[union-attr]
    except (OSError, tarfile.TarError, ValueError) as err:
        raise UserError(f"cannot index shard {path}: {err}; is it an uncompressed WebDataset tar?") from err
    missing = sorted(set(images) ^ set(labels))
    if missing:
        raise UserError(f"shard {path}: sample {missing[0]!r} lacks an image or a .cls label; every key needs both")
    return [(*images[key], labels[key]) for key in images]


class ShardImages(LabeledImages):
    """Labelled images stored in WebDataset tar shards, decoded with ``preprocess``."""

    def __init__(
        self,
        name: str,
        classnames: list[str],
        templates: list[str],
        spec: str,
        shards: list[Path],
        samples: list[tuple[int, int, int, int]],
        size: int,
    ) -> None:
        super().__init__(name, classnames, templates, spec, torch.tensor([s[3] for s in samples], dtype=torch.long))
        self.shards = shards
        self.samples = samples  # (shard, offset, size, label)
        self._files: dict[int, BinaryIO] = {}
        self.skipped: set[int] = set()
        self._pid = -1
        self.set_preprocess(Preprocess(size))

    def set_preprocess(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess
        self._transform = preprocess.transform()

    def _file(self, shard: int) -> BinaryIO:
        if self._pid != os.getpid():  # a DataLoader worker: open its own handles
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            self._files[shard] = open(self.shards[shard], "rb")  # noqa: SIM115 (kept open for reuse)
        return self._files[shard]

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        try:
            f = self._file(shard)
            f.seek(offset)
            return f.read(size)
        except OSError:
            self._files.pop(shard, None)  # a retry opens the shard again
            raise

    def image(self, index: int) -> torch.Tensor:
        shard, offset, size, _ = self.samples[index]
        where = f"sample {index} of shard {self.shards[shard]}"
        try:
            data = with_retries(lambda: self._read(shard, offset, size), where)  # transient errors are retried
        except OSError as err:
            raise UnreadableImage(f"unreadable {where} ({err})") from err
        try:
            with Image.open(io.BytesIO(data)) as raw:
                img = raw.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise UnreadableImage(f"undecodable sample {index} of shard {self.shards[shard]} ({err})") from err
        return self._transform(img)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}, "_pid": -1}  # file handles do not travel to workers


def expand_shards(pattern: str) -> list[Path]:
    """The shard files a brace pattern names; each must exist."""
    paths = [Path(p).expanduser() for p in webdataset.shardlists.expand_urls(pattern)]
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        raise UserError(f"shard {missing[0] if missing else pattern} does not exist; check the pattern {pattern!r}")
    return paths


@DATASETS.register("wds")
def _build_shards(spec: DatasetSpec, captions: bool) -> ShardImages:
    """Tar shards with ``cls`` labels; ``classnames`` is required (a file, or ``imagenet``)."""
    if captions:
        raise UserError(f"wds data sets have class labels, not captions: {str(spec)!r}")
    _check_options(spec, ("classnames", "templates", "size", "strict"))
    if "classnames" not in spec.options:
        raise UserError(f"{str(spec)!r} needs classnames=FILE (one name per class index) or classnames=imagenet")
    classnames = _read_lines(spec.options["classnames"], "classnames")
    templates = (
        _read_lines(spec.options["templates"], "templates") if "templates" in spec.options else ["a photo of a {}."]
    )
    shards = expand_shards(spec.name)
    samples = [(i, *s) for i, path in enumerate(shards) for s in index_shard(path)]
    bad = [s[3] for s in samples if not 0 <= s[3] < len(classnames)]
    if bad:
        raise UserError(f"{str(spec)!r}: label {bad[0]} is outside the {len(classnames)} classnames given")
    name = Path(spec.name).name.split("-{")[0].split("{")[0] or "shards"
    dataset = ShardImages(name, classnames, templates, str(spec), shards, samples, _int_option(spec, "size", 224))
    dataset.strict = strict_option(spec.options, str(spec))
    return dataset


def write_shards(samples: Iterable[tuple[Path, int]], pattern: str, per_shard: int = 1000) -> list[Path]:
    """Write ``(image file, label)`` pairs as WebDataset shards; ``pattern`` like ``out/train-%06d.tar``."""
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    with webdataset.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
        for i, (path, label) in enumerate(samples):
            ext = path.suffix.lower().lstrip(".")
            ext = "jpg" if ext == "jpeg" else ext
            if ext not in IMAGE_EXTS:
                raise UserError(f"{path}: only {', '.join(IMAGE_EXTS)} images can go into shards")
            sink.write({"__key__": f"{i:09d}", ext: path.read_bytes(), "cls": int(label)})
        count = sink.shard
    return [Path(pattern % k) for k in range(count)]

"""Data sets named by spec strings: ``KIND:NAME[:key=value[,key=value...]]``.

Examples::

    builtin:shapes:split=test            # the built-in shapes world (see mmt_ard.data.world)
    builtin:captions:split=train,n=2000  # image-caption pairs for CLIP pretraining
    folder:/data/pets:split=test,classnames=/data/pets/classnames.txt,size=224

Builders are registered by kind in :data:`DATASETS`; :func:`build_dataset` gives labelled images
(with classnames and prompt templates for zero-shot evaluation) and :func:`build_caption_dataset`
gives captioned images. Images are float tensors in [0, 1], never normalized: models normalize.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from mmt_ard.config import expand_env
from mmt_ard.data import world
from mmt_ard.data.pipeline import Preprocess
from mmt_ard.data.readable import UnreadableImage, read_bytes, read_or_substitute, report_non_images, strict_option
from mmt_ard.errors import UserError
from mmt_ard.registry import Registry

log = logging.getLogger(__name__)

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_KINDS = frozenset({"folder", "wds"})  # kinds whose NAME is a path and may itself contain ':'
_SPEC_FORM = "KIND:NAME[:key=value,...], e.g. builtin:shapes:split=test"


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed data set spec; ``str(spec)`` gives the spec string back."""

    kind: str
    name: str
    options: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", dict(self.options))  # decouple from the caller's

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """Parse ``KIND:NAME[:key=value,...]``; a :class:`UserError` on malformed text."""
        text = text.strip()
        kind, sep, rest = text.partition(":")
        if not sep or not kind or not rest:
            raise UserError(f"dataset spec {text!r} must look like {_SPEC_FORM}")
        if kind in _PATH_KINDS:
            # A path may contain ':'; the last ':' group holds options only if it parses as such.
            head, sep, tail = rest.rpartition(":")
            if sep and head and _is_option_group(tail):
                return cls(kind, head, _parse_options(tail, text))
            return cls(kind, rest)
        name, sep, tail = rest.partition(":")
        if not name:
            raise UserError(f"dataset spec {text!r} has an empty NAME; expected {_SPEC_FORM}")
        return cls(kind, name, _parse_options(tail, text) if sep else {})

    def __str__(self) -> str:
        if not self.options:
            return f"{self.kind}:{self.name}"
        group = ",".join(f"{key}={value}" for key, value in self.options.items())
        return f"{self.kind}:{self.name}:{group}"


def _is_option_group(group: str) -> bool:
    """Whether ``group`` reads as ``key=value[,key=value...]``."""
    try:
        _parse_options(group, group)
    except UserError:
        return False
    return True


def _parse_options(group: str, text: str) -> dict[str, str]:
    """``key=value,...`` to a dict; keys must be identifiers, values non-empty, no repeats."""
    options: dict[str, str] = {}
    for item in group.split(","):
        key, sep, value = item.partition("=")
        if not sep or not _KEY.fullmatch(key) or not value:
            raise UserError(
                f"bad option {item!r} in dataset spec {text!r}; options are key=value pairs "
                "separated by commas, e.g. split=test,n=500"
            )
        if key in options:
            raise UserError(f"option {key!r} is given twice in dataset spec {text!r}")
        options[key] = value
    return options


def _check_options(spec: DatasetSpec, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(spec.options) - set(allowed))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for {spec.kind} data set {str(spec)!r}; "
            f"valid options: {', '.join(allowed)}"
        )


def _int_option(spec: DatasetSpec, key: str, default: int, minimum: int | None = 1) -> int:
    """Option ``key`` as an integer (at least ``minimum`` when given)."""
    raw = spec.options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"option {key}={raw!r} in {str(spec)!r} must be an integer") from None
    if minimum is not None and value < minimum:
        raise UserError(f"option {key}={value} in {str(spec)!r} must be at least {minimum}")
    return value


class LabeledImages(Dataset[tuple[torch.Tensor, int]]):
    """Labelled images: ``ds[i]`` is ``(image (3, H, W) float in [0, 1], label)``.

    ``classnames`` and ``templates`` serve zero-shot evaluation. Tensor-backed data sets (the
    built-in kind) also expose the whole split as ``images_uint8`` (N, 3, H, W) so training
    loops can batch by indexing; it is ``None`` where images are read from disk.
    """

    def __init__(
        self,
        name: str,
        classnames: list[str],
        templates: list[str],
        spec: str,
        labels: torch.Tensor,
        images_uint8: torch.Tensor | None = None,
    ) -> None:
        self.name = name
        self.classnames = classnames
        self.templates = templates
        self.spec = spec
        self.labels = labels  # (N,) int64
        self.images_uint8 = images_uint8

    def __len__(self) -> int:
        return len(self.labels)

    strict = False  # data sets read from disk: stop at a bad file instead of skipping it (readable.py)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.images_uint8 is not None:
            return self.image(index), int(self.labels[index])
        return read_or_substitute(self, index)

    def image(self, index: int) -> torch.Tensor:
        """Image ``index`` as a float (3, H, W) tensor in [0, 1]."""
        if self.images_uint8 is None:
            raise NotImplementedError("a data set without images_uint8 must override image()")
        return self.images_uint8[index].float().div_(255)


class CaptionedImages(Dataset[tuple[torch.Tensor, str]]):
    """Image-caption pairs: ``ds[i]`` is ``(image (3, H, W) float in [0, 1], caption)``."""

    def __init__(self, name: str, spec: str, images_uint8: torch.Tensor, captions: list[str]) -> None:
        if len(images_uint8) != len(captions):
            raise ValueError(f"{len(images_uint8)} images but {len(captions)} captions")
        self.name = name
        self.spec = spec
        self.images_uint8 = images_uint8  # (N, 3, H, W) uint8
        self.captions = captions

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return self.images_uint8[index].float().div_(255), self.captions[index]


Builder = Callable[[DatasetSpec, bool], LabeledImages | CaptionedImages]
DATASETS: Registry[Builder] = Registry("dataset kind")


def build_dataset(spec: str | DatasetSpec) -> LabeledImages:
    """Labelled images for ``spec``, e.g. ``"builtin:shapes:split=test"``."""
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.parse(expand_env(spec))
    dataset = DATASETS.get(spec.kind)(spec, False)
    assert isinstance(dataset, LabeledImages)
    log.debug("data set %s: %d images, %d classes", spec, len(dataset), len(dataset.classnames))
    return dataset


def build_caption_dataset(spec: str | DatasetSpec) -> CaptionedImages:
    """Captioned images for ``spec``; only ``builtin:captions`` provides captions."""
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.parse(expand_env(spec))
    dataset = DATASETS.get(spec.kind)(spec, True)
    assert isinstance(dataset, CaptionedImages)
    log.debug("caption data set %s: %d images", spec, len(dataset))
    return dataset


def list_builtin_tasks() -> dict[str, str]:
    """Built-in task names with a one-line description each."""
    return {name: info.description for name, info in world.TASKS.items()}


def loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    workers: int = 0,
) -> DataLoader:
    """A DataLoader (``workers`` decoding processes) whose shuffling order depends only on ``seed``."""
    if batch_size <= 0:
        raise UserError(f"batch size must be positive, got {batch_size}")
    # always a private generator: even an unshuffled DataLoader draws a seed from the global RNG,
    # which would make evaluation during training change the training randomness
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=workers > 0 and torch.cuda.is_available(),
    )


def _check_task_kind(info: world.TaskInfo, captions: bool) -> None:
    """Captions only from captioned tasks, labels only from labelled ones."""
    if captions == info.captioned:
        return
    if captions:
        choices = [name for name, task in world.TASKS.items() if task.captioned]
        problem = "has class labels, not captions; captions come from"
    else:
        choices = [name for name, task in world.TASKS.items() if not task.captioned]
        problem = "is a caption corpus without class labels; labelled tasks"
    raise UserError(f"builtin:{info.name} {problem}: " + ", ".join(f"builtin:{name}" for name in choices))


@DATASETS.register("builtin")
def _build_builtin(spec: DatasetSpec, captions: bool) -> LabeledImages | CaptionedImages:
    """The shapes world; options ``split`` (default: the task's first), ``n`` and ``seed``."""
    _check_options(spec, ("split", "n", "seed"))
    info = world.task_info(spec.name)
    _check_task_kind(info, captions)
    split = spec.options.get("split", next(iter(info.splits)))
    n = _int_option(spec, "n", info.splits.get(split, 1))
    data = world.generate(info.name, split, n, _int_option(spec, "seed", 0, minimum=None))
    if captions:
        assert data.captions is not None
        return CaptionedImages(info.name, str(spec), data.images, list(data.captions))
    return LabeledImages(info.name, list(info.classnames), list(info.templates), str(spec), data.labels, data.images)


# The folder kind lives in its own section below: listing, checking and decoding files on disk.

_IMAGE_SUFFIXES = frozenset(ext.lower() for ext in IMG_EXTENSIONS)


class FolderImages(LabeledImages):
    """Images read from disk and preprocessed by ``preprocess`` (see data/pipeline.py).

    The spec's ``size`` gives open_clip's default transform (shorter side to ``size``, bicubic,
    centre crop); training and evaluation replace it by the model's own (``set_preprocess``).
    """

    def __init__(
        self,
        name: str,
        classnames: list[str],
        templates: list[str],
        spec: str,
        files: list[tuple[Path, int]],
        size: int,
    ) -> None:
        labels = torch.tensor([label for _, label in files], dtype=torch.long)
        super().__init__(name, classnames, templates, spec, labels)
        self.files = [path for path, _ in files]
        self.skipped: set[int] = set()
        self.set_preprocess(Preprocess(size))

    def set_preprocess(self, preprocess: Preprocess) -> None:
        """Decode images with ``preprocess`` from now on (e.g. the model's, see use_model_preprocess)."""
        self.preprocess = preprocess
        self.size = preprocess.size
        self._transform = preprocess.transform()

    def image(self, index: int) -> torch.Tensor:
        path = self.files[index]
        try:
            data = read_bytes(path)  # transient read errors are retried there
        except OSError as err:
            raise UnreadableImage(f"unreadable image {path} ({err})") from err
        try:
            with Image.open(io.BytesIO(data)) as raw:
                img = raw.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:  # decoding: the file is broken
            raise UnreadableImage(f"unreadable image {path} ({err})") from err
        return self._transform(img)


# Names of lists open_clip ships, usable in place of a file: classnames=imagenet, templates=openai
SHIPPED_LISTS: dict[str, dict[str, Callable[[], list[str]]]] = {
    "classnames": {"imagenet": lambda: list(open_clip.IMAGENET_CLASSNAMES)},
    "templates": {
        "openai": lambda: [t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES],
        "simple": lambda: [t("{}") for t in open_clip.SIMPLE_IMAGENET_TEMPLATES],
    },
}


def _read_lines(path: str, what: str) -> list[str]:
    """Non-empty, stripped lines of a user-given text file (or a list open_clip ships)."""
    if path in SHIPPED_LISTS.get(what, {}):
        return SHIPPED_LISTS[what][path]()
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the {what} file {path}: {err}") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def _list_images(root: Path, strict: bool = False) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class folder names and (file, label) pairs; non-image files are left out (see readable.py)."""
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist or is not a directory")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise UserError(f"dataset folder {root} has no class subfolders; expected ROOT/CLASS/IMAGE")
    files: list[tuple[Path, int]] = []
    others: list[str] = []
    for label, folder in enumerate(folders):
        found = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        others += [str(p) for p in found if p.suffix.lower() not in _IMAGE_SUFFIXES]
        found = [p for p in found if p.suffix.lower() in _IMAGE_SUFFIXES]
        if not found:
            raise UserError(f"class folder {folder} holds no images")
        files.extend((path, label) for path in found)
    report_non_images(others, strict, root)
    return [d.name for d in folders], files


@DATASETS.register("folder")
def _build_folder(spec: DatasetSpec, captions: bool) -> LabeledImages | CaptionedImages:
    """An ImageFolder-style tree: one subfolder per class (``split`` picks ROOT/SPLIT)."""
    if captions:
        raise UserError(
            f"folder data sets have class labels, not captions: {str(spec)!r}; captions come from builtin:captions"
        )
    _check_options(spec, ("split", "classnames", "templates", "size", "strict"))
    strict = strict_option(spec.options, str(spec))
    base = Path(spec.name).expanduser()
    root = base / spec.options["split"] if "split" in spec.options else base
    folders, files = _list_images(root, strict)
    classnames = [f.replace("_", " ") for f in folders]
    if "classnames" in spec.options:
        classnames = _read_lines(spec.options["classnames"], "classnames")
        if len(classnames) != len(folders):
            raise UserError(
                f"classnames file {spec.options['classnames']} has {len(classnames)} names but "
                f"{root} has {len(folders)} class folders; give one name per folder, in sorted "
                "folder order"
            )
    templates = ["a photo of a {}."]
    if "templates" in spec.options:
        templates = _read_lines(spec.options["templates"], "templates")
        bad = [t for t in templates if "{}" not in t]
        if bad or not templates:
            raise UserError(
                f"templates file {spec.options['templates']} needs one template per line, each "
                f"with a '{{}}' for the class name; bad lines: {bad}"
            )
    size = _int_option(spec, "size", 224)
    dataset = FolderImages(base.name, classnames, templates, str(spec), files, size)
    dataset.strict = strict
    return dataset

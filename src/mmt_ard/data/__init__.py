"""Data: the built-in shapes world and data sets named by spec strings.

``build_dataset("builtin:shapes:split=test")`` gives labelled images with classnames and prompt
templates; ``build_caption_dataset("builtin:captions")`` gives image-caption pairs for CLIP
pretraining; ``folder:PATH`` reads an ImageFolder-style tree, ``wds:PATTERN`` WebDataset tar
shards and ``clip_benchmark:NAME:root=DIR`` the zero-shot suite. Images are floats in [0, 1].
"""

from mmt_ard.data import benchmark, shards  # noqa: F401  (register the clip_benchmark and wds kinds)
from mmt_ard.data.datasets import (
    DATASETS,
    CaptionedImages,
    DatasetSpec,
    FolderImages,
    LabeledImages,
    build_caption_dataset,
    build_dataset,
    list_builtin_tasks,
    loader,
)
from mmt_ard.data.world import (
    COLORS,
    IMAGE_SIZE,
    SHAPES,
    STYLES,
    TASKS,
    TaskInfo,
    WorldSplit,
    clear_cache,
    generate,
)

__all__ = [
    "COLORS",
    "DATASETS",
    "IMAGE_SIZE",
    "SHAPES",
    "STYLES",
    "TASKS",
    "CaptionedImages",
    "DatasetSpec",
    "FolderImages",
    "LabeledImages",
    "TaskInfo",
    "WorldSplit",
    "build_caption_dataset",
    "build_dataset",
    "clear_cache",
    "generate",
    "list_builtin_tasks",
    "loader",
]

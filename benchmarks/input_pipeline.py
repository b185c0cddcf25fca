"""Images per second of the training input pipeline on a local tree of JPEGs (a benchmark, not a test).

Writes a temporary ImageFolder tree of ImageNet-like JPEGs (default 500 x 375 px, the ImageNet
median), then times the step batches the training loop reads (data/pipeline.py: decode, resize,
centre crop to 224 as open_clip's ViT-B-32 preprocess does) with 0, 1 and 2 DataLoader workers, in
one run so the ratios are comparable. Also the same images as WebDataset tar shards.

    python benchmarks/input_pipeline.py [--images 512] [--batch 32] [--workers 0 1 2] [--shards]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from mmt_ard.data import build_dataset
from mmt_ard.data.pipeline import LoaderConfig, Preprocess, StepBatches
from mmt_ard.data.shards import write_shards


def write_jpegs(root: Path, n: int, classes: int, size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        folder = root / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        # smooth noise compresses like a photo (a few tens of kB), unlike white noise
        small = torch.randint(0, 256, (size[1] // 8, size[0] // 8, 3), generator=gen, dtype=torch.uint8)
        Image.fromarray(small.numpy()).resize(size, Image.BILINEAR).save(folder / f"{i}.JPEG", quality=90)


def images_per_second(dataset, batch: int, workers: int, steps: int) -> float:
    batches = StepBatches(dataset, batch, seed=0, device=torch.device("cpu"), cfg=LoaderConfig(workers=workers))
    batches(0)  # start the workers and fill the prefetch queue before timing
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        batches(step)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, nargs=2, default=[500, 375], metavar=("W", "H"))
    parser.add_argument("--shards", action="store_true", help="also time WebDataset tar shards")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        write_jpegs(root, args.images, classes=10, size=tuple(args.size))
        folder = build_dataset(f"folder:{root}")
        folder.set_preprocess(Preprocess(224))  # ViT-B-32's open_clip preprocess: bicubic, shortest side, crop
        sets = {"folder": folder}
        if args.shards:
            write_shards(zip(folder.files, folder.labels.tolist()), f"{tmp}/shards/s-%04d.tar", per_shard=128)
            n = len(list(Path(tmp, "shards").glob("*.tar")))
            (Path(tmp) / "names.txt").write_text("".join(f"c{i}\n" for i in range(10)))
            shards = build_dataset(f"wds:{tmp}/shards/s-{{0000..{n - 1:04d}}}.tar:classnames={tmp}/names.txt")
            shards.set_preprocess(Preprocess(224))
            sets["shards"] = shards
        steps = args.images // args.batch - 1
        print(
            f"{platform.machine()}, {torch.get_num_threads()} torch threads; {args.images} JPEGs "
            f"{args.size[0]}x{args.size[1]} -> 224x224, batch {args.batch}, {steps} timed steps"
        )
        for name, ds in sets.items():
            base = None
            for workers in args.workers:
                rate = images_per_second(ds, args.batch, workers, steps)
                base = base or rate
                print(f"{name:7s} workers={workers}: {rate:8.1f} images/s  ({rate / base:.2f}x)")


if __name__ == "__main__":
    main()

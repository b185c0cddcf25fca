"""The clean-teacher logit cache beyond one healthy process: torchrun ranks, I/O faults, races.

* Under torchrun every rank's cache holds every row after one epoch (rows are exchanged), on one
  shared cache directory and on one directory per rank (two nodes without shared storage).
* A transient read error is retried; a broken file's substitute is stored under its own row only.
* Two processes filling one new cache at once never leave a row flagged without its logits.
"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmt_ard.data import readable
from mmt_ard.distill.logit_cache import CleanLogitCache
from mmt_ard.distill.run import run_distill
from tests.distributed.test_distributed import checkpoint_model, max_difference
from tests.helpers import tiny_cfg, torchrun_distill

# 32 images, a global batch of 8: 4 steps per epoch, 2 epochs
EPOCHS = [
    "data=builtin:shapes:split=train,n=32",
    "optim.steps=8",
    "optim.batch_size=8",
    "attack.steps=1",
    "loop.device=cpu",
    "loop.log_every=1",
    "eval.limit=8",
    "eval.pgd.steps=1",
]


def cache_rows(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C), filled (N,)) of the one cache under ``root``."""
    (directory,) = [p for p in root.iterdir() if p.is_dir()]
    meta = json.loads((directory / "meta.json").read_text()) if (directory / "meta.json").exists() else None
    n = meta["n"] if meta else 32
    raw = np.fromfile(directory / "clean-logits.bin", dtype=np.uint8)
    c = (raw.size - n) // (4 * n)
    return raw[: n * c * 4].view(np.float32).reshape(n, c), raw[n * c * 4 :]


def hits_per_step(run: Path) -> dict[int, float]:
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["clean_cache_hits"] for r in rows if r["split"] == "train"}


def test_every_rank_hits_from_the_second_epoch_on(tmp_path):
    """Two gloo processes, each with its own cache directory: two nodes without shared storage.

    (Ranks sharing one directory fill one file together: the same exchange, plus two writers of one
    file, which test_two_processes_filling_one_new_cache_never_flag_a_row_without_its_logits covers.)
    """
    cache = str(tmp_path / "cache" / "node${LOCAL_RANK}")  # expanded by each rank
    arch = ["student.arch=mmt-vit-s", "teacher_clean.arch=mmt-rn-s", "teacher_adv.arch=mmt-vit-s"]
    done = torchrun_distill(tmp_path / "two", *arch, *EPOCHS, f"fast.cache_dir={cache}")
    assert done.returncode == 0, done.stderr[-3000:]
    hits = hits_per_step(tmp_path / "two")  # the mean over both ranks of each rank's hit rate
    assert [hits[s] for s in (1, 2, 3, 4)] == [0.0] * 4  # epoch 1: cold
    assert [hits[s] for s in (5, 6, 7, 8)] == [1.0] * 4  # epoch 2: both ranks hit every row (mean 1 = both 1)
    roots = [tmp_path / "cache" / f"node{r}" for r in (0, 1)]
    for root in roots:  # each rank's own directory holds every row: rows came from the other rank too
        logits, filled = cache_rows(root)
        assert filled.all() and np.abs(logits).sum(1).min() > 0
    assert np.array_equal(cache_rows(roots[0])[0], cache_rows(roots[1])[0])
    # the same run without the cache in one process: the same weights to the torchrun tolerance
    run_distill(tiny_cfg(tmp_path / "one", *EPOCHS, "fast.cache_clean_logits=false"))
    diff = max_difference(checkpoint_model(tmp_path / "one"), checkpoint_model(tmp_path / "two"))
    assert diff < 5e-5, f"max |dw| = {diff:g}"


def write_folder(root: Path, n_per_class: int = 4) -> None:
    gen = torch.Generator().manual_seed(0)
    for c, name in enumerate(("red circle", "blue square")):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            img = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8)
            img[8:24, 8:24, c] = 255
            Image.fromarray(img.numpy()).save(folder / f"{i}.png")


def folder_run(tmp_path: Path, name: str, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """One epoch (8 images, batch 8) of a tiny distillation on ``data``; its cache's rows."""
    root = tmp_path / f"cache-{name}"
    cfg = tiny_cfg(
        tmp_path / name,
        f"data=folder:{data}:size=32",
        "optim.steps=1",
        "optim.batch_size=8",
        "loop.device=cpu",
        "loop.data.workers=0",
        "eval.limit=8",
        "eval.pgd.steps=1",
        "eval.dataset=builtin:shapes:split=val",
        f"fast.cache_dir={root}",
    )
    run_distill(cfg)
    return cache_rows(root)


@pytest.fixture(scope="module")
def clean_folder_run(tmp_path_factory):
    """The image folder and the cache rows of a run on it without faults (the tests below compare with it)."""
    tmp = tmp_path_factory.mktemp("folder")
    write_folder(tmp / "data")
    return tmp / "data", folder_run(tmp, "clean", tmp / "data")


def copy_of(data: Path, tmp_path: Path) -> Path:
    shutil.copytree(data, tmp_path / "data")
    return tmp_path / "data"


def test_a_transient_read_error_is_retried_and_the_row_is_that_images(tmp_path, monkeypatch, clean_folder_run):
    data, (clean_logits, clean_filled) = clean_folder_run
    target = data / "blue square" / "1.png"
    real_open = open
    failures = []

    def flaky_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path) == target and not failures:
            failures.append(path)
            raise OSError(errno.EIO, "Input/output error (injected)", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(readable, "open", flaky_open, raising=False)  # read_bytes' open only
    monkeypatch.setattr(readable, "RETRY_DELAYS", (0.0, 0.0))
    logits, filled = folder_run(tmp_path, "flaky", data)
    assert failures == [target]  # the fault happened, on the first read of that image
    assert filled.all() and clean_filled.all()
    assert np.array_equal(logits, clean_logits)  # every row is its own image's (no neighbour stored under it)


def test_a_broken_files_substitute_is_stored_under_its_own_row_only(tmp_path, clean_folder_run):
    data, (clean_logits, _) = clean_folder_run
    data = copy_of(data, tmp_path)  # same files, sizes and mtimes: the same data fingerprint until broken
    broken = data / "blue square" / "1.png"  # sample 1 of 8 (classes sorted, then files)
    broken.write_bytes(b"not an image")
    logits, filled = folder_run(tmp_path, "broken", data)
    assert not filled[1]  # the broken image's row is never filled with its substitute's logits
    # the substitute (the next one) has its own row; the batch held other images than the clean run's, so the
    # rows agree to rounding (kernels may differ by CPU kind), far closer than another image's logits would
    assert filled[2] and np.allclose(logits[2], clean_logits[2], rtol=1e-5, atol=1e-5)
    keep = np.arange(8) != 1
    assert np.allclose(logits[keep], clean_logits[keep], rtol=1e-5, atol=1e-5)


def test_read_bytes_gives_up_after_its_retries_and_never_retries_a_missing_file(tmp_path, monkeypatch):
    calls, sleeps = [], []

    def always_eio(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(path)
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(readable.time, "sleep", sleeps.append)
    monkeypatch.setattr(readable, "open", always_eio, raising=False)
    with pytest.raises(OSError):
        readable.read_bytes(tmp_path / "x.png", delays=(0.1, 0.2, 0.3))
    assert len(calls) == 4 and sleeps == [0.1, 0.2, 0.3]  # the first try and three retries, backing off
    monkeypatch.undo()
    monkeypatch.setattr(readable.time, "sleep", sleeps.append)
    sleeps.clear()
    with pytest.raises(FileNotFoundError):
        readable.read_bytes(tmp_path / "missing.png", delays=(5.0,))
    assert sleeps == []  # a missing file is not retried


def test_a_transient_error_reading_a_shard_is_retried(tmp_path, monkeypatch):
    from mmt_ard.data import build_dataset, shards

    write_folder(tmp_path / "data", n_per_class=2)
    folder = build_dataset(f"folder:{tmp_path / 'data'}:size=32")
    shards.write_shards(zip(folder.files, folder.labels.tolist()), str(tmp_path / "s" / "t-%04d.tar"), 10)
    (tmp_path / "names.txt").write_text("blue square\nred circle\n")
    ds = build_dataset(f"wds:{tmp_path}/s/t-0000.tar:classnames={tmp_path / 'names.txt'},size=32")
    truth = ds.image(1)
    ds._files.clear()
    real_open, failures = open, []

    def flaky_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith(".tar") and not failures:
            failures.append(path)
            raise OSError(errno.EIO, "Input/output error (injected)", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(shards, "open", flaky_open, raising=False)
    monkeypatch.setattr(readable, "RETRY_DELAYS", (0.0,))
    assert torch.equal(ds.image(1), truth) and len(failures) == 1  # retried, not substituted


N, C = 64, 16


def expected(rows: np.ndarray) -> np.ndarray:
    return (np.arange(C, dtype=np.float32)[None, :] + 1000 * rows[:, None] + 1).astype(np.float32)


def _fill_concurrently(directory: str, seed: int, start, done) -> None:  # type: ignore[no-untyped-def]
    """A writer and reader of one cache: store its half of the rows (and a few of the other's) in random
    order, flush often, check every flagged row."""
    start.wait()
    cache = CleanLogitCache(Path(directory), N, C)  # both processes create the same new file at once
    rng = np.random.default_rng(seed)
    mine = np.concatenate([np.arange(seed, N, 2), np.arange(1 - seed, 8, 2)])  # disjoint halves + 4 rows in common
    bad = 0
    for rows in np.array_split(rng.permutation(mine), 12):
        cache.store(torch.from_numpy(rows), torch.from_numpy(expected(rows)))
        cache.flush()
        flagged = np.flatnonzero(np.array(cache.filled[:]))  # a copy: the other process keeps writing
        bad += int((np.asarray(cache.logits[flagged]) != expected(flagged)).any(axis=1).sum())
    done.put(bad)


def test_two_processes_filling_one_new_cache_never_flag_a_row_without_its_logits(tmp_path):
    ctx = mp.get_context("fork")  # no interpreter start per process; the children use numpy and tiny tensors
    start, done = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_fill_concurrently, args=(str(tmp_path), seed, start, done)) for seed in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert [done.get(timeout=5), done.get(timeout=5)] == [0, 0]  # no reader ever saw a flag without its logits
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left
    final = CleanLogitCache(tmp_path, N, C)
    assert np.asarray(final.filled[:]).all()  # both halves landed in the one file (a writer left with a
    # replaced or orphaned file would leave its half unfilled here)
    assert np.array_equal(np.asarray(final.logits[:]), expected(np.arange(N)))


def test_flags_reach_the_disk_after_their_logits(tmp_path, monkeypatch):
    cache = CleanLogitCache(tmp_path, N, C)
    order = []
    monkeypatch.setattr(cache.logits, "flush", lambda: order.append(("logits", int(cache.filled[:].sum()))))
    monkeypatch.setattr(cache.filled, "flush", lambda: order.append(("flags", int(cache.filled[:].sum()))))
    rows = np.arange(5)
    cache.store(torch.from_numpy(rows), torch.from_numpy(expected(rows)))
    hit = cache.lookup(torch.from_numpy(rows))[1]
    assert hit.all() and int(cache.filled[:].sum()) == 0  # this process sees its rows; the disk flags wait
    cache.flush()
    assert order == [("logits", 0), ("flags", 5)]  # logits made durable while no flag was set, then the flags


def test_pending_flags_are_flushed_periodically(tmp_path, monkeypatch):
    cache = CleanLogitCache(tmp_path, N, C)
    monkeypatch.setattr(CleanLogitCache, "FLUSH_SECONDS", 0.0)  # every write is past due
    rows = np.arange(3)
    cache.store(torch.from_numpy(rows), torch.from_numpy(expected(rows)))
    cache.lookup(torch.from_numpy(rows))  # writes the pending rows, then flushes them (once: no recursion)
    assert int(np.asarray(CleanLogitCache(tmp_path, N, C).filled[:]).sum()) == 3  # another process sees them

"""Training utilities: the schedule, deterministic batches, run folders, atomic writes."""

import pytest
import torch

from mmt_ard.errors import ConfigError
from mmt_ard.io import atomic_torch_save
from mmt_ard.training import batch_indices, cosine_lr_factor


def test_cosine_schedule_with_linear_warmup():
    total, warm = 100, 10
    assert cosine_lr_factor(0, total, warm) == pytest.approx(0.1)
    assert cosine_lr_factor(9, total, warm) == pytest.approx(1.0)
    assert cosine_lr_factor(10, total, warm) == pytest.approx(1.0)
    assert cosine_lr_factor(55, total, warm) == pytest.approx(0.5)
    assert cosine_lr_factor(100, total, warm) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr_factor(100, total, warm, min_ratio=0.1) == pytest.approx(0.1)


def test_batches_depend_only_on_seed_and_step():
    a = [batch_indices(100, 16, seed=3, step=s) for s in range(12)]
    b = [batch_indices(100, 16, seed=3, step=s) for s in range(12)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    epoch0 = torch.cat(a[:6])
    assert len(set(epoch0.tolist())) == 96  # no repeats within an epoch
    assert not torch.equal(a[0], a[6])  # reshuffled each epoch
    assert not torch.equal(a[0], batch_indices(100, 16, seed=4, step=0))
    with pytest.raises(ConfigError, match="larger than the dataset"):
        batch_indices(10, 16, 0, 0)


def test_atomic_save_leaves_no_partial_file(tmp_path):
    target = tmp_path / "ck.pt"
    atomic_torch_save({"a": torch.ones(2)}, target)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"a": Boom()}, target)
    assert torch.load(target, weights_only=True)["a"].sum() == 2  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]

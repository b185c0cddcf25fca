"""Frozen models: no gradients, always eval mode, whatever ``.train()`` is called on a parent.

A frozen model may also be *held* in a lower precision (:func:`hold_in`): its weights are cast
once, its inputs are cast on the way in and its outputs back to float32 on the way out, and it
runs with autocast off. That is how bf16 pays for a frozen teacher. Under autocast the same model
would have its float32 weights cast again on every call (autocast's cast cache keeps only weights
that require grad), which measured 55 s against 1.3 s for a ViT-L-14 forward on an AMX CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode, restoring each submodule's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating tensor in it (nested tuples, lists, dicts) cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    return value


def hold_in(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast ``module``'s floating parameters and buffers to ``dtype`` once, in place.

    Floating inputs are cast to ``dtype`` before each call and floating outputs back to float32
    after it, so callers see float32 whatever the module holds. Use it for frozen modules only
    (a trained module needs float32 master weights), and call it with autocast off, as
    :class:`Frozen` does: autocast would cast some operations back up to float32.
    """
    if dtype == torch.float32 or getattr(module, "_held_dtype", None) == dtype:
        return module
    if getattr(module, "_held_dtype", None) is not None:
        raise ValueError(f"{type(module).__name__} is already held in {module._held_dtype}")
    module.to(dtype)
    module._held_dtype = dtype
    module.register_forward_pre_hook(
        lambda m, args, kwargs: (_cast_floats(args, dtype), _cast_floats(kwargs, dtype)), with_kwargs=True
    )
    module.register_forward_hook(lambda m, args, out: _cast_floats(out, torch.float32))
    return module


def held_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first floating parameter (float32 if it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


class Frozen(nn.Module):
    """Wraps a module so that it never trains: parameters need no grad and mode stays eval.

    ``Frozen(m)(x)`` is ``m(x)``; other attributes are reached through ``.module``. BatchNorm
    running statistics therefore never update, even inside a task put in train mode.

    With ``autocast=False`` every call runs with autocast off: for a module whose parts were put
    in a lower precision with :func:`hold_in`, so that they run as held and nothing is re-cast.
    """

    def __init__(self, module: nn.Module, autocast: bool = True) -> None:
        super().__init__()
        module.requires_grad_(False)
        self.module = module
        self.autocast = autocast
        super().train(False)

    def train(self, mode: bool = True) -> Frozen:
        return super().train(False)

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.run("__call__", *args, **kwargs)

    def run(self, method: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        """``self.module.<method>(*args, **kwargs)`` under this wrapper's autocast policy."""
        fn = getattr(self.module, method)
        if self.autocast:
            return fn(*args, **kwargs)
        device = next((t.device for t in args if isinstance(t, torch.Tensor)), torch.device("cpu"))
        with torch.autocast(device.type, enabled=False):
            return fn(*args, **kwargs)


def frozen_in(module: nn.Module, dtype: torch.dtype, heavy: nn.Module | None = None) -> Frozen:
    """``Frozen(module)`` with ``heavy`` (a part of it; default all of it) held in ``dtype``, autocast off.

    ``heavy`` is cast once (:func:`hold_in`; nothing to do for float32) and every call runs with
    autocast off, so the module computes in ``dtype`` whatever autocast the caller holds (a float32
    teacher inside a bf16 training step stays float32); the rest of ``module`` (e.g. a zero-shot
    head and the pixel normalization) stays float32.
    """
    hold_in(module if heavy is None else heavy, dtype)
    return Frozen(module, autocast=False)


def frozen_copy(module: nn.Module, dtype: torch.dtype = torch.float32, heavy: str = "") -> Frozen:
    """A frozen deep copy of ``module`` (e.g. the starting model ``f0`` of FARE and PMG-AFT).

    ``heavy`` names the submodule of the copy to hold in ``dtype`` ("" = all of it; see :func:`frozen_in`).
    """
    twin = copy.deepcopy(module)
    return frozen_in(twin, dtype, twin.get_submodule(heavy))

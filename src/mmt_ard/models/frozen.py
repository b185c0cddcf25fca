"""Frozen models: no gradients, always eval mode, whatever ``.train()`` is called on a parent."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

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


class Frozen(nn.Module):
    """Wraps a module so that it never trains: parameters need no grad and mode stays eval.

    ``Frozen(m)(x)`` is ``m(x)``; other attributes are reached through ``.module``. BatchNorm
    running statistics therefore never update, even inside a task put in train mode.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        module.requires_grad_(False)
        self.module = module
        super().train(False)

    def train(self, mode: bool = True) -> Frozen:  # noqa: ARG002 - the mode is ignored on purpose
        return super().train(False)

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.module(*args, **kwargs)


def frozen_copy(module: nn.Module) -> Frozen:
    """A frozen deep copy of ``module`` (e.g. the starting model ``f0`` of FARE and PMG-AFT)."""
    return Frozen(copy.deepcopy(module))

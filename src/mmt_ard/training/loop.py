"""The one training loop behind pretrain, finetune and distill.

A *task* (an ``nn.Module``) owns the models and the loss; the loop owns optimization,
precision, logging, periodic validation and checkpoints. A task provides::

    named_trainable_parameters() -> iterable of (name, parameter)
    training_step(batch, step) -> dict of named scalar terms, "loss" among them
    model_state() / load_model_state(state)      what a checkpoint saves of the models
    extra_state() / load_extra_state(state)      e.g. a weighting strategy's running state

``batches(step)`` returns the batch of a step (deterministic, see batches.py), so a run resumed
from step k sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from mmt_ard import distributed
from mmt_ard.data.pipeline import LoaderConfig, StepBatches
from mmt_ard.devices import resolve_device
from mmt_ard.errors import ConfigError, UserError
from mmt_ard.evaluation import EvalConfig, evaluate_model
from mmt_ard.io import atomic_write_json
from mmt_ard.models import PixelCLIP, TextHeadCache
from mmt_ard.precision import Precision, autocast, effective_precision
from mmt_ard.training.checkpoint import BestCheckpoint, load_training_state, save_training_state
from mmt_ard.training.guards import NonFiniteGuard, StopRequests
from mmt_ard.training.optim import OptimConfig, build_optimizer
from mmt_ard.training.progress import log_lines_above_bars
from mmt_ard.training.run import RunDir
from mmt_ard.training.timing import sync

log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    """How a run is driven. ``*_every=0`` means only at the end."""

    seed: int = 0
    device: str = "auto"
    precision: Precision = "fp32"  # bf16 falls back to fp32 where the device has no native bf16
    force_bf16: bool = False  # use bf16 even where it is emulated (slow)
    log_every: int = 10  # each log reads the device (a host sync): steps in between never wait on it
    eval_every: int = 0
    checkpoint_every: int = 0
    stop_after: int = 0  # checkpoint and stop at this step (a time-limited job); 0 = run to the end
    max_time: float = 0.0  # seconds of wall clock, then checkpoint and stop like stop_after; 0 = no limit
    max_nonfinite: int = 5  # non-finite steps in a row (each skipped) before the run stops; 0 = never stop
    select: str = ""  # validation metric to select the exported model by (e.g. sum_acc/2/255); "" = last step
    data: LoaderConfig = field(default_factory=LoaderConfig)  # workers etc. for data read from disk


@dataclass(frozen=True)
class ResolvedLoop:
    """What a :class:`LoopConfig` resolves to on this machine, returned beside it (the config is never changed)."""

    device: torch.device
    loop: LoopConfig  # a copy of the requested loop whose ``precision`` is what runs on ``device``

    @property
    def precision(self) -> Precision:
        return self.loop.precision


def resolve_loop(loop: LoopConfig) -> ResolvedLoop:
    """The device to train on and the loop as it runs there: bf16 falls back to fp32 where it is not
    native (see precision.py). ``loop`` itself is left as asked."""
    device = resolve_device(loop.device)
    return ResolvedLoop(device, replace(loop, precision=effective_precision(loop.precision, device, loop.force_bf16)))


def train(
    task: torch.nn.Module,
    batches: Callable[[int], Any],
    optim: OptimConfig,
    loop: LoopConfig,
    run: RunDir,
    resume: bool = False,
    validate: Callable[[int], dict[str, Any]] | None = None,
    desc: str = "train",
) -> dict[str, Any]:
    """Train ``task`` for ``optim.steps`` steps; returns the last logged and validation metrics."""
    device = resolve_device(loop.device)
    opt, sched = build_optimizer(task.named_trainable_parameters(), optim)  # type: ignore[operator]
    start = load_training_state(run.checkpoint, task, opt, sched) if resume else 0
    if resume:
        log.info("resuming %s at step %d of %d", run.path, start, optim.steps)
        run.metrics.resume_at(start)
    if loop.select and validate is None:
        raise ConfigError("loop.select needs validation during training; this command has none")
    best = BestCheckpoint(run.checkpoint.with_name("best.pt"), loop.select)
    params = [p for _, p in task.named_trainable_parameters()]  # type: ignore[operator]
    distributed.broadcast_parameters(params)
    guard = NonFiniteGuard(device, loop.max_nonfinite)
    last: dict[str, Any] = {}
    val: dict[str, Any] = {}
    window: dict[str, torch.Tensor] = {}  # sums of each term since the last log line
    window_steps = 0
    end = min(loop.stop_after, optim.steps) if loop.stop_after > 0 else optim.steps
    stop_reason = "stop_after" if end < optim.steps else None
    # leave=None: the finished bar stays, unless it sits under another (the demo's overall bar)
    bar = tqdm(range(start, end), desc=desc, initial=start, total=optim.steps, disable=None, leave=None)
    t_window = t_start = time.perf_counter()
    val_seconds = 0.0  # validation time, left out of train_seconds
    with StopRequests(loop.max_time) as requests, log_lines_above_bars():  # validation logs under the bar
        for step in bar:
            task.train()
            batch = batches(step)
            with autocast(device, loop.precision):
                terms = task.training_step(batch, step)  # type: ignore[operator]
            lr = sched.get_last_lr()[0]  # the rate this step uses
            terms["grad_norm"] = _optimizer_step(terms["loss"], params, opt, optim.grad_clip, guard)
            sched.step()
            done = step + 1
            for key, value in terms.items():
                value = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
                window[key] = window[key] + value if key in window else value
            window_steps += 1
            logs = done % max(loop.log_every, 1) == 0 or done == end
            if logs:
                window = distributed.mean_over_ranks(window)
                last = {k: float(v) / window_steps for k, v in window.items()}  # means over the interval
                seconds, t_window = time.perf_counter() - t_window, time.perf_counter()
                last.update(lr=lr, skipped_steps=guard.check(done, str(run.checkpoint)))
                last["images_per_s"] = _batch_size(batch) * distributed.world_size() * window_steps / max(seconds, 1e-9)
                window, window_steps = {}, 0
                run.metrics.log(done, last)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if loop.checkpoint_every and done % loop.checkpoint_every == 0:
                save_training_state(run.checkpoint, done, task, opt, sched)
            if validate is not None and loop.eval_every and done % loop.eval_every == 0 and done < optim.steps:
                sync(device)  # queued training work belongs to training time
                t_val = time.perf_counter()
                val = validate(done)
                # training seconds so far (this process, validation excluded): the efficiency curves' x axis
                run.metrics.log(done, {**val, "train_seconds": round(t_val - t_start - val_seconds, 3)}, prefix="val")
                best.update(done, val, task)
                val_seconds += time.perf_counter() - t_val
                t_window += time.perf_counter() - t_val  # throughput counts training time only
            reason = requests.reason()
            # every rank stops together; agreeing on it is a collective, so several processes do it when they log
            asked = (
                reason is not None
                if distributed.world_size() == 1
                else logs and distributed.sum_counts([reason is not None])[0]
            )
            if done < optim.steps and asked:
                end, stop_reason = done, reason or "another rank's stop request"
                break
    if start < end or not run.checkpoint.exists():
        save_training_state(run.checkpoint, end, task, opt, sched)
    if end < optim.steps:
        log.info(
            "stopped at step %d of %d (%s); checkpoint saved, continue with --resume", end, optim.steps, stop_reason
        )
        return {"train": last, "val": val, "stopped_at": end, "reason": stop_reason}
    if validate is not None:
        sync(device)
        t_val = time.perf_counter()
        val = validate(optim.steps)
        run.metrics.log(optim.steps, {**val, "train_seconds": round(t_val - t_start - val_seconds, 3)}, prefix="val")
        best.update(optim.steps, val, task)
    selected = best.restore(task, optim.steps)
    if selected:
        log.info(
            "exporting the model of step %d (best %s = %s on the validation set)",
            selected["step"],
            selected["metric"],
            selected["value"],
        )
        return {"train": last, "val": val, "selected": selected}
    return {"train": last, "val": val}


def _optimizer_step(
    loss: torch.Tensor, params: list[torch.Tensor], opt: torch.optim.Optimizer, clip: float, guard: NonFiniteGuard
) -> torch.Tensor:
    """Backward, clip, and a fused AdamW step that a non-finite loss or gradient skips on the device."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    distributed.average_gradients(params)  # data parallel: the student's gradient over all ranks
    grads = [p.grad for p in params if p.grad is not None]
    if clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.nn.utils.get_total_norm(grads) if grads else loss.new_zeros(())
    opt.found_inf = guard.found_inf(loss, norm)  # type: ignore[attr-defined]  # read by the fused step
    opt.step()
    del opt.found_inf  # type: ignore[attr-defined]
    return norm.detach()


def train_and_export(
    task: torch.nn.Module,
    batches: Callable[[int], Any],
    optim: OptimConfig,
    loop: LoopConfig,
    run: RunDir,
    resume: bool,
    validate: Callable[[int], dict[str, Any]] | None,
    export: Callable[[], None],
    summary: dict[str, Any],
    desc: str,
) -> dict[str, Any]:
    """:func:`train`, then ``export()`` and ``summary.json`` unless the run stopped early."""
    try:
        metrics = _train_or_explain(task, batches, optim, loop, run, resume, validate, desc)
        if "stopped_at" not in metrics:
            export()
    finally:
        run.close()
    if "stopped_at" in metrics:
        return metrics
    summary = {**summary, **metrics}
    atomic_write_json(run.path / "summary.json", summary)
    return summary


def _train_or_explain(task, batches, optim, loop, run, resume, validate, desc):  # type: ignore[no-untyped-def]
    """:func:`train`, with a collective that failed because another process died made a clear error."""
    try:
        return train(task, batches, optim, loop, run, resume=resume, validate=validate, desc=desc)
    except Exception as e:
        if not distributed.peer_failure(e):
            raise
        raise UserError(
            f"rank {distributed.rank()}: another process of this run failed or stopped answering "
            f"({type(e).__name__}); the last checkpoint ({run.checkpoint}) is intact: rerun with --resume "
            "(with any number of processes)"
        ) from None


def labeled_batches(
    ds: Any, batch_size: int, seed: int, device: torch.device, data: LoaderConfig | None = None
) -> Callable[[int], Any]:
    """``step -> (images, labels)`` on ``device``: this rank's part of the global batch (see data/pipeline.py)."""
    return StepBatches(ds, batch_size, seed, device, data)


def validation_metrics(
    clip: PixelCLIP, cfg: EvalConfig, heads: TextHeadCache, device: torch.device, name: str = "val"
) -> dict[str, float]:
    """One validation during training, as flat scalars for metrics.jsonl.

    The sanity suite (evaluation/sanity.py: a PGD with twice the steps, a large-eps attack, a loss
    trace) is left out: its flags are not part of the flat metrics, so it would only cost time at
    every validation. ``mmt-ard evaluate`` runs it on the finished model.
    """
    # no AutoAttack state: the model changes between validations, a state file would resume another model's flags
    cfg = replace(cfg, sanity=False, state_dir=None)
    return evaluate_model(clip, cfg, heads=heads, name=name, device=device).flat()  # racc/2/255, ...


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0]) if hasattr(first, "shape") else 0

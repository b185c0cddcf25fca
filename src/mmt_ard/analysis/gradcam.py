"""Grad-CAM maps of zero-shot classifiers: the paper's Figure 3 and Table 5 (METHOD.md section 5).

A map is Grad-CAM (``pytorch-grad-cam``) for the *true* class's zero-shot logit, taken at

- ViTs (open_clip ``VisionTransformer``): the pre-attention norm ``ln_1`` of the last block; its
  tokens are reshaped to the patch grid, class token dropped;
- ResNets (open_clip ``ModifiedResNet``): the last block of ``layer4`` (the last conv stage).

Maps are resized to the input resolution (by the package) and scaled to [0, 255]. Grad-CAM
min-max normalizes each map, so a map is a *where*, not a *how much*: a map that is constant
(e.g. a 1 x 1 last stage) comes out all zero. Which input each model sees is the caller's choice:
METHOD.md 5 maps the adversarial teacher on x' and every other model on x (:func:`model_maps`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from mmt_ard.attacks import OBJECTIVES, PGDConfig, eval_mode, pgd
from mmt_ard.errors import UserError

log = logging.getLogger(__name__)
ReshapeFn = Callable[[torch.Tensor], torch.Tensor]
TOWERS = (VisionTransformer, ModifiedResNet)


def vision_tower(classifier: nn.Module) -> nn.Module:
    """The one open_clip vision tower inside ``classifier`` (a ZeroShotClassifier, PixelCLIP...)."""
    towers = [m for m in classifier.modules() if isinstance(m, TOWERS)]
    if len(towers) != 1:
        found = "no" if not towers else f"{len(towers)}"
        raise UserError(
            f"Grad-CAM needs exactly one open_clip VisionTransformer or ModifiedResNet in the model; found {found}. "
            "Other vision towers (timm, Hugging Face) have no target layer defined here"
        )
    return towers[0]


def vit_reshape(grid: tuple[int, int], batch_first: bool = True) -> ReshapeFn:
    """Tokens of an open_clip ViT block -> (N, D, rows, cols) patch maps.

    open_clip prepends one class token and flattens ``conv1``'s (rows, cols) output row-major;
    a transformer built with ``batch_first=False`` runs its blocks on (L, N, D) tokens.
    """
    rows, cols = grid

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if not batch_first:
            tokens = tokens.transpose(0, 1)  # (L, N, D) -> (N, L, D)
        patches = tokens[:, 1:, :]  # (N, rows * cols, D): the class token dropped
        n, length, dim = patches.shape
        if length != rows * cols:
            raise UserError(f"a ViT block has {length} patch tokens but the grid is {rows} x {cols}")
        return patches.reshape(n, rows, cols, dim).permute(0, 3, 1, 2)  # (N, D, rows, cols)

    return reshape


def target_layer(classifier: nn.Module) -> tuple[nn.Module, ReshapeFn | None]:
    """The Grad-CAM layer of ``classifier``'s vision tower and the reshape its output needs."""
    tower = vision_tower(classifier)
    if isinstance(tower, VisionTransformer):
        batch_first = bool(getattr(tower.transformer, "batch_first", True))
        grid = tuple(int(g) for g in tower.grid_size)
        return tower.transformer.resblocks[-1].ln_1, vit_reshape((grid[0], grid[1]), batch_first)
    return _resnet_stage(tower), None


def _resnet_stage(tower: nn.Module) -> nn.Module:
    """The last block of layer4, as usual; at a small input layer4 is 1 x 1 (a constant, all-zero map),
    so the deepest stage whose output is at least 4 x 4 is taken instead (layer2 of a 32 px ResNet)."""
    size = tower.image_size if isinstance(tower.image_size, int) else tower.image_size[0]
    sides: dict[str, int] = {}
    stages = ("layer4", "layer3", "layer2")
    handles = [
        getattr(tower, n).register_forward_hook(lambda m, i, o, n=n: sides.__setitem__(n, min(o.shape[-2:])))
        for n in stages
    ]
    p = next(tower.parameters())
    try:
        with eval_mode(tower), torch.no_grad():  # BatchNorm statistics untouched
            tower(torch.zeros(1, 3, int(size), int(size), device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    for name in stages:
        if sides.get(name, 0) >= 4:
            if name != "layer4":
                log.info(
                    "Grad-CAM of a %d px ResNet on %s (%d x %d): layer4 is %d x %d",
                    int(size),
                    name,
                    sides[name],
                    sides[name],
                    sides["layer4"],
                    sides["layer4"],
                )
            return getattr(tower, name)[-1]
    log.warning("every stage of this %d px ResNet is below 4 x 4: its Grad-CAM maps carry little location", int(size))
    return tower.layer4[-1]


@contextmanager
def _grad_cam(model: nn.Module, layer: nn.Module, reshape: ReshapeFn | None) -> Iterator[GradCAM]:
    """A GradCAM whose hooks are removed on exit, errors included.

    Not the package's own ``with``: its ``__exit__`` swallows an ``IndexError`` (prints it), which
    would turn an out-of-range label into a silently missing result.
    """
    cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape)
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()
        cam.outputs = None  # drop the retained graph


@contextmanager
def _kept_gradients(model: nn.Module) -> Iterator[None]:
    """Restore every parameter's ``.grad`` (Grad-CAM zeroes and accumulates them)."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, grad in saved:
            p.grad = grad


def _labels(labels: torch.Tensor | Sequence[int], n: int, classifier: nn.Module) -> list[int]:
    values = [int(y) for y in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    if len(values) != n:
        raise UserError(f"got {n} images but {len(values)} labels")
    classes = getattr(classifier, "num_classes", None)
    if classes is not None and any(not 0 <= y < classes for y in values):
        raise UserError(f"labels must be class indices in [0, {classes}); got {sorted(set(values))}")
    return values


def cam_maps(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    batch_size: int = 32,
) -> np.ndarray:
    """Grad-CAM of the true class's logit: (N, H, W) float32 in [0, 255] at the input resolution.

    ``images`` are [0, 1] pixels (N, 3, H, W). The model runs in eval mode (each submodule's mode
    restored after), float32 with autocast off; its ``requires_grad`` flags and ``.grad`` are
    left as they were, and no hook stays behind. Gradients reach the target layer through the
    input, so frozen teachers work too.
    """
    if images.dim() != 4:
        raise UserError(f"images must be (N, 3, H, W); got shape {tuple(images.shape)}")
    targets = [ClassifierOutputTarget(y) for y in _labels(labels, images.shape[0], classifier)]
    layer, reshape = target_layer(classifier)
    device = next(classifier.parameters()).device
    out = []
    with (
        eval_mode(classifier),
        _kept_gradients(classifier),
        torch.enable_grad(),
        torch.autocast(device.type, enabled=False),
        _grad_cam(classifier, layer, reshape) as cam,
    ):
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].detach().to(device, torch.float32).requires_grad_(True)
            out.append(cam(input_tensor=x, targets=targets[i : i + batch_size]))
    return (np.concatenate(out).astype(np.float32) * 255.0).clip(0.0, 255.0)


def adversarial_examples(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float = 2 / 255,
    steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD on the cross-entropy of ``classifier``'s logits (the project's one PGD), float32.

    The x' for the adversarial teacher's map; ``step_size=None`` is ``eps / 4``, random start on.
    """
    cfg = PGDConfig(norm="linf", eps=eps, steps=steps, step_size=step_size, random_start=True)
    x = images.detach().float()
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        objective = OBJECTIVES.get("ce")(classifier, x, labels=labels)
        return pgd(classifier, x, objective, cfg, precision="fp32", generator=generator)


def model_maps(
    classifiers: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    adv_images: torch.Tensor | None = None,
    on_adversarial: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Figure 3's maps: every model on ``images`` except those named in ``on_adversarial`` (x').

    METHOD.md 5: the adversarial teacher is mapped on x', the clean teacher and the students on x.
    """
    unknown = sorted(set(on_adversarial) - set(classifiers))
    if unknown:
        raise UserError(f"on_adversarial names models that are not given: {unknown}")
    if on_adversarial and (adv_images is None or adv_images.shape != images.shape):
        raise UserError("models mapped on x' need adv_images of the same shape as images")
    maps = {}
    for name, model in classifiers.items():
        x = adv_images if name in on_adversarial and adv_images is not None else images
        maps[name] = cam_maps(model, x, labels)
    return maps


def l2_table(
    maps: Mapping[str, np.ndarray], students: Sequence[str], teachers: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Table 5: ``table[s][t]`` = mean over images of ``||map_s - map_t||_2`` over pixels."""
    missing = sorted((set(students) | set(teachers)) - set(maps))
    if missing:
        raise UserError(f"no maps for {missing}; have {sorted(maps)}")
    table: dict[str, dict[str, float]] = {}
    for s in students:
        table[s] = {}
        for t in teachers:
            a, b = np.asarray(maps[s], np.float64), np.asarray(maps[t], np.float64)
            if a.shape != b.shape:
                raise UserError(f"maps of {s!r} {a.shape} and {t!r} {b.shape} differ in shape")
            per_image = np.sqrt(((a - b) ** 2).reshape(a.shape[0], -1).sum(axis=1))  # (N,)
            table[s][t] = float(per_image.mean())
    return table


def save_grid(
    images: torch.Tensor,
    maps: Mapping[str, np.ndarray],
    path: str | Path,
    labels: torch.Tensor | Sequence[int] | None = None,
    classnames: Sequence[str] | None = None,
    alpha: float = 0.5,
) -> Path:
    """Figure 3: one row per image, the image then each model's map over it (titles = names).

    Maps are drawn over the clean image (x' differs from it by a few 1/255 at most).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pics = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)
    n, names = pics.shape[0], list(maps)
    fig = Figure(figsize=(2.0 * (1 + len(names)), 2.0 * n))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1 + len(names), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(pics[i])
        if labels is not None:
            y = int(labels[i])
            axes[i, 0].set_ylabel(classnames[y] if classnames is not None else str(y))
        for j, name in enumerate(names, start=1):
            axes[i, j].imshow(pics[i])
            axes[i, j].imshow(maps[name][i], cmap="jet", alpha=alpha, vmin=0.0, vmax=255.0)
    for j, title in enumerate(["image", *names]):
        axes[0, j].set_title(title, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out

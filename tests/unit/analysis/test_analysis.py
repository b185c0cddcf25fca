"""The paper's analyses (METHOD.md 5): Grad-CAM maps, their L2 table, and the Section 4 bound.

Grad-CAM is checked on hand-built open_clip towers that see colour: class c's logit is the mean of
colour channel c over the image, so its map must light the patch of that colour and no other.
The bound is checked on linear "models" ``z = W x + b``, whose L-inf -> L-inf Lipschitz constant
is exactly the largest row L1 norm of ``W``.
"""

import math

import numpy as np
import pytest
import torch
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from torch import nn

from mmt_ard.analysis import (
    NOTE,
    BoundOptions,
    adversarial_examples,
    bound_radii,
    cam_maps,
    l2_table,
    lipschitz_estimate,
    model_maps,
    plot_distribution,
    save_grid,
    summarize,
    target_layer,
)
from mmt_ard.distill import StrategyConfig
from mmt_ard.errors import ConfigError, UserError
from tests.conftest import tiny_classifier

RED, GREEN = (slice(0, 8), slice(24, 32)), (slice(16, 24), slice(8, 16))  # patches (0, 3) and (2, 1)


class Logits(nn.Module):
    """A classifier around a bare open_clip vision tower: the tower's output are the logits."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * self.visual(x)


def colour_vit(batch_first: bool = True) -> Logits:
    """A real open_clip ViT (4 x 4 patches) set by hand: token channel c = mean of colour c in the patch,
    uniform attention pools the patches into the class token, output c = that channel."""
    v = VisionTransformer(image_size=32, patch_size=8, width=4, layers=1, heads=1, mlp_ratio=1.0, output_dim=3)
    with torch.no_grad():
        for p in v.parameters():
            p.zero_()
        for c in range(3):
            v.conv1.weight[c, c] = 1 / 64
        block = v.transformer.resblocks[-1]
        for norm in (v.ln_pre, block.ln_1, block.ln_2):
            norm.weight.fill_(1.0)
        block.attn.in_proj_weight[8:12] = torch.eye(4)  # q = k = 0 (uniform attention), v = identity
        block.attn.out_proj.weight.copy_(torch.eye(4))
        v.proj.copy_(torch.eye(4)[:, :3])
    v.ln_post = nn.Identity()
    if not batch_first:  # the (L, N, D) layout older open_clip models run in
        v.transformer.batch_first = False
        block.attn.batch_first = False
    return Logits(v)


def colour_resnet() -> Logits:
    """A real open_clip ModifiedResNet whose last stage is one hand-set conv (colour means per 8 x 8 cell)."""
    r = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=3, heads=1, image_size=32, width=8)
    for name in (
        "conv1",
        "bn1",
        "act1",
        "conv2",
        "bn2",
        "act2",
        "conv3",
        "bn3",
        "act3",
        "avgpool",
        "layer1",
        "layer2",
        "layer3",
    ):
        setattr(r, name, nn.Identity())
    conv = nn.Conv2d(3, 3, kernel_size=8, stride=8, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c] = 1 / 64
    r.layer4 = nn.Sequential(conv)
    r.attnpool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Logits(r)


def scene(n: int = 2) -> torch.Tensor:
    x = torch.zeros(n, 3, 32, 32)
    x[:, 0, RED[0], RED[1]] = 1.0
    x[:, 1, GREEN[0], GREEN[1]] = 1.0
    return x


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(
    "build", [colour_vit, lambda: colour_vit(batch_first=False), colour_resnet], ids=["vit", "vit-lnd", "resnet"]
)
def test_the_map_lights_the_true_class_region_only(build):
    """Catches: a wrong target class (argmax, a fixed class) and a wrong token reshape or layout."""
    model = build()
    maps = cam_maps(model, scene(), [0, 1])  # red, green
    for i, (own, other) in enumerate([(RED, GREEN), (GREEN, RED)]):
        m = maps[i]
        assert m[own].mean() > 50 and m[other].mean() < 1, (m[own].mean(), m[other].mean())
        peak = np.unravel_index(m.argmax(), m.shape)
        assert own[0].start <= peak[0] < own[0].stop and own[1].start <= peak[1] < own[1].stop
    swapped = cam_maps(model, scene(), torch.tensor([1, 0]))
    np.testing.assert_allclose(swapped, maps[::-1], atol=1e-3)


def test_target_layers_of_the_builtin_archs():
    vit, rn = tiny_classifier("mmt-vit-s"), tiny_classifier("mmt-rn-s")
    layer, reshape = target_layer(vit)
    assert layer is vit.clip.visual.transformer.resblocks[-1].ln_1
    tokens = torch.arange(2 * 17 * 5, dtype=torch.float32).view(2, 17, 5)  # (N, 1 + 4 x 4, D)
    grid = reshape(tokens)
    assert grid.shape == (2, 5, 4, 4)
    assert torch.equal(grid[1, :, 2, 3], tokens[1, 1 + 2 * 4 + 3])  # row-major patches after the class token
    layer, reshape = target_layer(rn)
    # 32 px: layer4 is 1 x 1 and layer3 2 x 2 (constant maps); layer2 is the deepest 4 x 4 stage
    assert layer is rn.clip.visual.layer2[-1] and reshape is None
    stats = [m.running_mean.clone() for m in rn.modules() if isinstance(m, nn.BatchNorm2d)]
    rn.train()
    target_layer(rn)  # probing the stage sizes leaves BatchNorm statistics and the mode alone
    assert rn.training and all(
        torch.equal(a, m.running_mean)
        for a, m in zip(stats, [m for m in rn.modules() if isinstance(m, nn.BatchNorm2d)])
    )
    with pytest.raises(UserError, match="VisionTransformer or ModifiedResNet"):
        target_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))


@pytest.mark.parametrize("arch", ["mmt-vit-s", "mmt-rn-s"])
def test_builtin_archs_end_to_end_leave_the_model_as_it_was(arch, images):
    clf = tiny_classifier(arch).train()
    first = next(clf.parameters())
    first.grad = torch.full_like(first, 7.0)
    flags = [p.requires_grad for p in clf.parameters()]
    before = hooks(clf)
    maps = cam_maps(clf, images, torch.tensor([0, 1, 2, 3, 0, 1]), batch_size=4)
    assert maps.shape == (6, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 255
    assert (maps.reshape(6, -1).max(1) > 0).all()  # every map locates something (not a 1 x 1 stage's zeros)
    assert clf.training and all(m.training for m in clf.modules())
    assert [p.requires_grad for p in clf.parameters()] == flags
    assert torch.equal(first.grad, torch.full_like(first, 7.0))
    assert all(p.grad is None for p in list(clf.parameters())[1:])
    assert hooks(clf) == before == 0
    clf(images)  # a second forward: nothing recorded, nothing hooked
    assert hooks(clf) == 0


def test_frozen_teachers_get_maps_and_stay_frozen():
    model = colour_vit().requires_grad_(False)
    maps = cam_maps(model, scene(), [0, 1])
    assert maps[0][RED].mean() > 50
    assert not any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_bad_labels_are_refused():
    with pytest.raises(UserError, match="labels"):
        cam_maps(tiny_classifier(), torch.rand(2, 3, 32, 32), [0])
    with pytest.raises(UserError, match="class indices"):
        cam_maps(tiny_classifier(), torch.rand(2, 3, 32, 32), [0, 9])


def test_l2_table_is_the_mean_per_image_norm():
    a = np.zeros((2, 2, 2), np.float32)
    b = a.copy()
    b[0] = 3.0  # image 0: ||a - b|| = sqrt(4 * 9) = 6; image 1: 0
    maps = {"s": a, "t": b, "u": a.copy()}
    table = l2_table(maps, ["s", "u"], ["t", "u"])
    assert table["s"]["t"] == pytest.approx(3.0)
    assert table["s"]["u"] == 0.0 and table["u"]["u"] == 0.0
    assert l2_table(maps, ["t"], ["s"])["t"]["s"] == table["s"]["t"]  # symmetric
    with pytest.raises(UserError, match="no maps"):
        l2_table(maps, ["s"], ["missing"])


def test_the_adversarial_teacher_is_mapped_on_x_adv():
    model = colour_vit()
    x, x_adv = scene(), scene().flip(-1)  # x' has the patches mirrored
    maps = model_maps({"teacher_adv": model, "teacher_clean": model}, x, [0, 1], x_adv, on_adversarial=["teacher_adv"])
    np.testing.assert_allclose(maps["teacher_adv"], cam_maps(model, x_adv, [0, 1]))
    np.testing.assert_allclose(maps["teacher_clean"], cam_maps(model, x, [0, 1]))
    with pytest.raises(UserError, match="adv_images"):
        model_maps({"teacher_adv": model}, x, [0, 1], on_adversarial=["teacher_adv"])


def test_adversarial_examples_stay_in_the_ball_and_raise_the_loss(images):
    clf = tiny_classifier().eval()
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    x_adv = adversarial_examples(clf, images, y, eps=4 / 255, steps=5, generator=torch.Generator().manual_seed(0))
    assert (x_adv - images).abs().max() <= 4 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        assert ce(clf(x_adv), y) > ce(clf(images), y)


def test_save_grid_writes_one_row_per_image(tmp_path):
    import matplotlib.image

    maps = cam_maps(colour_vit(), scene(), [0, 1])
    path = save_grid(scene(), {"a": maps, "b": maps}, tmp_path / "fig" / "grid.png", [0, 1], ["red", "green", "blue"])
    h, w = matplotlib.image.imread(path).shape[:2]
    assert (h, w) == (400, 600)  # 2 rows x (image + 2 maps), 2 inches at 100 dpi each


# ---- the Section 4 bound ----


class Linear(nn.Module):
    """``z = W vec(x) + b``: its L-inf -> per-logit Lipschitz constant is ``max_c ||W_c||_1``."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def linear(seed: int, scale: float = 1.0, classes: int = 3) -> Linear:
    g = torch.Generator().manual_seed(seed)
    return Linear(scale * torch.randn(classes, 48, generator=g) / 4, torch.randn(classes, generator=g))


def inputs(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    x = 0.25 + 0.5 * torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(3))  # far from 0 and 1
    return x, torch.tensor([0, 1, 2, 0, 1])[:n]


def margin(z: torch.Tensor, y: int) -> float:
    return float(z[y] - max(z[k] for k in range(len(z)) if k != y))


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def hand_radius(student: Linear, clean: Linear, adv: Linear, x: torch.Tensor, y: torch.Tensor, x_w: torch.Tensor):
    """Eq. (7) written out, DIW weights (slope 5, offset 1) from the adversarial teacher on ``x_w``."""
    lip = float(student.w.detach().double().abs().sum(1).max())
    rows = []
    with torch.no_grad():
        zs, zc, za, zw = (m(v).double() for m, v in ((student, x), (clean, x), (adv, x), (adv, x_w)))
    for i in range(len(y)):
        rho = float(zw[i].softmax(-1).max()) / (float(zc[i].softmax(-1).max()) + 1e-5)
        w_adv = sigmoid(5.0 * (rho - 1.0))
        w_clean = 1 - w_adv
        ens = w_adv * za[i] + w_clean * zc[i]
        delta = float((zs[i] - ens).abs().max())
        g_adv, g_clean = margin(za[i], int(y[i])), margin(zc[i], int(y[i]))
        radius = (w_adv * g_adv + w_clean * g_clean - 2 * delta) / (2 * lip)
        rows.append(
            {
                "w_adv": w_adv,
                "w_clean": w_clean,
                "g_adv": g_adv,
                "g_clean": g_clean,
                "delta": delta,
                "l2": float((zs[i] - ens).norm()),
                "radius": radius,
            }
        )
    return rows, lip


OPTS = BoundOptions(lipschitz_classes=3, lipschitz_steps=4)  # all 3 classes probed: L_S is exact for linear maps


@pytest.mark.parametrize("with_adv_images", [False, True])
def test_radius_equals_the_hand_computation(with_adv_images):
    """Catches: a missing factor 2, Delta in L2 instead of L-inf, the weights swapped between teachers."""
    student, clean, adv = linear(0), linear(1, scale=3.0), linear(2)
    x, y = inputs()
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))) if with_adv_images else None
    out = bound_radii(student, clean, adv, x, y, OPTS, adv_images=x_adv)
    rows, lip = hand_radius(student, clean, adv, x, y, x if x_adv is None else x_adv)
    assert out["note"] == NOTE and "not a certificate" in out["note"]
    np.testing.assert_allclose(out["lipschitz"], lip, rtol=1e-5)
    for key, hand in [
        ("radius", "radius"),
        ("delta", "delta"),
        ("w_adv", "w_adv"),
        ("margin_adv", "g_adv"),
        ("margin_clean", "g_clean"),
    ]:
        np.testing.assert_allclose(out[key], [r[hand] for r in rows], rtol=1e-4, atol=1e-5)
    # the test has power against each mutation
    assert max(abs((r["w_adv"] - r["w_clean"]) * (r["g_adv"] - r["g_clean"])) for r in rows) > 0.5  # a swap shows
    assert max(r["l2"] - r["delta"] for r in rows) > 0.1  # L2 in place of L-inf shows


def test_the_parts_the_theorem_proves_at_x_hold():
    """Gamma_ens >= sum w gamma (convexity of max) and student margin >= Gamma_ens - 2 Delta."""
    out = bound_radii(linear(0), linear(1, 3.0), linear(2), *inputs(), OPTS)
    assert (out["ensemble_margin"] >= out["avg_margin"] - 1e-6).all()
    assert (out["student_margin"] >= out["ensemble_margin"] - 2 * out["delta"] - 1e-6).all()


def test_a_positive_radius_is_a_real_guarantee_when_l_s_is_exact():
    """For a linear student the estimate is exact, so PGD inside the radius must not flip it."""
    student = linear(0)
    x, _ = inputs()
    with torch.no_grad():
        y = student(x).argmax(-1)  # clean-correct samples
    out = bound_radii(student, student, student, x, y, OPTS)  # teachers = student: Delta = 0
    assert np.allclose(out["delta"], 0, atol=1e-5) and (out["radius"] > 0).all()
    for i in range(len(y)):
        eps = 0.99 * float(out["radius"][i])
        x_adv = adversarial_examples(student, x[i : i + 1], y[i : i + 1], eps=min(eps, 1.0), steps=20)
        assert student(x_adv).argmax(-1).item() == y[i].item()


@pytest.mark.parametrize("seed", range(4))
def test_the_lipschitz_estimate_approaches_the_true_constant_from_below(seed):
    x, y = inputs()
    model = linear(10 + seed, classes=5)
    with torch.no_grad():
        model.w[:, ::3] = 0  # pixels no logit sees: PGD leaves them, ||d||_inf must not average them in
    true = float(model.w.detach().abs().sum(1).max())
    all_classes = lipschitz_estimate(model, x, y, BoundOptions(lipschitz_classes=5, lipschitz_steps=2))
    assert torch.allclose(all_classes, torch.full_like(all_classes, true), rtol=1e-4)
    few = lipschitz_estimate(model, x, y, BoundOptions(lipschitz_classes=1, lipschitz_steps=2))
    assert (few <= true * (1 + 1e-5)).all() and (few > 0).all()
    bent = nn.Sequential(model, nn.Tanh())  # tanh is 1-Lipschitz: the constant is at most the linear one
    est = lipschitz_estimate(bent, x, y, BoundOptions(lipschitz_classes=5))
    assert (est <= true * (1 + 1e-5)).all() and (est > 0).all()


def test_non_convex_or_history_dependent_weights_are_refused():
    x, y = inputs()
    with pytest.raises(ConfigError, match="not convex"):
        bound_radii(linear(0), linear(1), linear(2), x, y, BoundOptions(strategy=StrategyConfig(name="released-code")))
    with pytest.raises(ConfigError, match="training history"):
        bound_radii(linear(0), linear(1), linear(2), x, y, BoundOptions(strategy=StrategyConfig(name="adaptive-norm")))
    out = bound_radii(linear(0), linear(1), linear(2), x, y, BoundOptions(strategy=StrategyConfig(name="adv-only")))
    assert (out["w_adv"] == 1).all() and (out["w_clean"] == 0).all()


def test_summary_in_pixels_and_in_1_255_with_the_note():
    radii = np.array([-1.0, 1.0, 2.0, 3.0, np.inf]) / 255
    s = summarize({"radius": radii, "delta": np.ones(5), "avg_margin": np.zeros(5), "lipschitz": np.ones(5)})
    assert s["n"] == 5 and s["non_finite"] == 1 and s["fraction_positive"] == pytest.approx(0.8)
    assert s["mean_255"] == pytest.approx(1.25) and s["quantiles_255"]["median"] == pytest.approx(1.5)
    assert s["mean"] == pytest.approx(1.25 / 255) and s["mean_delta"] == 1.0
    assert s["note"] == NOTE


def test_builtin_archs_end_to_end_and_the_plot(tmp_path, images):
    student, clean, adv = (tiny_classifier(a, seed=s) for a, s in (("mmt-vit-s", 0), ("mmt-rn-s", 1), ("mmt-vit-s", 2)))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    out = bound_radii(student, clean, adv, images, y, BoundOptions(lipschitz_steps=2, batch_size=4))
    assert all(out[k].shape == (6,) for k in ("radius", "delta", "lipschitz", "w_adv", "margin_adv"))
    assert np.isfinite(out["radius"]).all() and (out["lipschitz"] > 0).all()
    path = plot_distribution(out, tmp_path / "radii.png")
    assert path.is_file() and path.stat().st_size > 0

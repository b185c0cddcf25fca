"""The analyses the paper reports (METHOD.md section 5): Grad-CAM maps and the Section 4 bound."""

from mmt_ard.analysis.bound import NOTE, BoundOptions, bound_radii, lipschitz_estimate, plot_distribution, summarize
from mmt_ard.analysis.gradcam import (
    adversarial_examples,
    cam_maps,
    l2_table,
    model_maps,
    save_grid,
    target_layer,
)

__all__ = [
    "NOTE",
    "BoundOptions",
    "adversarial_examples",
    "bound_radii",
    "cam_maps",
    "l2_table",
    "lipschitz_estimate",
    "model_maps",
    "plot_distribution",
    "save_grid",
    "summarize",
    "target_layer",
]

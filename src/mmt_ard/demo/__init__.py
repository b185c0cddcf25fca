"""``mmt-ard demo``: the paper's pipeline on the built-in world, offline, on a CPU.

1. pretrain CLIPs (teacher-size ViT, student-size ViT and ResNet) on image-caption pairs;
2. fine-tune the teacher: clean (CE) -> clean teacher, PMG-AFT -> adversarial teacher;
3. distill ViT and ResNet students with the single-teacher baseline (``adv-only``, no
   cross-modal term) and with MMT-ARD (``confidence``, default gamma), plus a LoRA ViT student with MMT-ARD;
4. evaluate everything at eps 1-4/255 with PGD and then APGD-CE + APGD-T under their own names with
   CPU-sized settings (the *reduced chain*, fewer iterations and target classes: not AutoAttack) on
   the samples PGD left, with the sanity checks, and zero-shot;
5. measure once how far the reduced chain is from the ``autoattack`` protocol: both on the MMT-ARD
   students, on ``gap_limit`` test images at 2 and 4/255 (``protocol-gap.json``); write
   ``results.json``, ``curves.png``, ``demo-run.json`` and the page of :func:`mmt_ard.reporting.write_report`
   (``report/report.html``, ``report/report.md``, and the same Markdown as ``report.md``).

Each stage is a normal run folder under the output; a stage whose folder holds a finished run
with the same config is reused (``force`` redoes it).

Modules: ``plan`` (:class:`DemoPlan`, read from the YAML presets in ``presets/``), ``progress`` (the
terminal's overall bar), ``stages`` (the training runs, shared with the ``builtin`` experiment preset),
``evaluate``, ``curves`` (``curves.png``) and ``run`` (:func:`run_demo`: the stages, the evaluations and
the page).
"""

from mmt_ard.demo.plan import REDUCED_CHAIN, DemoPlan, StudentRecipe
from mmt_ard.demo.run import run_demo
from mmt_ard.demo.stages import Stage, plan_stages, run_stages, student_recipe, world_stages

__all__ = [
    "REDUCED_CHAIN",
    "DemoPlan",
    "Stage",
    "StudentRecipe",
    "plan_stages",
    "run_demo",
    "run_stages",
    "student_recipe",
    "world_stages",
]

"""``mmt-ard bench``: the reference step, the same-loss check, FLOP counting, the report and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from mmt_ard.bench import (
    BenchConfig,
    BenchModels,
    RandomImages,
    ReferenceStep,
    build_reference,
    build_task,
    compare_losses,
    count_flops,
    gpu_check,
    loss_check,
    matmul_rate,
)
from mmt_ard.bench import run as bench_run
from mmt_ard.bench.reference import ReleasedCodeStep, released_recipe
from mmt_ard.cli.main import main
from mmt_ard.distill.fast import FastPathConfig
from mmt_ard.distill.task import InnerAttackConfig, LossConfig
from mmt_ard.errors import ConfigError

CPU = torch.device("cpu")
# the gate of the same-loss check: warm cache and fused views (channels-last may flip PGD steps, see results.py)
FAST = FastPathConfig(channels_last=False)


def make_case(student: str = "mmt-vit-s", strategy: str = "confidence", objective: str = "embedding-l2", steps=2):
    models = BenchModels.build("mmt-vit-t", student, 24, CPU)
    data = RandomImages(8, 32, 24, 4, CPU)
    attack = InnerAttackConfig(objective=objective, steps=steps)  # type: ignore[arg-type]
    loss = LossConfig()
    loss.strategy.name = strategy
    return models, data, attack, loss


@pytest.mark.parametrize(
    "student,strategy,objective",
    [
        ("mmt-vit-s", "confidence", "embedding-l2"),
        ("mmt-vit-s", "adv-only", "embedding-l2"),
        ("mmt-rn-s", "confidence", "embedding-l2"),
        ("mmt-rn-s", "adv-only", "kl-clean-teacher"),
    ],
)
def test_optimized_and_reference_step_give_the_same_loss(tmp_path, student, strategy, objective):
    models, data, attack, loss = make_case(student, strategy, objective)
    task = build_task(models, attack, loss, "fp32", FAST, data, tmp_path)
    check = loss_check(task, build_reference(models, attack, loss), data, step=0)
    assert check.passed, check
    assert check.x_adv_differing == 0  # the same random start and PGD: the same x'
    assert task.clean_cache is not None and task.clean_cache.misses == 0 and task.clean_cache.hits > 0  # warm


def test_the_released_code_step_is_the_task_configured_as_the_released_code(tmp_path):
    """Momentum KL attack and the 50/5 cosine weighting, written plainly, equal the task's released-code
    configuration: catches a dropped momentum, a swapped 50/5, weights without the 1/C, cosines of the
    wrong teacher or of the predicted instead of the true class."""
    models, data, attack, loss = make_case(steps=3)
    attack, loss = released_recipe(attack, loss)
    assert attack.momentum == 0.9 and attack.objective == "kl-clean-teacher"
    task = build_task(models, attack, loss, "fp32", FAST, data, tmp_path)
    student_c, t_clean, t_adv = models.copies()
    released = ReleasedCodeStep(student_c, t_clean, t_adv, attack, loss)
    check = loss_check(task, released, data, step=0)
    assert check.passed and check.x_adv_differing == 0, check
    no_momentum = ReleasedCodeStep(*models.copies(), replace(attack, momentum=0.0), loss)
    assert loss_check(task, no_momentum, data, step=0).x_adv_differing > 0  # momentum moves x'
    with pytest.raises(ConfigError, match="released-code step does not implement.*strategy 'confidence'"):
        ReleasedCodeStep(*models.copies(), attack, LossConfig())


def test_the_check_fails_when_the_two_sides_differ(tmp_path):
    models, data, attack, loss = make_case()
    task = build_task(models, attack, loss, "fp32", FAST, data, tmp_path)
    x = data(0)[0]

    class SeesClean(nn.Module):  # the adversarial teacher fed x instead of x'
        def __init__(self, teacher: nn.Module) -> None:
            super().__init__()
            self.teacher = teacher

        def forward(self, x_adv: torch.Tensor) -> torch.Tensor:
            return self.teacher(x)

    wrong = {
        "lambda_adv": build_reference(models, attack, replace(loss, lambda_adv=2.0)),
        "gamma": build_reference(models, attack, replace(loss, gamma=0.5)),
        "teacher input": ReferenceStep(*models.copies()[:2], SeesClean(models.teacher_adv), attack, loss),
        "teachers swapped": ReferenceStep(models.copies()[0], models.teacher_adv, models.teacher_clean, attack, loss),
    }
    for name, ref in wrong.items():
        check = loss_check(task, ref, data, step=0)
        assert not check.passed and check.rel_diff > check.rtol, name


def test_compare_losses():
    assert compare_losses(2.0, 2.0).passed
    assert compare_losses(2.0001, 2.0, rtol=1e-4).passed
    assert not compare_losses(2.001, 2.0, rtol=1e-4).passed
    assert not compare_losses(float("nan"), float("nan")).passed
    assert not compare_losses(float("inf"), 1.0).passed


@pytest.mark.parametrize(
    "attack,loss,needle",
    [
        (
            InnerAttackConfig(),
            LossConfig(strategy=replace(LossConfig().strategy, name="average")),
            "strategy 'average'",
        ),
        (InnerAttackConfig(objective="ce"), LossConfig(), "objective 'ce'"),
        (InnerAttackConfig(norm="l2"), LossConfig(), "norm 'l2'"),
        (InnerAttackConfig(momentum=0.9), LossConfig(), "momentum"),
    ],
)
def test_reference_refuses_what_it_does_not_implement(attack, loss, needle):
    models = BenchModels.build("mmt-vit-t", "mmt-vit-s", 4, CPU)
    with pytest.raises(ConfigError, match=needle):
        build_reference(models, attack, loss)


def test_reference_attack_stays_in_the_eps_ball_and_leaves_the_student_mode():
    models, data, attack, loss = make_case(student="mmt-rn-s")
    ref = build_reference(models, attack, loss).train()
    x = data(0)[0]
    x_adv = ref.attack(x, ref.teacher_clean(x), step=0)
    assert (x_adv - x).abs().max() <= attack.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any() and ref.student.training


def test_flop_counts_are_positive_deterministic_and_the_cache_saves_a_teacher_forward(tmp_path):
    models, data, attack, loss = make_case()
    task = build_task(models, attack, loss, "fp32", FAST, data, tmp_path)
    ref = build_reference(models, attack, loss)
    batch = data(0)

    def step(stepper):
        return lambda: stepper.training_step(batch, 0)["loss"].backward()

    optimized, again, reference = count_flops(step(task)), count_flops(step(task)), count_flops(step(ref))
    with torch.no_grad():
        teacher = count_flops(lambda: models.teacher_clean(batch[0]))
    assert optimized > 0 and optimized == again
    assert reference - optimized == teacher > 0  # exactly the clean teacher's forward


def test_flop_count_of_known_ops_includes_cpu_attention():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    q = torch.randn(1, 2, 8, 16)  # (B, H, L, E)
    assert count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)) == 2 * (2 * 2 * 8 * 8 * 16)


def test_matmul_probe_sizes_itself_by_time():
    fast = matmul_rate(CPU, "fp32", target_s=0.02, max_size=256)
    assert fast.size <= 256 and fast.gflops > 0 and fast.linear_gflops > 0 and fast.iters >= 1


def test_bf16_of_large_models_is_skipped_without_native_bf16(monkeypatch):
    models = BenchModels.build("mmt-vit-t", "mmt-vit-s", 4, CPU)
    monkeypatch.setattr(bench_run, "bf16_native", lambda device: False)
    assert bench_run.bf16_skip_reason(BenchConfig(), CPU, models.vision_parameters()) is None  # small: runs anyway
    monkeypatch.setattr(bench_run, "SMALL_MODELS", 10)
    assert "--force-bf16" in bench_run.bf16_skip_reason(BenchConfig(), CPU, models.vision_parameters())
    assert bench_run.bf16_skip_reason(BenchConfig(force_bf16=True), CPU, models.vision_parameters()) is None


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = main(
        [
            "bench",
            "--preset",
            "builtin",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--batch",
            "4",
            "--inner-steps",
            "1",
            "--switches",
            "cache",
            "--device",
            "cpu",
            "--matmul-seconds",
            "0.02",
            "--released-code",
            "--output",
            str(out),
        ]
    )
    return code, out


def test_cli_writes_json_and_markdown(cli_run):
    code, out = cli_run
    assert code == 0
    md = (out / "bench.md").read_text()
    assert "| mmt-vit-s | fp32 | optimized |" in md and "| mmt-rn-s | bf16 | optimized |" in md and "pass" in md


def test_report_has_every_field(cli_run):
    report = json.loads((cli_run[1] / "bench.json").read_text())
    assert {"cpu_model", "cpu_cores", "torch_version", "device_name", "torch_threads"} <= report["machine"].keys()
    assert report["matmul"]["fp32"]["gflops"] > 0 and report["matmul"]["bf16"]["gflops"] > 0
    configs = report["configurations"]
    assert [(c["student"], c["precision"]) for c in configs] == [
        ("mmt-vit-s", "fp32"),
        ("mmt-vit-s", "bf16"),
        ("mmt-rn-s", "fp32"),
        ("mmt-rn-s", "bf16"),
    ]
    for c in configs:
        for key in (
            "images_per_s",
            "flops_per_image",
            "achieved_gflops",
            "matmul_fraction",
            "reference_images_per_s",
            "speedup_vs_reference",
        ):
            assert c[key] > 0, key
        assert c["peak_memory_mb"] > 0 and c["memory_growth_mb"] is not None
        assert {
            "data",
            "teacher_clean",
            "attack",
            "teacher_adv",
            "student_forward",
            "student_backward",
            "optimizer",
            "other",
        } == c["split_s"].keys()
        assert all(c["split_s"][k] > 0 for k in ("attack", "teacher_adv", "student_backward", "optimizer"))
        assert c["flops_per_image"] < c["reference"]["flops_per_image"]  # the cache removes a teacher forward
        assert "cache" in c["switches"] if c["precision"] == "fp32" else True
        assert c["loss_check"]["passed"] and c["loss_check"]["x_adv_differing"] == 0
        cold, warm = c["cold"], c["optimized"]  # an empty cache: the clean teacher runs, nothing hits
        assert cold["cache_hit_rate"] == 0 and warm["cache_hit_rate"] == 1
        assert cold["split_s"]["teacher_clean"] > warm["split_s"]["teacher_clean"]
        assert cold["flops_per_image"] == pytest.approx(c["reference"]["flops_per_image"], rel=0.05)
        assert c["speedup_vs_released"] == pytest.approx(c["images_per_s"] / c["released"]["images_per_s"])
        assert c["released"]["flops_per_image"] > c["reference"]["flops_per_image"]  # its third teacher forward
        assert c["epochs"] == 2 and c["run_images_per_s"] == pytest.approx(
            2 / (1 / cold["images_per_s"] + 1 / warm["images_per_s"])
        )


def test_the_whole_run_has_one_cold_epoch_then_warm_ones():
    row = {"images_per_s": 100.0, "cold": {"images_per_s": 50.0}, "reference_images_per_s": 40.0}
    two = bench_run.whole_run(row, 2)  # 2 epochs of N images: N/50 + N/100 seconds
    assert two["run_images_per_s"] == pytest.approx(2 / (1 / 50 + 1 / 100))  # 66.7, not the mean 75
    assert two["run_speedup_vs_reference"] == pytest.approx(66.666667 / 40) and two["cold_speedup_vs_reference"] == 1.25
    assert bench_run.whole_run(row, 1)["run_images_per_s"] == pytest.approx(50.0)  # one epoch: all cold
    assert bench_run.whole_run({**row, "cold": None}, 2)["run_images_per_s"] is None


def test_bench_precisions_parse_and_bad_ones_are_named():
    assert BenchConfig(precision="both").precisions() == ["fp32", "bf16"]
    assert BenchConfig(precision="all").precisions() == ["fp32", "bf16", "bf16-teachers"]
    assert BenchConfig(precision="fp32, bf16-teachers").precisions() == ["fp32", "bf16-teachers"]
    with pytest.raises(ConfigError, match="bf16-teachers"):
        BenchConfig(precision="fp32,fp16").resolved()


def test_the_gpu_check_summary_reads_the_bench_and_the_test_outcomes(cli_run, tmp_path):
    (tmp_path / "bench").mkdir()
    shutil.copy(cli_run[1] / "bench.json", tmp_path / "bench" / "bench.json")
    (tmp_path / "cuda-tests.xml").write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="1" time="12.5">'
        '<testcase name="a"/><testcase name="b"><failure message="x"/></testcase><testcase name="c"/>'
        '<testcase name="d"><skipped/></testcase><testcase name="e"/></testsuite></testsuites>'
    )
    md = gpu_check.write(tmp_path)
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["tests"]["passed"] == 3 and summary["tests"]["failed"] == ["b"]
    assert "3 passed, 1 failed, 1 skipped in 12 s" in md
    report = json.loads((cli_run[1] / "bench.json").read_text())
    for c in report["configurations"]:  # one row per configuration, with its own images/s
        assert f"| {c['student']} | {c['precision']} | {c['batch']} | {c['images_per_s']:.2f} |" in md
    assert "Frozen mmt-vit-t forward" in md and "bf16-held" in md
    assert (tmp_path / "gpu_table.md").read_text() == md
    (tmp_path / "cuda-tests.xml").unlink()  # pytest ran out of time: the table says so, the bench rows stay
    md = gpu_check.write(tmp_path)
    assert "0 passed, 1 failed" in md and f"| {report['configurations'][0]['student']} |" in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the script's behaviour without a GPU")
def test_the_gpu_check_script_says_there_is_no_gpu_and_exits_0(tmp_path):
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh"],
        cwd=root,
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA GPU" in done.stdout


def test_the_frozen_forward_is_timed_in_each_precision(cli_run):
    frozen = json.loads((cli_run[1] / "bench.json").read_text())["frozen_forward"]
    assert frozen["teacher"] == "mmt-vit-t" and set(frozen["variants"]) == {"fp32", "bf16-autocast", "bf16-held"}
    for name, row in frozen["variants"].items():
        assert row["images_per_s"] > 0 and len(row["seconds_each"]) == frozen["rounds"]
        assert (row["max_abs_logit_diff_vs_fp32"] == 0) == (name == "fp32")  # bf16 rounds; fp32 is itself
    md = (cli_run[1] / "bench.md").read_text()
    assert "| bf16-held |" in md and "## Training step" in md


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--student", "nope-net"], "unknown model architecture"),
        (["--batch", "0"], "batch must be >= 1"),
        (["--precision", "fp16"], "precision must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, args, needle):
    code = main(["bench", "--device", "cpu", "--output", str(tmp_path), *args])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("mmt-ard: error:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "bench.json").exists()

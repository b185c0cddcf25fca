"""Device assumptions a CPU-only run cannot see, checked over the source itself.

The project's rule (``mmt_ard.devices``): random generators live on the CPU, random tensors are
drawn there and moved to the device. On a CPU everything is on the CPU, so a generator built on
``x.device`` or a draw with ``device=x.device`` and a CPU generator runs fine in CI and raises on
the first GPU (``experiments/analyses.py`` had exactly that: ``torch.Generator(device=x.device)``
handed to PGD, which draws with ``device="cpu"``). This test reads every module's syntax tree and
fails on any generator given a device other than the literal CPU, and on any draw that takes a
``generator=`` together with a ``device=`` other than the literal CPU.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mmt_ard

SRC = Path(mmt_ard.__file__).parent


def _is_cpu_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return node.value == "cpu"
    # torch.device("cpu")
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "device"
        and len(node.args) == 1
        and _is_cpu_literal(node.args[0])
    )


def _device_arg(call: ast.Call, positional: int | None) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == "device":
            return kw.value
    if positional is not None and len(call.args) > positional:
        return call.args[positional]
    return None


def device_problems(source: str, filename: str = "<source>") -> list[str]:
    """Lines where a generator or a generator-driven draw is put on a device that may not be the CPU."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name == "Generator":
            device = _device_arg(node, 0)
            if device is not None and not _is_cpu_literal(device):
                problems.append(f"{filename}:{node.lineno}: a generator on {ast.unparse(device)} (keep it on the CPU)")
        elif any(kw.arg == "generator" for kw in node.keywords):
            device = _device_arg(node, None)
            if device is not None and not _is_cpu_literal(device):
                problems.append(
                    f"{filename}:{node.lineno}: {name}(generator=..., device={ast.unparse(device)}): "
                    "draw on the CPU and move the result"
                )
    return problems


def test_the_checker_finds_the_bug_it_is_for():
    bad = (
        "gen = torch.Generator(device=x.device).manual_seed(0)\n"
        "g2 = torch.Generator('cuda')\n"
        "u = torch.rand(x.shape, generator=gen, device=x.device)\n"
    )
    assert len(device_problems(bad)) == 3
    good = (
        "gen = torch.Generator().manual_seed(0)\n"
        "g2 = torch.Generator(device='cpu')\n"
        "u = to_device(torch.rand(x.shape, generator=gen, device='cpu'), x.device)\n"
        "p = torch.randperm(10, generator=gen)\n"
        "z = torch.zeros(3, device=x.device)\n"
    )  # no generator: any device is fine
    assert device_problems(good) == []


def test_every_generator_and_seeded_draw_in_the_package_lives_on_the_cpu():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        problems += device_problems(path.read_text(), str(path.relative_to(SRC.parent)))
    assert problems == [], "\n".join(problems)

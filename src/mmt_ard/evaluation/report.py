"""A Markdown table laid out like the paper's Table 1.

Models named ``group/method`` (e.g. ``vit-s/mmt-ard``) are laid out with one column group per
``group`` (the paper's student architectures) and rows per ``method`` x eps; other names form
their own group. Columns: acc, racc, sum-acc, clip-zero. clip-zero is the mean zero-shot
accuracy over the zero-shot sets: robust at that eps where it was measured, else clean (marked *).
"""

from __future__ import annotations

from typing import Any

from mmt_ard.evaluation.config import eps_key


def _split(name: str) -> tuple[str, str]:
    return (name.split("/", 1)[0], name.split("/", 1)[1]) if "/" in name else (name, "-")


def clip_zero(result: dict[str, Any], eps: str) -> str:
    robust = result.get("zero_shot_racc", {})
    values = [r[eps] for r in robust.values() if eps in r]
    if values:
        return f"{sum(values) / len(values):.2f}"
    clean = list(result.get("zero_shot", {}).values())
    return f"{sum(clean) / len(clean):.2f}*" if clean else "-"


def markdown_table(results: dict[str, dict[str, Any]], title: str = "") -> str:
    """The results of :func:`evaluate_models` as a Markdown table (one row per method and eps)."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for name, res in results.items():
        group, method = _split(name)
        groups.setdefault(group, {})[method] = res
    methods = list(dict.fromkeys(m for g in groups.values() for m in g))
    eps_keys = list(dict.fromkeys(k for r in results.values() for k in r.get("racc", {})))
    header = ["Method", "eps"] + [f"{g} {c}" for g in groups for c in ("acc", "racc", "sum-acc", "clip-zero")]
    lines = [f"**{title}**\n" if title else "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        for eps in eps_keys:
            row = [method, eps]
            for group in groups.values():
                res = group.get(method)
                if res is None:
                    row += ["-"] * 4
                    continue
                racc = res["racc"].get(eps)
                row += [
                    f"{res['acc']:.2f}",
                    f"{racc:.2f}" if racc is not None else "-",
                    f"{res['sum_acc'][eps]:.2f}" if racc is not None else "-",
                    clip_zero(res, eps),
                ]
            lines.append("| " + " | ".join(row) + " |")
    if any("*" in line for line in lines[3:]):
        lines.append("\n\\* clean zero-shot accuracy (robust zero-shot not measured; see `eval.zero_shot_eps`).")
    zs = {name: r.get("zero_shot", {}) for name, r in results.items()}
    if any(zs.values()):
        sets = list(dict.fromkeys(s for z in zs.values() for s in z))
        lines += ["", "| Model | " + " | ".join(f"zero-shot {s}" for s in sets) + " |", "|" + "---|" * (len(sets) + 1)]
        for name, z in zs.items():
            lines.append(f"| {name} | " + " | ".join(f"{z[s]:.2f}" if s in z else "-" for s in sets) + " |")
    return "\n".join(lines).lstrip("\n") + "\n"


def attack_gap_table(results: dict[str, dict[str, Any]]) -> str:
    """PGD robust accuracy next to the worst case over PGD and APGD (``racc``), and the gap PGD - worst.

    Only for results whose chain (``attack``) starts with ``pgd`` and runs more: the ``pgd`` entry of
    ``racc_by_attack`` is then PGD alone, and ``racc`` the per-sample worst case over every attack.
    """
    rows = []
    for name, res in results.items():
        chain = res.get("attack", "pgd").split("+")
        if chain[0] != "pgd" or len(chain) < 2:
            continue
        pgd = res["racc_by_attack"]["pgd"]
        rows += [
            f"| {name} | {eps} | {pgd[eps]:.2f} | {worst:.2f} | {pgd[eps] - worst:.2f} |"
            for eps, worst in res["racc"].items()
        ]
    if not rows:
        return ""
    head = ["| Model | eps | racc PGD | racc worst case (chain) | gap PGD - chain |", "|---|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


__all__ = ["attack_gap_table", "clip_zero", "eps_key", "markdown_table"]

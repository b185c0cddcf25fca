"""Every shell command and Python example in README.md and docs/*.md runs, so the docs cannot rot.

Each fenced block (```bash, ```sh, ```console, ```python) of a page runs in document order in one
scratch folder per page (later blocks use what earlier ones wrote), under ``bash -e -o pipefail``.
``mmt-ard`` there is the installed entry point (``console_scripts`` ``mmt-ard``, the function
``.venv/bin/mmt-ard`` calls) run in a fresh process forked from a server that imported the package
once, so a command costs a fork instead of a 10-second import; ``python`` runs the same way (a
```python block is run as ``python block.py``). What a command would download or train for hours is
replaced by stand-ins, declared in the two tables below and nowhere else:

- ``SUBSTITUTIONS``: text of a block -> what runs instead (real checkpoints and ImageNet -> tiny
  random CLIPs and a 5-class folder of 32-px JPEGs, step counts of Python examples);
- ``APPENDED``: ``key=value`` overrides (or flags) appended to an ``mmt-ard`` command, which win over
  the command's own: few steps, few images, stand-in models for the ``paper-*`` presets.

A block marked in the page source, on the line right above it, is not run:

- ``<!-- docs-test: parse-only (reason) -->``: too long or needs GPUs or a cluster; bash still runs
  it, but every ``mmt-ard`` (also behind ``torchrun``/``srun``) is only parsed by the CLI's own
  argument parser (a renamed flag or a wrong choice fails), ``python`` only compiled, ``bash SCRIPT``
  only checked for syntax, ``sbatch`` and ``make`` only check their file or target;
- ``<!-- docs-test: skip (reason) -->``: only shows output, or is covered by another test
  (``COVERED_ELSEWHERE``: ``make demo`` takes 25 minutes, tests/e2e/test_demo.py runs the quick demo).

Every marker needs a reason, and every other block must run. The mutations this catches: a
renamed CLI flag or config key, a removed Python name, a script moved without its references.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGS = {"bash", "sh", "console", "python"}
SHOWN_LANGS = {"text", "yaml", "json", "markdown"}  # shown, never run
MARK = re.compile(r"<!-- docs-test: (skip|parse-only) \((.+)\) -->")
FENCE = re.compile(r"^```(\S*)\s*$")
# folders of the repository a page's commands name relatively (`bash scripts/sweep.sh`, ...)
LINKED = ["scripts", "benchmarks", "examples", "docs"]

# text in the docs -> what the test runs instead ({standins}: the stand-in folder), and why
SUBSTITUTIONS = [
    ("/data/imagenet", "{standins}/imagenet", "a 5-class ImageNet-like ImageFolder of 32-px JPEGs"),
    ("/data/in1k-wds", "{standins}/in1k-wds", "shards are written into the scratch folder"),
    ("/ckpt/vitl14-clean.pt", "{standins}/vitl14-clean.safetensors", "a tiny random CLIP (mmt-vit-t)"),
    ("/ckpt/vitl14-pmg-fast2.pt", "{standins}/vitl14-pmg-fast2.safetensors", "a tiny random CLIP (mmt-vit-t)"),
    ("ViT-B-32-quickgelu@openai", "mmt-vit-s@{standins}/vitb32.safetensors", "no download: a tiny random CLIP"),
    (
        '"optim.steps=200"',
        '"optim.steps=2", "optim.batch_size=4", "attack.steps=1", "eval.limit=4", "data=builtin:shapes:split=train,n=256"',
        "the Python example trains 2 small steps on 256 images",
    ),
    ('"eval.limit=1000"', '"eval.limit=8", "eval.pgd.steps=1", "eval.sanity_samples=4"', "and evaluates 8 images"),
]
_DATA = (
    "folder:{standins}/imagenet:split={split},classnames={standins}/classnames.txt,templates={standins}/templates.txt"
)
_SMALL_DISTILL = [
    "optim.steps=2",
    "optim.batch_size=4",
    "attack.steps=1",
    "eval.limit=4",
    "eval.pgd.steps=1",
    "eval.workers=0",
    "loop.data.workers=0",
]
_PAPER_MODELS = [
    "student.arch=mmt-vit-s",
    "student.pretrained={standins}/vitb32.safetensors",
    "teacher_clean.arch=mmt-vit-t",
    "teacher_adv.arch=mmt-vit-t",
    "teacher_adv.pretrained={standins}/vitl14-clean.safetensors",  # the preset's `openai` would download
    "data=" + _DATA.format(standins="{standins}", split="train"),
    "eval.dataset=" + _DATA.format(standins="{standins}", split="holdout"),
]
_VAL = "eval.dataset=" + _DATA.format(standins="{standins}", split="val")
_ZERO_SHOT = (
    'eval.zero_shot=["' + _DATA.format(standins="{standins}", split="holdout") + '"]'
)  # never the built-in sets
# (subcommand, appended only when the command line contains this text, or always: None, what is appended)
APPENDED = [
    ("distill", None, [*_SMALL_DISTILL, "loop.eval_every=0"]),
    ("distill", "--config paper-", _PAPER_MODELS),
    ("finetune", None, [*_SMALL_DISTILL, "loop.eval_every=0"]),
    ("finetune", "--config paper-", ["model.arch=mmt-vit-t", "model.pretrained={standins}/vitl14-clean.safetensors"]),
    ("finetune", "--config paper-", [a for a in _PAPER_MODELS if a.startswith(("data=", "eval.dataset="))]),
    ("evaluate", None, ["eval.limit=8", "eval.pgd.steps=1", "eval.sanity_samples=4", "eval.workers=0"]),
    ("evaluate", "IMAGENET_ROOT", [_VAL, _ZERO_SHOT]),
    ("evaluate", "--config paper-", [_VAL, _ZERO_SHOT]),
]
# commands a page shows that another test runs (the page marks them `skip` and names that test)
COVERED_ELSEWHERE = {
    "make demo": "test_demo.py",  # 25 minutes; `mmt-ard demo --quick` with a smaller plan, then its reuse
    "make test": "the test suite itself",
    "make lint": ".ci/run",  # the CI script
}


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    mark: str  # "" (run), "skip" or "parse-only"
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page with the marker right above each (malformed markers raise)."""
    out: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].startswith("<!--") and "docs-test" in lines[i] and not MARK.fullmatch(lines[i].strip()):
                raise AssertionError(f"{page.name}:{i + 1}: malformed marker {lines[i]!r}; write {MARK.pattern}")
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        mark = MARK.fullmatch(lines[i - 1].strip()) if i else None
        text = "\n".join(lines[i + 1 : end]) + "\n"
        out.append(Block(page, i + 1, m.group(1), text, mark.group(1) if mark else "", mark.group(2) if mark else ""))
        i = end + 1
    return out


ALL = [b for page in PAGES for b in blocks(page)]


def test_every_block_is_run_or_marked_with_a_reason():
    for b in ALL:
        assert b.lang in RUN_LANGS | SHOWN_LANGS, f"{b.where}: fence ```{b.lang}: use one of {RUN_LANGS | SHOWN_LANGS}"
        if b.mark:
            assert len(b.reason.strip()) >= 10, f"{b.where}: say why the block is not run"
    runnable = [b for b in ALL if b.lang in RUN_LANGS and not b.mark]
    assert len(runnable) >= 10 and any(b.lang == "python" for b in runnable)  # the docs do show runnable examples
    for command, test in COVERED_ELSEWHERE.items():
        shown = [b for b in ALL if re.search(rf"^{command}\b", b.text, re.MULTILINE)]
        for b in shown:
            assert b.mark == "skip" and test in b.reason, f"{b.where}: `{command}` is covered by {test}; say so"
        if test.endswith(".py"):
            assert list((ROOT / "tests").rglob(test)), f"{test}, which covers `{command}`, is gone"
    makefile = (ROOT / "Makefile").read_text()  # `make demo` is the CLI's demo, which test_demo.py runs
    assert re.search(r"^demo: .*\n\t\$\(BIN\)/mmt-ard demo \$\(ARGS\)$", makefile, re.MULTILINE)


def test_every_substitution_and_appended_rule_is_used():
    runnable = "".join(b.text for b in ALL if b.lang in RUN_LANGS and b.mark != "skip").replace("\\\n", " ")
    for old, _, why in SUBSTITUTIONS:
        assert old in runnable, f"substitution {old!r} ({why}) matches no block: remove it"
    for command, cond, _ in APPENDED:
        assert re.search(rf"\b{command}\b.*{re.escape(cond or '')}", runnable), f"{command} / {cond}: matches nothing"


def test_markdown_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: link to {target} is broken"
        for target in re.findall(r"`((?:docs|scripts|examples|benchmarks)/[\w./-]+\.(?:sh|py|md))`", page.read_text()):
            assert (ROOT / target).exists(), f"{page.name}: {target} does not exist"


# ----------------------------------------------------------------------------------------------------------
# The command server: bash runs each block; `mmt-ard`, `python`, `torchrun`, `srun`, `sbatch` and `make` on its
# PATH are clients that hand argv, cwd and environment to this process, which runs each in a process forked
# from a server that imported mmt_ard once, and hands back output and exit code.

CLIENT = """#!{python} -IS
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect({sock!r})
s.sendall(json.dumps({{"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]], "cwd": os.getcwd(),
                      "env": dict(os.environ)}}).encode())
s.shutdown(socket.SHUT_WR)
reply = json.loads(b"".join(iter(lambda: s.recv(1 << 16), b"")))
sys.stdout.write(reply["out"]); sys.stdout.flush(); sys.stderr.write(reply["err"])
sys.exit(reply["rc"])
"""
SHIMS = ["mmt-ard", "python", "python3", "torchrun", "srun", "sbatch", "make"]
BASH = """#!{bash}
# a script a block runs: only its syntax in parse-only blocks
if [ "$DOCS_TEST_MODE" = parse-only ]; then exec {bash} -n "$@"; fi
exec {bash} "$@"
"""


def _child(argv: list[str], mode: str, cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """One command, in a process forked from the server: what a fresh interpreter would do."""
    import runpy
    from importlib.metadata import entry_points

    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    name, args = argv[0], argv[1:]
    if name in ("torchrun", "srun"):  # only in parse-only blocks: the command behind the launcher
        assert mode == "parse-only", f"{name} runs only in parse-only blocks"
        if name == "srun":
            args = args[args.index("torchrun") + 1 :]
        name, args = "mmt-ard", args[args.index("mmt_ard.cli.main") + 1 :]
    if name == "mmt-ard":
        if mode == "parse-only":
            from mmt_ard.cli.main import build_parser  # the parser the entry point parses with

            build_parser().parse_args(args)
            sys.exit(0)
        (entry,) = entry_points(group="console_scripts", name="mmt-ard")
        sys.argv = ["mmt-ard", *args]
        sys.exit(entry.load()())
    if name.startswith("python"):
        if args[0] == "-c":
            sys.argv = ["-c", *args[2:]]
            code = compile(args[1], "<string>", "exec")
            if mode != "parse-only":
                exec(code, {"__name__": "__main__"})  # noqa: S102 (what `python -c` does)
        elif args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            if mode != "parse-only":
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            compile(Path(args[0]).read_text(), args[0], "exec")
            if mode != "parse-only":
                runpy.run_path(args[0], run_name="__main__")
        sys.exit(0)
    assert mode == "parse-only", f"{name} runs only in parse-only blocks"
    if name == "sbatch":
        assert Path(args[-1]).is_file(), f"sbatch: no {args[-1]}"
    elif name == "make":
        for target in args:
            assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), re.MULTILINE), f"make: no target {target}"
    sys.exit(0)


class Server:
    """Accepts the clients' requests and runs each in a forked process (one at a time)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sock = str(folder / "sock")
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["tests.docs_warmup"])  # imports and built-in data, once
        self.ctx = ctx
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.sock)
        self.listener.listen(8)
        self.bin = folder / "bin"
        self.bin.mkdir()
        for name in SHIMS:
            (self.bin / name).write_text(CLIENT.format(python=sys.executable, sock=self.sock))
            (self.bin / name).chmod(0o755)
        (self.bin / "bash").write_text(BASH.format(bash=shutil.which("bash")))
        (self.bin / "bash").chmod(0o755)
        threading.Thread(target=self.serve, daemon=True).start()

    @staticmethod
    def argv(argv: list[str], mode: str, standins: str) -> list[str]:
        """The command with the ``APPENDED`` rules applied (run mode only)."""
        if argv[0] != "mmt-ard" or mode == "parse-only" or len(argv) < 2:
            return argv
        line = " ".join(argv)
        extra = [a for cmd, cond, args in APPENDED if argv[1] == cmd and (cond is None or cond in line) for a in args]
        if argv[1] == "distill" and not any(a.startswith("data=") for a in argv + extra):
            extra.append("data=builtin:shapes:split=train,n=256")  # the built-in train split, 256 of 12000
        return argv + [a.format(standins=standins) for a in extra]

    def serve(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            with conn:
                req = json.loads(b"".join(iter(lambda c=conn: c.recv(1 << 16), b"")))
                mode = req["env"].get("DOCS_TEST_MODE", "run")
                out, err = self.folder / "out", self.folder / "err"
                argv = self.argv(req["argv"], mode, req["env"].get("DOCS_TEST_STANDINS", ""))
                p = self.ctx.Process(target=_child, args=(argv, mode, req["cwd"], req["env"], str(out), str(err)))
                t0 = time.perf_counter()
                p.start()
                p.join()
                note = f"[docs-test] {' '.join(argv)} -> exit {p.exitcode} in {time.perf_counter() - t0:.1f} s\n"
                with open(self.folder / "times.log", "a") as log:
                    log.write(note)
                reply = {"rc": p.exitcode, "out": out.read_text(), "err": err.read_text() + note}
                conn.sendall(json.dumps(reply).encode())


def _standins(root: Path, runs: Path) -> None:
    """Tiny random CLIPs where the docs name real checkpoints and finished runs, and a tiny ImageNet."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from mmt_ard.models import ModelSpec, load_clip
    from mmt_ard.models.export import export_open_clip

    def clip(arch: str, seed: int):
        torch.manual_seed(seed)
        return load_clip(ModelSpec(arch=arch))

    for name, arch in (("vitl14-clean", "mmt-vit-t"), ("vitl14-pmg-fast2", "mmt-vit-t"), ("vitb32", "mmt-vit-s")):
        state = clip(arch, 0).model.state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(root / f"{name}.safetensors"))
    # finished runs the docs evaluate or export: `mmt-ard demo` folders and paper-scale students
    for folder, arch in (
        ("demo/pretrain-vit-s/model", "mmt-vit-s"),
        ("demo/pretrain-rn-s/model", "mmt-rn-s"),
        ("demo/teacher-clean/model", "mmt-vit-t"),
        ("demo/teacher-adv/model", "mmt-vit-t"),
        ("demo/distill-vit-s-confidence/student", "mmt-vit-s"),
        ("demo/distill-rn-s-confidence/student", "mmt-rn-s"),
        ("mmt-ard-vitb32/student", "mmt-vit-s"),
        ("mmt-ard-vitl14/student", "mmt-vit-s"),
    ):
        export_open_clip(clip(arch, 1), runs / folder)
    gen = torch.Generator().manual_seed(0)
    classes = ["goldfish", "tabby cat", "school bus", "red fox", "teapot"]
    for split, per_class in (("train", 12), ("holdout", 1), ("val", 2)):  # docs/scale.md moves 10 to holdout/
        for c in range(len(classes)):
            (root / "imagenet" / split / f"n0000000{c}").mkdir(parents=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8)
                img[8:24, 8:24, c % 3] = 255
                Image.fromarray(img.numpy()).save(root / "imagenet" / split / f"n0000000{c}" / f"{i}.JPEG")
    (root / "classnames.txt").write_text("\n".join(classes) + "\n")
    (root / "templates.txt").write_text("a photo of a {}.\n")


@pytest.fixture(scope="module")
def server():
    folder = Path(tempfile.mkdtemp(prefix="docs-", dir="/tmp"))  # short: a socket path has at most 107 bytes
    (folder / "standins").mkdir()
    _standins(folder / "standins", folder / "runs")
    try:
        yield Server(folder)
    finally:
        if (folder / "times.log").exists():
            print((folder / "times.log").read_text())  # where the time goes (shown with -s)
        shutil.rmtree(folder, ignore_errors=True)


def run_block(b: Block, server: Server, cwd: Path) -> None:
    text = b.text
    standins = cwd / "standins"
    for old, new, _ in SUBSTITUTIONS:
        text = text.replace(old, new.format(standins=standins))
    if b.lang == "python":
        script = cwd / f"block-{b.line}.py"
        script.write_text(text)
        text = f"python {script.name}\n"
    (cwd / "block.sh").write_text("set -e -o pipefail\n" + text)
    env = {
        **os.environ,
        "PATH": f"{server.bin}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DOCS_TEST_MODE": b.mark or "run",
        "DOCS_TEST_STANDINS": str(standins),
        "MMT_ARD_CACHE": str(server.folder / "cache"),  # the built-in world is generated once for all pages
    }
    bash = shutil.which("bash")  # the real one: a block's own `bash SCRIPT` meets the shim
    done = subprocess.run([bash, "block.sh"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{b.where} failed ({b.mark or 'run'}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_commands_run(page: Path, server: Server, tmp_path: Path):
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copytree(server.folder / "runs", tmp_path / "runs")  # finished runs the page's commands use
    shutil.copytree(server.folder / "standins", tmp_path / "standins")  # the page may change its ImageNet
    ran = 0
    for b in blocks(page):
        if b.lang in SHOWN_LANGS or b.mark == "skip":
            continue
        run_block(b, server, tmp_path)
        ran += 1
    shown = sum(b.lang in SHOWN_LANGS or b.mark == "skip" for b in blocks(page))
    assert ran + shown == len(blocks(page))  # every block ran or is marked

"""The documentation runs and draws the code: README.md and docs/*.md.

**Python blocks.** Every ```python block of README.md and docs/*.md runs as written. A block
runs on its own, in a fresh interpreter, unless its first line is exactly

    # continues the block above

in which case it is appended to the previous ```python block of the same file and the two
(or more) run as one script: a *group*. Groups run in a few batches (two, plus one for each
group that registers a rule or sets a JAX flag), each batch one subprocess in which every group is executed in a
fresh namespace, with JAX's defaults (``JAX_ENABLE_X64`` removed, XLA_FLAGS only the suite's compile flags: this suite's conftest turns
float64 on in its own process only), ``PYTHONPATH`` = the repository root, and a temporary
folder as the working directory, so a block that writes a file writes it there, never into
the repository. A group passes when it exits 0 and, for every report it
prints with ``print(... .table())``, stdout says ``passed: True`` (as many times, and never
``passed: False``); ``EXPECTED`` adds what particular groups must print. Code that is not
meant to run (shell commands, output, pseudo-code) goes in ```bash / ```text fences.

**Links.** Every relative link of these pages points at a file that exists, and an anchor
``#...`` at a heading of that page.

**Architecture.** docs/architecture.md draws the layout, a ```text block starting with the line
``jaxmlp/``, one module or folder per line, indented by two spaces per level: it must name
every module of jaxmlp/ (the subpackages' ``__init__.py`` aside) and no other. It lists the arrows between jaxmlp's subpackages, one
line per subpackage (``train -> nn, privacy, quantities``), in a ```text block that starts with
the line ``# arrows``; they must equal the arrows of the code, read from its imports by
tests/test_architecture.py.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_XLA_FLAGS
from test_architecture import ALLOWED, GRAPH

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
CONTINUES = "# continues the block above"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)

#: (page, a line of the group's code) -> what the group must print.
EXPECTED = {
    ("docs/rules.md", "register_activation(\"mish_wrong\""): ["disagrees with autodiff"],
    ("docs/forward_reverse_modes.md", "jacobian_reverse(x, return_tables=True)"):
        ["dy_1/du_4 = +1", "dy_1/du_-2 = +3.5"],
}


def fences(page: Path):
    """(info string, code, line number) of every fenced block of ``page``."""
    text = page.read_text()
    for m in FENCE.finditer(text):
        yield m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1


def groups():
    out = []
    for page in PAGES:
        rel = page.relative_to(ROOT).as_posix()
        for info, code, line in fences(page):
            if info != "python":
                continue
            if code.startswith(CONTINUES + "\n"):
                assert out and out[-1][0] == rel, f"{rel}:{line} continues no block above"
                out[-1][2].append(code)
            else:
                out.append((rel, line, [code]))
    return [(rel, line, "\n".join(codes)) for rel, line, codes in out]


GROUPS = groups()


def test_the_blocks_are_found():
    assert len(GROUPS) >= 10
    pages = {rel for rel, _, _ in GROUPS}
    assert "README.md" in pages and "docs/performance.md" in pages
    # a misspelt fence would hide a block from this test
    for page in PAGES:
        for info, _, line in fences(page):
            assert info.split()[0:1] in ([], ["python"], ["bash"], ["text"]), \
                f"{page.name}:{line}: fence {info!r}: use python, bash or text"
    for key in EXPECTED:
        assert any(rel == key[0] and key[1] in code for rel, _, code in GROUPS), key


#: Runs groups one after another in ONE interpreter (each in a fresh namespace, its stdout
#: captured): the blocks share the interpreter's start-up and JAX import, not their names.
RUNNER = r"""
import contextlib, io, json, sys, traceback
out = []
for rel, line, code in json.load(sys.stdin):
    buf = io.StringIO()
    ok = True
    with contextlib.redirect_stdout(buf):
        try:
            exec(compile(code, f"{rel}:{line}", "exec"), {"__name__": "__main__"})
        except BaseException:
            ok = False
            err = traceback.format_exc()
    out.append({"ok": ok, "stdout": buf.getvalue(), "error": None if ok else err[-3000:]})
print("RESULTS" + json.dumps(out))
"""


def shards() -> list:
    """The groups in a few batches: a group that changes process-wide state (registers a rule,
    or sets a JAX configuration flag such as float64) runs in a batch of its own; the others
    are split in two, one per xdist worker."""
    alone = [g for g in GROUPS if "register_" in g[2] or "jax.config" in g[2]
             or "JAX_" in g[2]]
    rest = [g for g in GROUPS if g not in alone]
    return [[g] for g in alone] + [rest[0::2], rest[1::2]]


SHARDS = shards()


@pytest.mark.parametrize("shard", SHARDS, ids=[f"{s[0][0]}:{s[0][1]}+{len(s) - 1}" for s in SHARDS])
def test_python_blocks_run(shard, tmp_path):
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "XLA_FLAGS")}
    env["XLA_FLAGS"] = TEST_XLA_FLAGS  # compile flags only (no simulated devices)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", RUNNER], cwd=tmp_path, env=env,
                          input=json.dumps(shard), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "RESULTS" in proc.stdout, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULTS", 1)[1])
    failures = []
    for (rel, line, code), res in zip(shard, results):
        where, stdout = f"{rel}:{line}", res["stdout"]
        if not res["ok"]:
            failures.append(f"{where} failed:\n{res['error']}")
            continue
        reports = len(re.findall(r"print\([^\n]*\.table\(\)\)", code))
        if stdout.count("passed: True") != reports or "passed: False" in stdout:
            failures.append(f"{where} printed:\n{stdout}")
        for (page, marker), wanted in EXPECTED.items():
            if page == rel and marker in code:
                failures += [f"{where} did not print {w!r}:\n{stdout}" for w in wanted
                             if w not in stdout]
    assert len(results) == len(shard) and not failures, "\n\n".join(failures)


def test_the_runner_reports_a_failing_block(tmp_path):
    """The batch runner isolates names and reports an exception of one block as that block's."""
    import json

    shard = [("a.md", 1, "x = 1\nprint('one')"), ("b.md", 2, "print(x)")]
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(shard), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    res = json.loads(proc.stdout.split("RESULTS", 1)[1])
    assert res[0] == {"ok": True, "stdout": "one\n", "error": None}
    assert not res[1]["ok"] and "NameError" in res[1]["error"] and 'b.md:2' in res[1]["error"]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def test_relative_links_resolve():
    bad = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        for target in re.findall(r"\]\(([^)\s\[]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{page.name}: {target} (no such heading)")
    assert not bad, "; ".join(bad)


def drawn_arrows() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    blocks = [code for info, code, _ in fences(ROOT / "docs" / "architecture.md")
              if info == "text" and code.startswith("# arrows")]
    assert len(blocks) == 1, "docs/architecture.md needs one ```text block starting '# arrows'"
    arrows = {}
    for line in blocks[0].splitlines()[1:]:
        line = line.split("#")[0].strip()
        if not line:
            continue
        src, sep, dst = line.partition("->")
        assert sep, f"not an arrow line: {line!r}"
        targets = {t.strip() for t in dst.split(",") if t.strip() and t.strip() != "-"}
        arrows[src.strip()] = targets
    assert text
    return arrows


def code_arrows() -> dict[str, set[str]]:
    arrows = {}
    for m, targets in GRAPH.items():
        a = m.split(".")[1]
        arrows.setdefault(a, set())
        arrows[a] |= {t.split(".")[1] for t in targets} - {a}
    return arrows


def test_architecture_draws_the_arrows_of_the_code():
    drawn, actual = drawn_arrows(), code_arrows()
    assert drawn == actual, f"docs/architecture.md draws {drawn}, the code has {actual}"
    for src, targets in drawn.items():
        allowed = ALLOWED.get(src, set())
        assert targets <= allowed, f"{src} -> {targets - allowed} is not in ALLOWED"


def drawn_modules() -> set[str]:
    blocks = [code for info, code, _ in fences(ROOT / "docs" / "architecture.md")
              if info == "text" and code.startswith("jaxmlp/\n")]
    assert len(blocks) == 1, "docs/architecture.md needs one ```text block starting 'jaxmlp/'"
    names, stack = set(), []
    for line in blocks[0].splitlines():
        m = re.match(r"( *)(\S+)", line)
        if not m or not re.fullmatch(r"[\w.]+(/|\.py)", m.group(2)):
            continue  # a continued description
        depth = len(m.group(1)) // 2
        stack[depth:] = [m.group(2)]
        if m.group(2).endswith(".py"):
            names.add("".join(stack))
    return names


def test_architecture_names_every_module():
    actual = {p.relative_to(ROOT).as_posix() for p in (ROOT / "jaxmlp").rglob("*.py")
              if p.name != "__init__.py" or p.parent == ROOT / "jaxmlp"}
    drawn = drawn_modules()
    assert drawn == actual, (f"docs/architecture.md's layout lacks {sorted(actual - drawn)} "
                             f"and names {sorted(drawn - actual)}, which do not exist")

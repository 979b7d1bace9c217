"""The README's Python examples run as written, in a fresh interpreter with JAX's defaults.

The blocks are one session (the data-parallel block continues the first one), so they run
in order as one script; a subprocess keeps this suite's float64 setting out of it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_python_examples_run():
    assert len(BLOCKS) >= 3
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", "\n".join(BLOCKS)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the two gradient-check reports it prints (ours vs autodiff/FD; the hand-derived rule)
    assert proc.stdout.count("passed: True") == 2, proc.stdout

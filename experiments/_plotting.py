"""Learning-curve plots for experiments/train.py, drawn in a helper process started early.

Importing matplotlib and drawing costs ~0.55 s, a third of a warm-cache training run of
digits. :func:`start_plot_process` launches ``python experiments/_plotting.py`` at the top of
train.py: the child imports matplotlib on the second core while the parent imports JAX and
trains; :meth:`PlotProcess.write` hands it the history (one JSON line on its stdin) and waits
for the PNG. The figure is the one :func:`write_plot` draws in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def write_plot(path: str, history: list[dict], metric: str, title: str) -> None:
    """Cost (log scale) and ``metric`` per epoch, train and test, as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [h["running_cost"] for h in history], label="train (minibatch mean)", alpha=0.6)
    a1.plot(ep, [h["train_cost"] for h in history], label="train")
    a1.plot(ep, [h["test_cost"] for h in history], label="test")
    a1.set_yscale("log")
    a1.set_xlabel("epoch")
    a1.set_ylabel("cost J")
    a1.legend()
    a2.plot(ep, [h[f"train_{metric}"] for h in history], label="train")
    a2.plot(ep, [h[f"test_{metric}"] for h in history], label="test")
    a2.set_xlabel("epoch")
    a2.set_ylabel(metric)
    a2.legend()
    fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.13, top=0.9, wspace=0.22)  # fixed
    # margins: tight_layout() would draw the figure once more (~0.06 s)
    tmp = f"{path}.tmp-{os.getpid()}"  # written whole, then renamed: never a half PNG
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


class PlotProcess:
    """A child process that has imported matplotlib and waits for one plot to draw."""

    def __init__(self):
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def write(self, path: str, history: list[dict], metric: str, title: str) -> None:
        """Draws the plot in the child and waits for it; RuntimeError with its message if it failed."""
        spec = {"path": os.path.abspath(path), "history": history, "metric": metric, "title": title}
        try:
            _, err = self._proc.communicate(json.dumps(spec) + "\n", timeout=120)
        except (BrokenPipeError, subprocess.TimeoutExpired) as e:
            self._proc.kill()
            _, err = self._proc.communicate()
            raise RuntimeError(f"the plot process failed ({e}): {err.strip()[-500:]}") from None
        if self._proc.returncode != 0:
            raise RuntimeError(f"the plot process failed: {err.strip()[-500:]}")

    def cancel(self) -> None:
        """No plot after all (bad input, divergence before any epoch): the child exits."""
        if self._proc.poll() is None:
            try:
                self._proc.communicate("", timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()


def start_plot_process() -> PlotProcess:
    return PlotProcess()


def _child() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (the import is what the parent overlaps)

    line = sys.stdin.readline()
    if not line.strip():
        return 0
    spec = json.loads(line)
    write_plot(spec["path"], spec["history"], spec["metric"], spec["title"])
    return 0


if __name__ == "__main__":
    sys.exit(_child())

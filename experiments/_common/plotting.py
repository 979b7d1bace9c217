"""Learning curves of experiments/train.py as a small, self-contained SVG (no matplotlib).

Importing matplotlib and rendering a PNG costs ~0.55 s on a quiet 2-core machine (and 2 s
when it is loaded), more than the warm training run of digits itself; an SVG of a few
polylines is written in milliseconds and opens in any browser. Two panels: the cost (log
scale: running minibatch mean, train, test) and the task's metric (train, test) per epoch.
"""

from __future__ import annotations

import math
import os
from html import escape

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c")
W, H = 1000, 380  # the figure
PW, PH = 400, 260  # one panel's plotting area
LEFT = (80, 580)  # x of each panel's plotting area
TOP = 60


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def _panel(x0: int, xs: list, series: list, ylabel: str, log: bool) -> list[str]:
    """SVG elements of one panel: frame, ticks, polylines, legend."""
    ys = [v for _, vals in series for v in vals if v is not None and math.isfinite(v)
          and (v > 0 or not log)]
    out = [f'<rect x="{x0}" y="{TOP}" width="{PW}" height="{PH}" fill="none" stroke="#333"/>']
    if not ys or not xs:
        return out
    tf = (lambda v: math.log10(v)) if log else (lambda v: v)
    lo, hi = tf(min(ys)), tf(max(ys))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    xlo, xhi = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    px = lambda x: x0 + (x - xlo) / (xhi - xlo) * PW  # noqa: E731
    py = lambda y: TOP + PH - (tf(y) - lo) / (hi - lo) * PH  # noqa: E731
    for t in _ticks(xlo, xhi):
        out.append(f'<line x1="{px(t):.1f}" y1="{TOP + PH}" x2="{px(t):.1f}" y2="{TOP + PH + 5}" stroke="#333"/>'
                   f'<text x="{px(t):.1f}" y="{TOP + PH + 20}" text-anchor="middle">{_fmt(t)}</text>')
    yt = ([10.0 ** k for k in range(math.ceil(lo), math.floor(hi) + 1)] if log
          else _ticks(lo, hi))
    if log and len(yt) < 2:
        yt = [10 ** v for v in _ticks(lo, hi)]
    for t in yt:
        y = py(t)
        out.append(f'<line x1="{x0 - 5}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" stroke="#333"/>'
                   f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PW}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{x0 - 8}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for i, (label, vals) in enumerate(series):
        pts = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in zip(xs, vals)
                       if v is not None and math.isfinite(v) and (v > 0 or not log))
        colour = COLOURS[i % len(COLOURS)]
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        ly = TOP + 18 + 18 * i
        out.append(f'<line x1="{x0 + PW - 170}" y1="{ly - 4}" x2="{x0 + PW - 150}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="2"/><text x="{x0 + PW - 145}" y="{ly}">'
                   f'{escape(label)}</text>')
    out.append(f'<text x="{x0 + PW / 2}" y="{TOP + PH + 40}" text-anchor="middle">epoch</text>')
    out.append(f'<text transform="translate({x0 - 55},{TOP + PH / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(ylabel)}</text>')
    return out


def write_plot(path: str, history: list[dict], metric: str, title: str) -> None:
    """Cost (log scale) and ``metric`` per epoch, train and test, as an SVG file at ``path``."""
    ep = [h["epoch"] for h in history]
    body = _panel(LEFT[0], ep, [("train (minibatch mean)", [h["running_cost"] for h in history]),
                                ("train", [h["train_cost"] for h in history]),
                                ("test", [h["test_cost"] for h in history])], "cost J", log=True)
    body += _panel(LEFT[1], ep, [("train", [h[f"train_{metric}"] for h in history]),
                                 ("test", [h[f"test_{metric}"] for h in history])], metric, log=False)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">'
           f'<rect width="{W}" height="{H}" fill="white"/>'
           f'<text x="{W / 2}" y="30" text-anchor="middle" font-size="15">{escape(title)}</text>'
           + "".join(body) + "</svg>\n")
    tmp = f"{path}.tmp-{os.getpid()}"  # written whole, then renamed: never a half file
    try:
        with open(tmp, "w") as f:
            f.write(svg)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

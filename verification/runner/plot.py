"""The report's plot: per-run timings in run order, and the speedup estimate against its bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless workers; must precede pyplot

import matplotlib.pyplot as plt


def write_plot(report: dict[str, Any], png_path: Path) -> tuple[Path, Path]:
    """Writes ``png_path`` and the same figure as SVG next to it; returns both paths."""
    measured = [m for m in report["measurements"] if m.get("phase") == "measure"]
    figure, (timeline, estimate) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})

    for role, colour, marker in (("baseline", "#4c72b0", "o"), ("candidate", "#dd8452", "s")):
        points = [
            (i, m["wall_seconds"])
            for i, m in enumerate(measured)
            if m["role"] == role and m["wall_seconds"] is not None
        ]
        if points:
            xs, ys = zip(*points)
            timeline.plot(xs, [y * 1000 for y in ys], marker=marker, linestyle="none", color=colour, label=role)
    timeline.set_xlabel("run (in execution order)")
    timeline.set_ylabel("wall time (ms)")
    timeline.set_yscale("log")
    timeline.set_title("Per-run wall time")
    if timeline.get_legend_handles_labels()[0]:
        timeline.legend(loc="best")
    else:
        timeline.text(0.5, 0.5, "no timed runs", ha="center", va="center", transform=timeline.transAxes)
    timeline.grid(alpha=0.3)

    speedups = [c for c in report["criteria"] if c["criterion"]["kind"] == "speedup"]
    if speedups and speedups[0]["estimate"] is not None:
        c = speedups[0]
        low, high = c["interval"]
        value = c["estimate"]
        estimate.errorbar(
            [0],
            [value],
            yerr=[[value - low], [high - value]],
            fmt="o",
            color="#222222",
            capsize=8,
            label=f"estimate {value:.2f}x [{low:.2f}, {high:.2f}]",
        )
        estimate.axhline(
            c["criterion"]["threshold"],
            color="#c44e52",
            linestyle="--",
            label=f"criterion {c['criterion']['threshold']:g}x",
        )
        for tier in report.get("tiers", []):
            estimate.axhline(tier["speedup"], color="#8c8c8c", linestyle=":", linewidth=1)
        estimate.set_xlim(-1, 1)
        estimate.set_xticks([])
        estimate.set_ylabel("speedup (baseline / candidate)")
        estimate.legend(loc="best", fontsize=8)
    else:
        estimate.text(0.5, 0.5, "no speedup estimate", ha="center", va="center", transform=estimate.transAxes)
        estimate.set_axis_off()
    estimate.set_title(f"Decision: {report['decision']}")
    figure.tight_layout()
    svg_path = png_path.with_suffix(".svg")
    figure.savefig(png_path, dpi=110)
    figure.savefig(svg_path)
    plt.close(figure)
    return png_path, svg_path

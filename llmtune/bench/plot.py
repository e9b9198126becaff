"""A chart of two bench runs (``llmtune bench --compare A B --plot out.png``).

One panel per test, each with its own scale (prompt processing runs at thousands of tokens/s,
generation at hundreds: on one axis the generation bars would vanish), two bars (before, after)
labelled with their t/s, and the change above them, red where it is a regression by
``compare``'s thresholds. The snapshot's changes are printed under the title.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from llmtune.bench.compare import PP_THRESHOLD_PCT, TG_THRESHOLD_PCT, compare
from llmtune.bench.results import BenchRun

BEFORE_COLOR = "#8c8c8c"
AFTER_COLOR = "#2c7fb8"
REGRESSION_COLOR = "#d7301f"
PANEL_WIDTH_IN = 2.4
HEIGHT_IN = 4.2


def _rate(value: float) -> str:
    """A bar's label: "9855" for thousands, "273.8" below: the digits that are not noise."""
    return f"{value:.0f}" if value >= 1000 else f"{value:.1f}"


def plot_compare(
    a: BenchRun,
    b: BenchRun,
    path: str | Path,
    *,
    tg_pct: float = TG_THRESHOLD_PCT,
    pp_pct: float = PP_THRESHOLD_PCT,
) -> Path:
    """Write the chart of ``a`` (before) and ``b`` (after) to ``path`` (PNG); returns the path."""
    verdict = compare(a, b, tg_pct, pp_pct)
    deltas = verdict.deltas
    if not deltas:
        raise ValueError("neither run has a result to plot")
    # Agg (no display, no pyplot state): the same picture on a server as on a desktop.
    figure = Figure(figsize=(max(4.8, PANEL_WIDTH_IN * len(deltas)), HEIGHT_IN), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(deltas), squeeze=False)[0]
    for ax, delta in zip(axes, deltas, strict=True):
        values = [delta.before or 0.0, delta.after or 0.0]
        after_color = REGRESSION_COLOR if delta.regression else AFTER_COLOR
        bars = ax.bar(["before", "after"], values, color=[BEFORE_COLOR, after_color], width=0.6)
        for bar, value, present in zip(
            bars, values, (delta.before is not None, delta.after is not None), strict=True
        ):
            ax.annotate(
                _rate(value) if present else "none",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        change = delta.brief().removeprefix(delta.test).strip()
        ax.set_title(
            f"{delta.test}\n{change}",
            fontsize=9,
            color=REGRESSION_COLOR if delta.regression else "black",
        )
        ax.set_ylim(0, max(values) * 1.18 or 1.0)
        ax.tick_params(labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("tokens/s (median of the repetitions)", fontsize=8)
    changes = ", ".join(verdict.changes) or "snapshot unchanged"
    title = f"{a.label}  ->  {b.label}\n" + "\n".join(textwrap.wrap(changes, 110)[:3])
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out, format="png")
    return out

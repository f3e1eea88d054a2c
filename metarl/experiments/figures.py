"""The report's figures (matplotlib, the optional `plots` extra): curves, held-out evaluations, adaptation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metarl import runs as run
from metarl.common.files import number, replaced_atomically
from metarl.experiments.records import ANIL_PAPER_TABLE2, MAML_PAPER_CURVES, ReportError, RunRecord, variant_label
from metarl.experiments.sweep import (
    EVAL_STEPS,
    EVAL_TASKS,
)
from metarl.experiments.tables import method_label, method_order

# -- figures ------------------------------------------------------------------------------------------------------

PNG_COLOURS = 256  # a figure's PNG as a palette of this many colours: about 40% of the RGBA file, the same to the eye


def save_figure(fig, path: Path, dpi: int) -> Path:
    """Write `fig` to the PNG `path` (atomically) with its colours reduced to a palette (compact_png), and close
    it: line plots hold few colours, so the tracked figures take a fraction of their full-colour size."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    buffer.seek(0)
    compact_png(buffer, Path(path))
    return Path(path)


def compact_png(source, target: Path | None = None) -> None:
    """The PNG `source` (a path or a file object) as a palette of PNG_COLOURS colours, without dithering, written to
    `target` (default: over `source`) atomically. Pillow comes with matplotlib."""
    from PIL import Image

    target = Path(source if target is None else target)
    with Image.open(source) as image:
        palette = image.convert("RGB").quantize(PNG_COLOURS, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    with replaced_atomically(target) as tmp:
        palette.save(tmp, format="PNG", optimize=True)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or a one-line ReportError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ReportError("the report draws its figures with matplotlib, which is not installed; install the "
                          "`plots` extra: pip install \"metarl[plots]\" (in a checkout: pip install -e \".[plots]\")"
                          ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def aligned_curve(group: list[RunRecord]):
    """Align seeds by iteration (their env steps differ when episodes end early); average over seeds present."""
    table: dict[int, list[tuple[float, float]]] = {}
    for r in group:
        for iteration, steps, ret in r.curve:
            table.setdefault(iteration, []).append((steps, ret))
    its = sorted(table)
    x = np.array([np.mean([s for s, _ in table[i]]) for i in its])
    values = [np.array([v for _, v in table[i]]) for i in its]
    return x, np.array([v.mean() for v in values]), np.array([v.min() for v in values]), \
        np.array([v.max() for v in values])


def held_out_series(group: list[RunRecord]):
    """The held-out evaluations of seeds aligned by iteration: (iterations, mean, min, max) over the seeds present."""
    table: dict[int, list[float]] = {}
    for r in group:
        for iteration, value in r.held_out.items():
            table.setdefault(iteration, []).append(number(value))
    its = sorted(table)
    return (np.array(its), np.array([np.mean(table[i]) for i in its]), np.array([min(table[i]) for i in its]),
            np.array([max(table[i]) for i in its]))


def plot_methods(env: str, runs: list[RunRecord], out: Path, name: str, series, has_data, labels: tuple) -> str | None:
    """One line per method (mean over seeds) with a min-max band, from `series(group) -> (x, mean, low, high)` over
    the env's runs that `has_data`; `labels`: x label, y label, title. Returns the file name (None: nothing drawn)."""
    plt = pyplot()
    by_method: dict[str, list[RunRecord]] = {}
    for r in runs:
        if r.env == env and has_data(r):
            by_method.setdefault(r.method, []).append(r)
    if not by_method:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in method_order(by_method):
        group = by_method[method]
        x, mean, low, high = series(group)
        label = method.upper() if "+" not in method else variant_label(method).replace(" (ours)", "")
        (line,) = ax.plot(x, mean, label=f"{label} ({len(group)} seed{'s' if len(group) > 1 else ''})")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.25)
    xlabel, ylabel, title = labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out / name, dpi=120)
    return name


def plot_curves(env: str, runs: list[RunRecord], out: Path) -> str | None:
    """Meta-training curves: post-adaptation return against env steps, mean and min-max over seeds, per method."""
    return plot_methods(env, runs, out, f"curves_{run.file_safe(env)}.png", aligned_curve, lambda r: r.curve,
                        ("environment steps (mean over seeds)", "post-adaptation return (meta-batch mean)",
                         f"{env}: meta-training (band: min-max over seeds)"))


def plot_held_out(env: str, runs: list[RunRecord], out: Path) -> str | None:
    """Held-out return after one step at each evaluation during training (every eval_every iterations, the same
    tasks) against the iteration: mean and min-max over seeds, per method. A run that falls from a peak shows here."""
    return plot_methods(env, runs, out, f"heldout_{run.file_safe(env)}.png", held_out_series, lambda r: r.held_out,
                        ("meta-iteration", "held-out return after one step",
                         f"{env}: held-out during training (band: min-max over seeds)"))


def plot_adaptation(env: str, cells: dict, out: Path) -> str | None:
    """Return against adaptation steps 0..3: ours and the baselines (mean ± std over seeds), the papers' dashed."""
    plt = pyplot()
    if not cells and env not in MAML_PAPER_CURVES:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    steps = np.arange(EVAL_STEPS + 1)
    for method in method_order(cells):
        cell = cells[method]
        keys = [f"return_step_{k}" for k in steps]
        if all(k in cell["mean"] for k in keys):
            ax.errorbar(steps, [cell["mean"][k] for k in keys], yerr=[cell["std"][k] for k in keys], marker="o",
                        capsize=3, label=f"{method_label(method, cell)} ({len(cell['seeds'])} seeds)")
    if env in MAML_PAPER_CURVES:
        ax.plot(steps, MAML_PAPER_CURVES[env], "k--", marker="s", label="MAML, Finn et al. 2017 (reference)")
    for method, marker in (("anil", "^"), ("maml", "v")):
        paper = ANIL_PAPER_TABLE2[method].get(env)
        if paper:
            ax.errorbar([1], [paper[0]], yerr=[paper[1]], fmt=marker, color="gray", capsize=3,
                        label=f"{method.upper()}, ANIL paper Table 2 (avg return)")
    ax.set_xticks(steps)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(f"mean return over {EVAL_TASKS} held-out tasks")
    ax.set_title(f"{env}: adaptation on held-out tasks (mean ± std over seeds)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    name = f"adaptation_{run.file_safe(env)}.png"
    fig.tight_layout()
    save_figure(fig, out / name, dpi=120)
    return name

"""PNG pictures of evaluation analyses and training curves (matplotlib, off-screen Agg canvas).

No pyplot: figures are drawn on their own Agg canvas, so importing this module never changes the backend of
a notebook or a GUI session, and every PNG is written atomically (temp file + rename).
"""
import io
import math
import os

import numpy as np

from .io import atomic_save_bytes

__all__ = ["save_figure", "plot_pr_curves", "plot_error_breakdown", "plot_confusion_matrix",
           "plot_training_curves", "plot_training_log"]

# Colours of the error-breakdown steps, darkest (strictest) first.
_STEP_COLORS = ("#1f3b73", "#2e6fb7", "#4fa3d9", "#7cc47c", "#f2c14e", "#f08a4b", "#d9534f")


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi=100):
    """Render ``fig`` to PNG and write it atomically; returns ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    atomic_save_bytes(path, buf.getvalue())
    return path


def _grid(n, max_cols=6):
    cols = max(1, min(max_cols, int(math.ceil(math.sqrt(n)))))
    return int(math.ceil(n / float(cols))), cols


def _class_axes(fig, n):
    rows, cols = _grid(n)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def plot_pr_curves(curves, path, title="precision-recall per class"):
    """One small panel per class with its PR curves at IoU 0.50, 0.75 and averaged over 0.50:0.95."""
    names = curves["categories"]
    rows, cols = _grid(len(names))
    fig = _figure(2.6 * cols, 2.4 * rows + 0.6)
    recall = np.asarray(curves["recall"])
    styles = (("0.50", "#2e6fb7", "-"), ("0.75", "#d9534f", "-"), ("0.50:0.95", "#333333", "--"))
    for j, ax in enumerate(_class_axes(fig, len(names))):
        for key, color, ls in styles:
            p = np.asarray(curves["precision"][key])[:, j]
            if (p < 0).all():
                continue
            ap = curves["ap"][key][j]
            ax.plot(recall, np.clip(p, 0, None), color=color, linestyle=ls, linewidth=1.4,
                    label="IoU {} (AP {:.1f})".format(key, 100 * ap))
        ax.set_title(names[j], fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6, loc="lower left")
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", fontsize=8, transform=ax.transAxes)
    fig.suptitle(title)
    fig.supxlabel("recall", fontsize=9)
    fig.supylabel("precision", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _stacked_steps(ax, recall, prec, ap_values, steps, title):
    """Areas under the step curves, strictest in front (mmdetection/COCO analysis style)."""
    for i in range(len(steps) - 1, -1, -1):
        ax.fill_between(recall, 0, prec[i], color=_STEP_COLORS[i % len(_STEP_COLORS)], linewidth=0,
                        label="[{:.3f}] {}".format(ap_values[i], steps[i]))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.0)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize=6, loc="lower left")


def plot_error_breakdown(errors, path, title="error breakdown"):
    """``path``: all classes (mean curve); ``<path stem>_per_class.png``: one panel per class. Returns both."""
    recall, steps, prec = np.asarray(errors["recall"]), errors["steps"], np.asarray(errors["precision"])
    has_gt = np.asarray(errors.get("has_gt", np.ones(prec.shape[2], dtype=bool)))
    mean_prec = prec[:, :, has_gt].mean(axis=2) if has_gt.any() else np.zeros(prec.shape[:2])
    fig = _figure(6.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    _stacked_steps(ax, recall, mean_prec, [errors["mean_ap"][s] for s in steps], steps, title + " (all classes)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    fig.tight_layout()
    save_figure(fig, path)
    names = errors["categories"]
    rows, cols = _grid(len(names))
    fig = _figure(2.8 * cols, 2.6 * rows + 0.5)
    for j, ax in enumerate(_class_axes(fig, len(names))):
        _stacked_steps(ax, recall, prec[:, :, j], [errors["ap"][s][j] for s in steps], steps, names[j])
    fig.suptitle(title + " per class")
    fig.tight_layout()
    stem, ext = os.path.splitext(path)
    per_class = save_figure(fig, stem + "_per_class" + (ext or ".png"))
    return [path, per_class]


def plot_confusion_matrix(matrix, names, path, title="confusion matrix"):
    """Row-normalised colours (share of each true class) with the counts written in the cells."""
    matrix = np.asarray(matrix)
    n = len(names)
    size = max(4.5, min(0.45 * n + 2.5, 30.0))
    fig = _figure(size, size)
    ax = fig.add_subplot(1, 1, 1)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, np.maximum(totals, 1))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    fs = 8 if n <= 20 else 5
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=fs)
    ax.set_yticklabels(names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=fs,
                            color="white" if share[i, j] > 0.6 else "black")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training_curves(log, path, title=None):
    """Losses, learning rate and evaluation AP of a :class:`~ppdet_htc.utils.train_log.TrainLog`."""
    iters = np.asarray(log.iters)
    panels = 3 if log.evals else 2
    fig = _figure(7.5, 2.6 * panels + 0.4)
    ax = fig.add_subplot(panels, 1, 1)
    total = log.losses.get("loss")
    for name, values in log.losses.items():
        if name == "loss":
            continue
        ax.plot(iters, values, linewidth=0.9, alpha=0.8, label=name)
    if total is not None:
        ax.plot(iters, total, color="black", linewidth=1.8, label="loss (total)")
    positive = [v for vals in log.losses.values() for v in vals if v == v and v > 0]
    if positive:
        ax.set_yscale("log")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax = fig.add_subplot(panels, 1, 2)
    ax.plot(iters, log.lr, color="#2e6fb7")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    if log.evals:
        ax = fig.add_subplot(panels, 1, 3)
        x = [e["iter"] for e in log.evals]
        ax.plot(x, [e["bbox_ap"] for e in log.evals], "o-", label="box AP")
        masks = [(e["iter"], e["mask_ap"]) for e in log.evals if e["mask_ap"] is not None]
        if masks:
            ax.plot([m[0] for m in masks], [m[1] for m in masks], "s-", label="mask AP")
        for xi, e in zip(x, log.evals):
            ax.annotate("{:.1f}".format(e["bbox_ap"]), (xi, e["bbox_ap"]), textcoords="offset points", xytext=(0, 5),
                        ha="center", fontsize=7)
        ax.set_ylabel("AP (%)")
        ax.set_xlim(0, max(iters.max(), max(x)) * 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_xlabel("iteration" + (" ({} per epoch)".format(log.steps_per_epoch) if log.steps_per_epoch else ""))
    fig.suptitle(title or "training")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training_log(log_path, output_path=None):
    """Parse ``log_path`` and write its curves; default output: ``<log path without .log>_curves.png``."""
    from .train_log import parse_train_log

    log = parse_train_log(log_path)
    if output_path is None:
        output_path = os.path.splitext(log_path)[0] + "_curves.png"
    return plot_training_curves(log, output_path, title=os.path.basename(log_path))

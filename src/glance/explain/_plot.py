"""Matplotlib figures of a :class:`~glance.explain.LocalExplanation` (one image at a time)."""

from __future__ import annotations

from typing import Any

import numpy as np

from glance.exceptions import ConfigError

_KINDS = ("summary", "traversal", "interaction", "counterfactual")


def _show(ax: Any, img: np.ndarray, title: str) -> None:
    """Draw a uint8 (C, H, W) image without axes."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] == 1:
        ax.imshow(arr[0], cmap="gray", vmin=0, vmax=255)
    elif arr.ndim == 3:
        ax.imshow(np.moveaxis(arr, 0, -1))
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def figure(exp: Any, i: int, kind: str) -> Any:
    """Build the figure of ``kind`` for image ``i``."""
    if kind not in _KINDS:
        raise ConfigError(f"'kind' of LocalExplanation.plot must be one of {_KINDS}; got {kind!r}")
    if not -len(exp) <= i < len(exp):
        raise IndexError(f"LocalExplanation.plot: image {i} out of range for {len(exp)} images")
    draw = {
        "summary": _summary,
        "traversal": _traversal,
        "interaction": _interaction,
        "counterfactual": _counterfactual,
    }
    return draw[kind](exp, i)


def _label(exp: Any, k: int, p: float) -> str:
    return f"{exp.classes[k]} ({p:.2f})"


def node_label(exp: Any, node: str) -> str:
    """``node``, with the fraction of an asked change its twin draws where the explanation
    flags it (``meta["partly_drawn"]``: its bar is then under- or overstated)."""
    drawn = (getattr(exp, "meta", None) or {}).get("partly_drawn", {}).get(node)
    return node if drawn is None else f"{node} (drawn {drawn:.0%})"


def _summary(exp: Any, i: int) -> Any:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(10, 4.2))
    fig.subplots_adjust(left=0.03, right=0.98, wspace=0.9, hspace=0.5)
    grid = fig.add_gridspec(2, 4)
    pred = int(exp.prediction[i])
    _show(
        fig.add_subplot(grid[0, 0]),
        exp.images[i],
        "input: " + _label(exp, pred, exp.probabilities[i, pred]),
    )
    rp = int(exp.reconstruction_prediction[i])
    if exp.reconstructions.ndim == 4:
        _show(
            fig.add_subplot(grid[1, 0]),
            exp.reconstructions[i],
            "reconstruction: " + _label(exp, rp, exp.reconstruction_probabilities[i, rp]),
        )
    cf = exp.counterfactual
    if cf is not None and cf.images is not None:
        shifts = ", ".join(f"{k}{v:+.1f}" for k, v in cf.nodes[i].items()) or "none"
        ok = "valid" if cf.valid[i] else "NOT valid"
        _show(
            fig.add_subplot(grid[0, 1]),
            cf.images[i],
            f"counterfactual ({ok}): {_label(exp, int(cf.prediction[i]), cf.probability[i])}"
            f"\n{shifts}",
        )
    ax = fig.add_subplot(grid[:, 2])
    order = np.argsort(exp.importance[i])
    y = np.arange(len(order))
    _importance_bars(ax, exp, i, order)
    ax.set_yticks(y, [node_label(exp, exp.nodes[j]) for j in order], fontsize=7)
    ax.set_xlabel(f"mean |Δ p({exp.classes[int(exp.target[i])]})|")
    ax.legend(fontsize=6 if getattr(exp, "significance", None) is not None else 7)
    ax = fig.add_subplot(grid[:, 3])
    for j in np.argsort(-exp.importance[i])[:6]:
        ax.plot(exp.deltas, exp.curves[i, j], marker="o", label=exp.nodes[j])
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("shift δ (node std)")
    ax.set_ylabel("Δ p(target), total effect")
    ax.legend(fontsize=7)
    return fig


def _importance_bars(ax: Any, exp: Any, i: int, order: np.ndarray) -> None:
    """Total and direct importance bars of image ``i``, nodes in ``order`` bottom-up.

    With a significance test, total bars of nodes that do not beat the random concepts are grey
    and hatched, and a dashed line marks the random concepts' ``1 − alpha`` quantile.
    """
    y = np.arange(len(order))
    imp = exp.importance[i, order]
    tested = getattr(exp, "significance", None) is not None
    sig = exp.significant()[i, order] if tested else np.ones(len(order), bool)
    if sig.any():
        ax.barh(y[sig] + 0.2, imp[sig], height=0.4, color="C0", label="total")
    if not sig.all():
        ax.barh(
            y[~sig] + 0.2,
            imp[~sig],
            height=0.4,
            color="lightgrey",
            edgecolor="dimgrey",
            hatch="///",
            label=f"total, not significant vs\n{exp.n_random} random concepts, p > {exp.alpha:g}",
        )
    if np.all(np.isfinite(exp.direct_importance[i])):
        ax.barh(y - 0.2, exp.direct_importance[i, order], height=0.4, color="C1", label="direct")
    if tested:
        ax.axvline(
            float(np.quantile(exp.random_importance[i], 1.0 - exp.alpha)),
            color="black",
            ls="--",
            lw=0.8,
            label=f"random concepts,\n{1 - exp.alpha:.0%} quantile",
        )


def _mosaic(tiles: np.ndarray, labels: list[list[str]], rows: list[str], cols: list[str]) -> Any:
    """One image of ``tiles`` (R, C, ch, H, W) with a caption under each tile.

    A single ``imshow`` instead of R × C axes keeps big grids fast to draw.
    """
    import matplotlib.pyplot as plt

    r, c, ch, h, w = tiles.shape
    pad = max(2, h // 8)
    cap = max(6, h // 3)  # room under each tile for its caption
    canvas = np.full((r * (h + pad + cap), c * (w + pad), 3), 255, np.uint8)
    for i in range(r):
        for j in range(c):
            t = tiles[i, j]
            t = np.repeat(t, 3, 0) if ch == 1 else t[:3]
            y, x = i * (h + pad + cap), j * (w + pad)
            canvas[y : y + h, x : x + w] = np.moveaxis(t, 0, -1)
    scale = max(1.0, 40.0 / h)
    fig = plt.figure(figsize=(0.03 * scale * canvas.shape[1] + 1.2, 0.03 * scale * canvas.shape[0]))
    ax = fig.add_axes((0.12, 0.06, 0.86, 0.92))
    ax.imshow(canvas, interpolation="nearest")
    for i in range(r):
        for j in range(c):
            ax.text(
                j * (w + pad) + w / 2,
                i * (h + pad + cap) + h + cap * 0.55,
                labels[i][j],
                ha="center",
                va="center",
                fontsize=6,
            )
    ax.set_yticks([i * (h + pad + cap) + h / 2 for i in range(r)], rows, fontsize=7)
    ax.set_xticks([j * (w + pad) + w / 2 for j in range(c)], cols, fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


def _traversal(exp: Any, i: int) -> Any:
    v, g = exp.traversal_classes.shape[1:]
    labels = [
        [
            _label(exp, int(exp.traversal_classes[i, j, c]), exp.traversal_probabilities[i, j, c])
            for c in range(g)
        ]
        for j in range(v)
    ]
    return _mosaic(
        exp.traversal_images[i], labels, list(exp.nodes), [f"δ={d:+g}" for d in exp.deltas]
    )


def _interaction(exp: Any, i: int) -> Any:
    ia = exp.interactions
    a, b = ia.grid_nodes[i]
    g = ia.grid_classes.shape[1]
    labels = [
        [
            _label(exp, int(ia.grid_classes[i, r, c]), ia.grid_probabilities[i, r, c])
            for c in range(g)
        ]
        for r in range(g)
    ]
    return _mosaic(
        ia.grid_images[i],
        labels,
        [f"{exp.nodes[a]} {d:+g}" for d in exp.deltas],
        [f"{exp.nodes[b]} {d:+g}" for d in exp.deltas],
    )


def _counterfactual(exp: Any, i: int) -> Any:
    """Before / after pair: the reconstruction, the counterfactual and their difference."""
    import matplotlib.pyplot as plt

    cf = exp.counterfactual
    before = exp.reconstructions[i].astype(np.float64)
    after = cf.images[i].astype(np.float64)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
    fig.subplots_adjust(left=0.02, right=0.98, top=0.78, wspace=0.1)
    rp = int(exp.reconstruction_prediction[i])
    _show(
        axes[0],
        exp.reconstructions[i],
        "before: " + _label(exp, rp, exp.reconstruction_probabilities[i, rp]),
    )
    ok = "valid" if cf.valid[i] else "NOT valid"
    _show(
        axes[1],
        cf.images[i],
        f"after ({ok}): {_label(exp, int(cf.prediction[i]), cf.probability[i])}",
    )
    diff = (after - before).mean(0)
    lim = max(float(np.abs(diff).max()), 1.0)
    axes[2].imshow(diff, cmap="coolwarm", vmin=-lim, vmax=lim)
    axes[2].set_title("after − before", fontsize=7)
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    shifts = ", ".join(f"{k} {v:+.1f} std" for k, v in cf.nodes[i].items()) or "no intervention"
    fig.suptitle(f"counterfactual to {exp.classes[int(cf.target[i])]}: {shifts}", fontsize=8)
    return fig

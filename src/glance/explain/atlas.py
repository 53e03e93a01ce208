"""The concept atlas: what every node of the concept space *is*, measured and said in words.

Free concepts are most of the concept space, and an explanation that says ``concept_3`` matters
means nothing until the reader knows what ``concept_3`` does. For every node (aligned contexts
and free concepts alike) the atlas measures, on the same held-out images:

- a **traversal strip**: the images generated with the node moved by ``deltas`` node standard
  deviations (clipped to the node's support, descendants following through the SCM), with the
  real classifier's verdict on each;
- its **correlation with each context** (Pearson r of the node's encoded value with the observed
  context, where known) and **with each class** (point-biserial r with "the classifier predicts
  this class");
- its **effect on the real classifier**: per class, the mean change of that class's probability
  per node standard deviation, how much moving it changes the probability of the predicted class
  (mean ``|Δp|``, the importance of local explanations) and the decisions it flips
  (``7 → 9``);
- a **description** generated from those measurements, e.g. "raising it moves the classifier 7 →
  9 (12% of images); unrelated to thickness and intensity".

Nodes are ordered by global importance (the SCM's, when the model has one; else the measured
effect). :meth:`ConceptAtlas.class_attributes` gives, AttFind-style (StylEx, Lang et al. 2021),
the few node directions that most raise the classifier's probability of one class, each with
the image pairs where it did so most.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glance._io import atomic_write_bytes, atomic_write_json, to_jsonable
from glance.exceptions import ConfigError
from glance.explain._engine import Renderer, Request, render_requests
from glance.explain._twin import Twin

__all__ = ["ConceptAtlas", "concept_atlas", "MOVES_OUTPUT", "RELATED"]

#: A node "moves the output" when moving it changes the predicted class's probability by at
#: least this much on average (mean |Δp|) ...
MOVES_OUTPUT = 0.05
#: ... and by at least this fraction of the node that moves it most.
MOVES_RELATIVE = 0.1
#: |r| from which a node is described as tracking a context or a class.
RELATED = 0.5
#: |r| below which a node is described as unrelated to a context.
UNRELATED = 0.3
#: Class attributes listed per class (AttFind's "top-k").
TOP_ATTRIBUTES = 3


@dataclass
class ConceptAtlas:
    """Measurements and descriptions of every node; see the module docstring.

    Attributes
    ----------
    nodes, node_kinds, classes, contexts : list of str
    deltas : list of float
        Node moves of the strips and the measurements, in node standard deviations.
    order : list of int
        Node indices, most important first.
    importance : ndarray of shape (n_nodes,)
        The importance the order follows; ``importance_source`` says whose.
    strips : ndarray of uint8, shape (n_nodes, n_strip, n_deltas, C, H, W)
        The traversal strips (the same held-out images for every node).
    strip_predictions : ndarray of shape (n_nodes, n_strip, n_deltas)
        The real classifier's class index for every strip image.
    context_r : ndarray of shape (n_nodes, n_contexts)
    class_r : ndarray of shape (n_nodes, n_classes)
    effect : ndarray of shape (n_nodes, n_classes)
        Mean change of each class's probability per node standard deviation.
    moved : ndarray of shape (n_nodes,)
        Mean |Δp| of the predicted class over the images and moves.
    flips : list of list of dict
        Per node, the decision changes ``{"direction": "raise"|"lower", "from", "to",
        "fraction"}``, most frequent first.
    descriptions : list of str
    attributes : dict
        :meth:`class_attributes` for every class the classifier predicted on the images.
    n_images : int
    """

    nodes: list[str]
    node_kinds: list[str]
    classes: list[str]
    contexts: list[str]
    deltas: list[float]
    order: list[int]
    importance: np.ndarray
    importance_source: str
    strips: np.ndarray
    strip_predictions: np.ndarray
    context_r: np.ndarray
    class_r: np.ndarray
    effect: np.ndarray
    moved: np.ndarray
    flips: list[list[dict]]
    descriptions: list[str]
    attributes: dict[str, list[dict]] = field(default_factory=dict)
    n_images: int = 0

    def index(self, node: str) -> int:
        """Position of ``node`` in :attr:`nodes`."""
        if node not in self.nodes:
            raise ConfigError(f"unknown node {node!r}; nodes: {', '.join(self.nodes)}")
        return self.nodes.index(node)

    def describe(self, node: str) -> str:
        """The generated description of ``node``."""
        return self.descriptions[self.index(node)]

    def moves_output(self, node: str) -> bool:
        """Whether moving ``node`` changes the classifier's output (see :data:`MOVES_OUTPUT`)."""
        return _moves(self.moved)[self.index(node)]

    def strongest_context(self, node: str) -> tuple[str, float] | None:
        """The context ``node`` correlates with most, and that r (``None`` without contexts)."""
        r = self.context_r[self.index(node)]
        if r.size == 0 or not np.isfinite(r).any():
            return None
        k = int(np.nanargmax(np.abs(r)))
        return self.contexts[k], float(r[k])

    def class_attributes(self, target: str) -> list[dict]:
        """The node directions that most raise the probability of class ``target``, with image
        pairs (factual reconstruction, moved) where they did so most (AttFind-style)."""
        if target not in self.attributes:
            raise ConfigError(
                f"no class attributes for {target!r}; measured for: {', '.join(self.attributes)}"
            )
        return self.attributes[target]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (images excluded; :meth:`save` writes them as PNG)."""
        entries = []
        for j in self.order:
            entries.append(
                {
                    "node": self.nodes[j],
                    "kind": self.node_kinds[j],
                    "importance": self.importance[j],
                    "description": self.descriptions[j],
                    "moves_output": bool(_moves(self.moved)[j]),
                    "moved": self.moved[j],
                    "context_r": dict(zip(self.contexts, self.context_r[j], strict=True)),
                    "class_r": dict(zip(self.classes, self.class_r[j], strict=True)),
                    "effect": dict(zip(self.classes, self.effect[j], strict=True)),
                    "flips": self.flips[j],
                    "strip": f"strip_{_slug(self.nodes[j])}.png",
                    "strip_predictions": [
                        [self.classes[c] for c in row] for row in self.strip_predictions[j]
                    ],
                }
            )
        attributes = {
            cls: [{k: v for k, v in a.items() if k != "pairs"} for a in found]
            for cls, found in self.attributes.items()
        }
        for cls, found in attributes.items():
            for a in found:
                a["pairs"] = f"attribute_{_slug(cls)}_{_slug(a['node'])}_{a['direction']}.png"
        return to_jsonable(
            {
                "nodes": entries,
                "classes": self.classes,
                "contexts": self.contexts,
                "deltas": self.deltas,
                "importance_source": self.importance_source,
                "n_images": self.n_images,
                "class_attributes": attributes,
                "thresholds": {
                    "moves_output": MOVES_OUTPUT,
                    "moves_relative": MOVES_RELATIVE,
                    "related": RELATED,
                    "unrelated": UNRELATED,
                },
            }
        )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``atlas.json``, one strip PNG per node and one PNG of image pairs per class
        attribute into ``directory`` (inside a run: sealed into it as one transaction)."""
        from glance.run import Run, enclosing_run

        out = Path(directory)

        def write(folder: Path) -> None:
            atomic_write_json(folder / "atlas.json", self.to_dict())
            for j, node in enumerate(self.nodes):
                _save_grid(self.strips[j], folder / f"strip_{_slug(node)}.png")
            for cls, found in self.attributes.items():
                for a in found:
                    name = f"attribute_{_slug(cls)}_{_slug(a['node'])}_{a['direction']}.png"
                    _save_grid(a["pairs"], folder / name)

        outer = enclosing_run(out)
        if outer is not None:
            run = Run.open(outer.path, verify=False)
            run.write_dir(run.relative(out) or "", write)
        else:
            out.mkdir(parents=True, exist_ok=True)
            write(out)
        return out / "atlas.json"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(name))


def _save_grid(grid: np.ndarray, path: Path, pad: int = 2) -> None:
    """uint8 (rows, cols, C, H, W) → one PNG, white gutters."""
    from PIL import Image

    rows, cols, c, h, w = grid.shape
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for r in range(rows):
        for q in range(cols):
            y, x = pad + r * (h + pad), pad + q * (w + pad)
            canvas[y : y + h, x : x + w] = np.moveaxis(grid[r, q], 0, -1)
    img = Image.fromarray(canvas[:, :, 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
    if max(img.size) < 240:  # small digits: enlarge so a person can see the change
        scale = max(1, 240 // max(img.size))
        img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _moves(moved: np.ndarray) -> np.ndarray:
    top = float(np.max(moved)) if moved.size else 0.0
    return (moved >= MOVES_OUTPUT) & (moved >= MOVES_RELATIVE * top)


@torch.no_grad()
def concept_atlas(
    twin: Twin,
    images: torch.Tensor,
    *,
    contexts: Mapping[str, np.ndarray] | None = None,
    importance: Mapping[str, float] | None = None,
    deltas: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0),
    n_strip: int = 6,
    batch_size: int = 256,
) -> ConceptAtlas:
    """Measure and describe every node of ``twin`` on ``images`` (held-out images).

    Parameters
    ----------
    twin
        The model (``Glance.twin()``).
    images : Tensor of shape (N, C, H, W)
        Held-out images in [0, 1]; the first ``n_strip`` give the strips.
    contexts
        Observed context values per image (``NaN`` where unknown), by name.
    importance
        Global importance per node (e.g. summed ``|effect|`` of the SCM over the outputs);
        ``None``: order by the measured effect on the classifier.
    deltas
        Node moves in node standard deviations; must contain 0 (the reconstruction).
    n_strip
        Images in each strip.
    """
    deltas = [float(d) for d in deltas]
    if 0.0 not in deltas or len(images) < 2:
        raise ConfigError("concept_atlas needs 0 among the deltas and at least 2 images")
    n, d, k = len(images), twin.n_nodes, len(twin.classes)
    z = twin.encode(images).float()
    renderer = Renderer(twin, batch_size=batch_size, keep_images=True)
    requests = [
        Request(
            z,
            {j: twin.shift(j, z[:, j], torch.full((n,), delta))} if delta else {},
        )
        for j in range(d)
        for delta in deltas
    ]
    answers = render_requests(renderer, requests, "atlas")
    probs = np.stack([p for p, _ in answers]).reshape(d, len(deltas), n, k)
    imgs = np.stack([im for _, im in answers]).reshape(d, len(deltas), n, *images.shape[1:])
    zero = deltas.index(0.0)
    factual = probs[0, zero]  # every node's delta-0 row is the same reconstruction
    pred = factual.argmax(1)
    moved = np.abs(probs[:, :, np.arange(n), pred] - factual[np.arange(n), pred]).mean(axis=(1, 2))
    up, down = max(deltas), min(deltas)
    effect = (probs[:, deltas.index(up)] - probs[:, deltas.index(down)]).mean(axis=1) / (up - down)
    zn = z.cpu().numpy().astype(np.float64)
    names = list(contexts or {})
    context_r = np.array(
        [
            [_pearson(zn[:, j], np.asarray(contexts[c], dtype=np.float64)) for c in names]
            for j in range(d)
        ]
    ).reshape(d, len(names))
    class_r = np.array(
        [[_pearson(zn[:, j], (pred == c).astype(np.float64)) for c in range(k)] for j in range(d)]
    )
    flips = [_flips(probs[j], pred, deltas, list(twin.classes)) for j in range(d)]
    if importance is not None:
        imp = np.array([float(importance.get(node, 0.0)) for node in twin.nodes])
        source = "scm"
    else:
        imp, source = moved.copy(), "measured"
    order = sorted(range(d), key=lambda j: -imp[j])
    s = min(n_strip, n)
    atlas = ConceptAtlas(
        nodes=list(twin.nodes),
        node_kinds=list(twin.node_kinds),
        classes=list(twin.classes),
        contexts=names,
        deltas=deltas,
        order=order,
        importance=imp,
        importance_source=source,
        strips=np.moveaxis(imgs[:, :, :s], 1, 2),  # (d, s, deltas, C, H, W)
        strip_predictions=np.moveaxis(probs[:, :, :s].argmax(-1), 1, 2),
        context_r=context_r,
        class_r=class_r,
        effect=effect,
        moved=moved,
        flips=flips,
        descriptions=[],
        n_images=n,
    )
    atlas.descriptions = [_describe(atlas, j) for j in range(d)]
    atlas.attributes = _class_attributes(atlas, probs, imgs, pred, zero)
    return atlas


def _flips(p: np.ndarray, pred: np.ndarray, deltas: list[float], classes: list[str]) -> list[dict]:
    """Decision changes when the node is raised / lowered, most frequent first."""
    n = len(pred)
    out = []
    for direction, sign in (("raise", 1), ("lower", -1)):
        moves = [i for i, dl in enumerate(deltas) if np.sign(dl) == sign]
        counts: Counter = Counter()
        for i in moves:
            new = p[i].argmax(1)
            for a, b in zip(pred[new != pred], new[new != pred], strict=True):
                counts[(int(a), int(b))] += 1
        for (a, b), c in counts.most_common(3):
            out.append(
                {
                    "direction": direction,
                    "from": classes[a],
                    "to": classes[b],
                    "fraction": c / (n * max(1, len(moves))),
                }
            )
    return sorted(out, key=lambda f: -f["fraction"])


def _describe(atlas: ConceptAtlas, j: int) -> str:
    """One or two sentences from the measurements of node ``j``."""
    parts = [_describe_output(atlas, j)]
    ctx = _describe_contexts(atlas, j)
    if ctx:
        parts.append(ctx)
    cls = _describe_classes(atlas, j)
    if cls:
        parts.append(cls)
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _describe_output(atlas: ConceptAtlas, j: int) -> str:
    if not _moves(atlas.moved)[j]:
        return f"barely moves the classifier's output (mean |Δp| {atlas.moved[j]:.3f})"
    phrases = []
    for direction in ("raise", "lower"):
        found = [f for f in atlas.flips[j] if f["direction"] == direction and f["fraction"] >= 0.02]
        if found:
            moves = " and ".join(
                f"{f['from']} → {f['to']} ({100 * f['fraction']:.0f}%)" for f in found[:2]
            )
            phrases.append(f"{'raising' if direction == 'raise' else 'lowering'} it moves {moves}")
    if not phrases:
        c = int(np.argmax(np.abs(atlas.effect[j])))
        sign = "raises" if atlas.effect[j, c] > 0 else "lowers"
        phrases.append(
            f"moves the classifier's output: raising it {sign} p({atlas.classes[c]}) by "
            f"{abs(atlas.effect[j, c]):.2f} per std"
        )
    return "; ".join(phrases) + f" (mean |Δp| {atlas.moved[j]:.2f})"


def _describe_contexts(atlas: ConceptAtlas, j: int) -> str:
    if not atlas.contexts:
        return ""
    r = atlas.context_r[j]
    strong = [(c, v) for c, v in zip(atlas.contexts, r, strict=True) if abs(v) >= RELATED]
    if strong:
        strong.sort(key=lambda cv: -abs(cv[1]))
        return "tracks " + " and ".join(f"{c} (r = {v:+.2f})" for c, v in strong)
    if np.all(np.abs(np.nan_to_num(r)) < UNRELATED):
        return f"unrelated to {' and '.join(atlas.contexts)} (|r| < {UNRELATED})"
    k = int(np.nanargmax(np.abs(r)))
    return f"weakly related to {atlas.contexts[k]} (r = {r[k]:+.2f})"


def _describe_classes(atlas: ConceptAtlas, j: int) -> str:
    r = np.nan_to_num(atlas.class_r[j])
    if r.size == 0 or np.max(np.abs(r)) < RELATED:
        return ""
    hi, lo = int(np.argmax(r)), int(np.argmin(r))
    bits = []
    if r[hi] >= RELATED:
        bits.append(f"high where the classifier says {atlas.classes[hi]} (r = {r[hi]:+.2f})")
    if r[lo] <= -RELATED:
        bits.append(f"low where it says {atlas.classes[lo]} (r = {r[lo]:+.2f})")
    return ", ".join(bits)


def _class_attributes(
    atlas: ConceptAtlas, probs: np.ndarray, imgs: np.ndarray, pred: np.ndarray, zero: int
) -> dict[str, list[dict]]:
    """Per predicted class: the node directions that raise its probability most (AttFind)."""
    out: dict[str, list[dict]] = {}
    d, n_deltas = probs.shape[:2]
    ends = {"raise": int(np.argmax(atlas.deltas)), "lower": int(np.argmin(atlas.deltas))}
    for c in sorted(set(pred.tolist())):
        found = []
        for j in range(d):
            for direction, i in ends.items():
                gain = probs[j, i, :, c] - probs[j, zero, :, c]
                found.append((float(gain.mean()), j, direction, i, gain))
        found.sort(key=lambda t: -t[0])
        entries = []
        for mean_gain, j, direction, i, gain in found[:TOP_ATTRIBUTES]:
            if mean_gain <= 0:
                break
            best = np.argsort(-gain)[:3]
            pairs = np.stack([imgs[j, zero, best], imgs[j, i, best]], axis=1)  # (3, 2, C, H, W)
            entries.append(
                {
                    "node": atlas.nodes[j],
                    "direction": direction,
                    "mean_gain": mean_gain,
                    "gained_predictions": float(
                        np.mean(probs[j, i].argmax(1) == c) - np.mean(pred == c)
                    ),
                    "pairs": pairs,
                }
            )
        out[atlas.classes[c]] = entries
    return out

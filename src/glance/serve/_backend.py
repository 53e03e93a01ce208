"""The explorer's computation: image → concepts → SCM counterfactual → image → classifier.

:class:`ExplorerBackend` runs on a :class:`glance.explain.Twin` (encode, generate, the *real*
classifier, node names and scales, the structural causal model in ``z`` units), so the same code
serves a fitted run (:meth:`ExplorerBackend.from_run`, through ``glance.load``) and the analytic toy
world of :mod:`glance.explain.toy` in tests. Slider values are in units of each node's standard
deviation (``z / node_std``); an intervention sets a node and lets its descendants follow.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from glance.exceptions import DataValidationError, GlanceError

__all__ = ["ExplorerBackend", "UploadError", "DEFAULT_MAX_UPLOAD_BYTES"]

logger = logging.getLogger(__name__)

#: Largest accepted upload (decoded image bytes); ``glance serve --max-upload-bytes``.
DEFAULT_MAX_UPLOAD_BYTES = 1 << 20
#: Most pixels an upload may declare (a 1 MiB file can declare gigapixels of one colour).
MAX_UPLOAD_PIXELS = 4096 * 4096
_MAX_UPLOADS_KEPT = 64
_SLIDER_RANGE = 3.0


class UploadError(DataValidationError):
    """A rejected request to the explorer; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def brief(value: Any, limit: int = 60) -> str:
    """``repr`` of a client-supplied value, cut short: error messages must stay small."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        text = f"<a {type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[:limit] + "…"


def _png_base64(image: torch.Tensor) -> str:
    """(C, H, W) float image in [0, 1] → base64 PNG."""
    from PIL import Image

    arr = (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _intervention_value(node: str, value: Any) -> float:
    """A client's intervention on ``node`` as a float, within ±``10 * _SLIDER_RANGE`` std."""
    bound = 10 * _SLIDER_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UploadError(f"intervention on {node!r} must be a number; got {brief(value)}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer of hundreds of digits
        number = math.inf
    if not math.isfinite(number) or abs(number) > bound:
        raise UploadError(
            f"intervention on {node!r} must be a finite number within ±{bound:g} standard "
            f"deviations; got {brief(value)}"
        )
    return number


class ExplorerBackend:
    """Answer the explorer's questions about one fitted GLANCE model.

    Parameters
    ----------
    twin
        The model as a :class:`glance.explain.Twin`.
    images
        Images to pick from, float32 of shape (n_images, C, H, W) in [0, 1]; may be empty.
    labels
        Optional labels of ``images`` (shown in the picker).
    graph
        ``graph.json`` content to draw (nodes, edges); ``None`` hides the graph panel.
    name
        Title shown in the page.
    image_source
        Where ``images`` came from, for the page (e.g. the held-out split's path).
    max_upload_bytes
        Largest accepted upload, in bytes.
    atlas
        The concept atlas entries, most important first (``atlas/atlas.json``'s ``nodes`` with
        each ``strip`` as a ``data:`` URI), shown next to the sliders.
    threads
        Torch intra-op threads for the explorer's requests (set in the thread that answers).
        ``None`` (default): the cores other processes leave free, re-checked every few seconds
        (:class:`glance.threads.ThreadPolicy`); on a busy 2-core machine two threads answered a
        counterfactual in ~1.3 s where one took ~15 ms, so a shared machine gets one.
    """

    def __init__(
        self,
        twin: Any,
        images: torch.Tensor | None = None,
        labels: Sequence[int] | None = None,
        *,
        graph: Mapping[str, Any] | None = None,
        name: str = "glance",
        image_source: str = "",
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        threads: int | None = None,
        atlas: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        from glance.threads import ThreadPolicy

        self.twin = twin
        self.threads = threads
        self._threads = ThreadPolicy(threads)
        self._threads.start(probe=0.1)
        self.images = images if images is not None else torch.zeros(0)
        self.labels = list(labels) if labels is not None else None
        self.graph = dict(graph) if graph is not None else None
        self.atlas = [dict(a) for a in atlas] if atlas else []
        self.name = name
        self.image_source = image_source
        self.max_upload_bytes = int(max_upload_bytes)
        self.nodes: tuple[str, ...] = tuple(twin.nodes)
        self.has_scm = getattr(twin, "scm", None) is not None
        self.node_std = np.asarray(twin.node_std, dtype=np.float64)
        self._lock = threading.Lock()
        # image_id -> (fitted image, the (width, height) it was uploaded at)
        self._uploads: OrderedDict[str, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()
        self._z_cache: dict[str, torch.Tensor] = {}
        self._factual: dict[str, torch.Tensor] = {}
        self.image_shape: tuple[int, ...] | None = (
            tuple(self.images.shape[1:]) if self.images.ndim == 4 and len(self.images) else None
        )
        if self.image_shape is None:
            # Learn the image shape from the generator itself.
            with torch.no_grad():
                probe = twin.generate(torch.zeros(1, len(self.nodes)))
            self.image_shape = tuple(probe.shape[1:])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        data: str | os.PathLike[str] | None = None,
        n_images: int = 64,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        threads: int | None = None,
        classifier: Any = None,
    ) -> ExplorerBackend:
        """Load a fitted run (verified) and pick the images to explore.

        Parameters
        ----------
        run_dir
            Run directory written by ``glance fit`` (and ``glance graph`` for the SCM).
        data
            Dataset to draw images from (its held-out split); default: the run's own held-out
            split (checked against its recorded fingerprint), else images generated from
            sampled concepts.
        n_images
            How many images to offer.
        max_upload_bytes, threads
            See :class:`ExplorerBackend`.
        classifier
            The classifier, for a run that holds no copy of it (your own architecture).

        Raises
        ------
        CheckpointCorruptError
            The run's manifest check fails.
        """
        from glance.estimator import load
        from glance.report._artifacts import load_run_artifacts

        model = load(run_dir, classifier=classifier)
        run = model.run_
        art = load_run_artifacts(run.path, verify=False)  # verified by load
        has_scm = _attach_scm(model)
        images, labels, source = _pick_images(model, data, n_images)
        backend = cls(
            model.twin(),
            images,
            labels,
            graph=art.graph,
            name=run.path.resolve().name,
            image_source=source,
            max_upload_bytes=max_upload_bytes,
            threads=threads,
            atlas=_atlas_entries(art),
        )
        backend.has_scm = has_scm
        return backend

    # ------------------------------------------------------------------ queries
    def _slider_ranges(self) -> list[tuple[float, float]]:
        """Slider bounds in std units: the node's support when the twin knows it (interventions
        are clipped to it anyway), else ±3 std."""
        rng = getattr(self.twin, "node_range", None)
        if rng is None:
            return [(-_SLIDER_RANGE, _SLIDER_RANGE)] * len(self.nodes)
        return [
            (float(lo / s), float(hi / s))
            for (lo, hi), s in zip(np.asarray(rng), self.node_std, strict=True)
        ]

    def _levels(self) -> list[list[float] | None]:
        """Levels of each discrete node in std units (``None`` for continuous ones)."""
        levels = getattr(self.twin, "node_levels", None) or [None] * len(self.nodes)
        return [
            None if lv is None else [float(v / s) for v in np.asarray(lv)]
            for lv, s in zip(levels, self.node_std, strict=True)
        ]

    def info(self) -> dict:
        """Nodes (name, kind, slider range), classes, image shape, graph (the readable one, its
        story and the full one), the concept atlas, limits."""
        from glance.causal import CausalGraph, graph_story, readable_graph
        from glance.explain.calibration import partly_drawn
        from glance.report._svg import graph_svg

        readable = story = None
        if self.graph:
            with contextlib.suppress(GlanceError, KeyError, TypeError, ValueError):
                full = CausalGraph.from_dict(self.graph)
                readable, story = readable_graph(full).to_dict(), graph_story(full)

        return {
            "name": self.name,
            "classes": list(self.twin.classes),
            "nodes": [
                {
                    "name": n,
                    "kind": k,
                    "std": float(s),
                    "min": lo,
                    "max": hi,
                    "levels": lv,
                    "drawn": dr,
                    "partly_drawn": partly_drawn(dr),
                }
                for n, k, s, (lo, hi), lv, dr in zip(
                    self.nodes,
                    self.twin.node_kinds,
                    self.node_std,
                    self._slider_ranges(),
                    self._levels(),
                    self._drawn(),
                    strict=True,
                )
            ],
            "image_shape": list(self.image_shape or ()),
            "n_images": int(len(self.images)) if self.images.ndim == 4 else 0,
            "image_source": self.image_source,
            "graph": self.graph,
            "graph_svg": graph_svg(self.graph) if self.graph else None,
            "graph_readable_svg": graph_svg(readable) if readable else None,
            "graph_story": story,
            "atlas": self.atlas,
            "max_upload_bytes": self.max_upload_bytes,
            "propagates": bool(self.has_scm),
        }

    def _drawn(self) -> list[float | None]:
        """Per node, the fraction of an asked change the twin draws (``Twin.node_drawn``), or
        ``None`` where the fit did not measure it."""
        drawn = getattr(self.twin, "node_drawn", None)
        if drawn is None:
            return [None] * len(self.nodes)
        return [float(v) if np.isfinite(v) else None for v in drawn]

    def list_images(self) -> list[dict]:
        """The images offered in the picker: ``[{"id", "label"}]``."""
        n = int(len(self.images)) if self.images.ndim == 4 else 0
        return [
            {"id": str(i), "label": None if self.labels is None else int(self.labels[i])}
            for i in range(n)
        ]

    def image_png(self, image_id: str) -> bytes:
        """The picker image ``image_id`` (or an upload) as PNG bytes."""
        return base64.b64decode(_png_base64(self._image(image_id)))

    def _image(self, image_id: str) -> torch.Tensor:
        if image_id in self._uploads:
            return self._uploads[image_id][0]
        n = int(len(self.images)) if self.images.ndim == 4 else 0
        # Short runs of ASCII digits only: int() also takes " 1", "+1", "1_0", other scripts'
        # digits, and spends quadratic time on a long digit string.
        is_index = isinstance(image_id, str) and image_id.isascii() and image_id.isdigit()
        if not is_index or len(image_id) > 12 or int(image_id) >= n:
            raise UploadError(
                f"unknown image_id {brief(image_id)}: the explorer holds images 0..{n - 1}",
                status=404,
            )
        return self.images[int(image_id)]

    # ------------------------------------------------------------------ uploads
    def add_upload(self, data: bytes) -> str:
        """Validate an uploaded PNG/JPEG, fit it to the model's size and keep it; return its
        ``image_id``.

        An image of another size is centre-cropped to the model's aspect ratio and resized
        (Lanczos, antialiased): a user's photo is rarely the classifier's input size. The size
        it came in is kept (:meth:`upload_info`) so that the page can say it was resized.

        Raises
        ------
        UploadError
            Too large (413), not a PNG/JPEG image (415), or declaring more than
            ``MAX_UPLOAD_PIXELS`` pixels (422).
        """
        if len(data) > self.max_upload_bytes:
            raise UploadError(
                f"upload too large: {len(data)} bytes; the limit is {self.max_upload_bytes} bytes",
                status=413,
            )
        if not (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")):
            raise UploadError("upload is not a PNG or JPEG image", status=415)
        pixels, original = self._decode_upload(data)
        tensor = torch.from_numpy(pixels / 255.0)
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        image_id = "upload-" + hashlib.sha256(data).hexdigest()[:16]
        with self._lock:
            self._uploads[image_id] = (tensor.contiguous(), original)
            self._uploads.move_to_end(image_id)
            while len(self._uploads) > _MAX_UPLOADS_KEPT:
                old, _ = self._uploads.popitem(last=False)
                self._z_cache.pop(old, None)
                self._factual.pop(old, None)
        return image_id

    def upload_info(self, image_id: str) -> dict[str, Any]:
        """``{"image_id", "size": [w, h], "resized_from": [w, h] | None}`` of a kept upload."""
        c, h, w = self.image_shape  # type: ignore[misc]
        entry = self._uploads.get(image_id)
        original = entry[1] if entry is not None else None
        resized = original is not None and tuple(original) != (w, h)
        return {
            "image_id": image_id,
            "size": [w, h],
            "resized_from": list(original) if resized else None,
        }

    def _decode_upload(self, data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
        """Pixels of an upload fitted to the model's size, (H, W) or (H, W, 3) float32 in
        [0, 255], and the upload's own (width, height).

        The size the file declares is checked before any pixel is decoded: a file of a few
        hundred bytes can declare gigapixels. PIL itself refuses to open one declaring more than
        twice its ``MAX_IMAGE_PIXELS`` (``DecompressionBombError``, not an ``OSError``).
        """
        from PIL import Image, ImageOps

        c, h, w = self.image_shape  # type: ignore[misc]
        too_many = f"at most {MAX_UPLOAD_PIXELS} pixels are accepted (this model takes {w}×{h})"
        try:
            with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as img:
                original = (int(img.size[0]), int(img.size[1]))
                if original[0] * original[1] > MAX_UPLOAD_PIXELS:
                    raise UploadError(
                        f"upload is {original[0]}×{original[1]} pixels; {too_many}", status=422
                    )
                img.load()
                # A phone's JPEG stores its pixels sideways with an EXIF orientation tag: the
                # classifier must see the picture the way its owner does.
                img = ImageOps.exif_transpose(img) or img
                img = img.convert("L" if c == 1 else "RGB")
                original = (int(img.size[0]), int(img.size[1]))
                if original != (w, h):
                    # Crop to the model's aspect ratio first, so nothing is stretched.
                    img = ImageOps.fit(img, (w, h), method=Image.Resampling.LANCZOS)
                return np.asarray(img, dtype=np.float32), original
        except UploadError:
            raise
        except Image.DecompressionBombError:
            raise UploadError(f"upload declares far too many pixels; {too_many}", 422) from None
        except Exception as exc:
            # PIL's decoders raise many types on hostile bytes (OSError, SyntaxError,
            # struct.error, ...); all mean the same to the client, whom the text would not help.
            logger.debug("unreadable upload: %s: %s", type(exc).__name__, exc)
            raise UploadError("upload is not a readable image", status=415) from None

    @staticmethod
    def decode_base64_image(text: str) -> bytes:
        """Bytes of a base64 image, with or without a ``data:image/...;base64,`` prefix."""
        if not isinstance(text, str):
            raise UploadError("'image' must be a base64 string")
        if text.startswith("data:"):
            text = text.split(",", 1)[-1]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise UploadError("'image' is not valid base64", status=415) from None

    # ------------------------------------------------------------------ counterfactual
    def _z(self, image_id: str) -> torch.Tensor:
        z = self._z_cache.get(image_id)
        if z is None:
            with torch.no_grad():
                z = self.twin.encode(self._image(image_id)[None]).detach().to(torch.float32)
            self._z_cache[image_id] = z
        return z

    def _probabilities(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated images of ``z`` and the real classifier's probabilities on them."""
        images = self.twin.generate(z)
        return images, torch.softmax(self.twin.classify(images).float(), dim=1)

    def _interventions(self, raw: Any) -> dict[int, float]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise UploadError("'interventions' must be an object {node: value}")
        index = {n: i for i, n in enumerate(self.nodes)}
        out = {}
        for name, value in raw.items():
            if name not in index:
                raise UploadError(
                    f"unknown node {brief(name)} in 'interventions'; nodes: {', '.join(self.nodes)}"
                )
            out[index[name]] = _intervention_value(name, value)
        return out

    def counterfactual(self, image_id: str, interventions: Any = None) -> dict:
        """Counterfactual of image ``image_id`` under ``interventions`` ``{node: value in std}``.

        Returns
        -------
        dict
            ``image`` (base64 PNG of G(z')), ``probabilities`` (real classifier on it),
            ``prediction``, ``nodes`` (z' per node, in std units, descendants propagated),
            ``factual`` (z per node), ``changed`` (z' − z per node, in std units),
            ``factual_probabilities`` (real classifier on the reconstruction G(z)).
        """
        ivs = self._interventions(interventions)
        std = torch.as_tensor(self.node_std, dtype=torch.float32)
        with self._lock, torch.no_grad():
            n = self._threads.tick()  # set in this (the answering) thread
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
            z = self._z(image_id)
            p_f = self._factual.get(image_id)
            if p_f is None:  # the reconstruction's probabilities, once per image
                p_f = self._probabilities(z)[1][0]
                self._factual[image_id] = p_f
            values = {j: torch.tensor([v * float(std[j])]) for j, v in ivs.items()}
            z_cf = self.twin.intervene(z, values, total=True) if values else z.clone()
            image, p_cf = self._probabilities(z_cf)
            p_cf = p_cf[0]
        zf, zc = (z[0] / std).numpy(), (z_cf[0] / std).numpy()
        return {
            "image": _png_base64(image[0]),
            "probabilities": [float(p) for p in p_cf],
            "prediction": int(torch.argmax(p_cf)),
            "factual_probabilities": [float(p) for p in p_f],
            "nodes": {n: float(v) for n, v in zip(self.nodes, zc, strict=True)},
            "factual": {n: float(v) for n, v in zip(self.nodes, zf, strict=True)},
            "changed": {
                n: float(b - a)
                for n, a, b in zip(self.nodes, zf, zc, strict=True)
                if abs(b - a) > 1e-6
            },
            "interventions": {self.nodes[j]: v for j, v in ivs.items()},
        }


def _atlas_entries(art: Any) -> list[dict]:
    """The run's concept atlas entries with their strips inlined (empty without an atlas)."""
    from glance.report._artifacts import read_image_file

    nodes = (art.atlas or {}).get("nodes") if isinstance(art.atlas, Mapping) else None
    out = []
    for e in nodes if isinstance(nodes, list) else []:
        if not isinstance(e, Mapping):
            continue
        strip = art.run.file(f"{art.run.atlas_dir}/{e.get('strip')}")
        uri = None
        if strip is not None:
            data, mime = read_image_file(strip)
            uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        out.append(
            {
                "node": str(e.get("node")),
                "description": str(e.get("description", "")),
                "moves_output": bool(e.get("moves_output")),
                "strip": uri,
            }
        )
    return out


def _attach_scm(model: Any) -> bool:
    """Give a loaded model the structural causal model of its run.

    The SCM ``glance graph`` saved is restored by ``glance.load``; a run with only its graph
    (a gradient-boosted SCM is not saved) gets the SCM refitted on its own training data, as
    ``glance graph`` fitted it. Without a graph or that data, interventions do not propagate
    (the explorer says so) and the result is ``False``.
    """
    if getattr(model, "scm_", None) is not None:
        return True
    run = model.run_
    if getattr(model, "graph_", None) is None:
        logger.warning("%s has no causal graph: interventions will not propagate", run.path)
        return False
    try:
        dataset = run.dataset("train")
    except GlanceError as exc:
        logger.warning("%s; interventions will not propagate", exc)
        return False
    model.refit_scm(dataset)
    logger.info("refitted the SCM of %s on its training images", run.path)
    return True


def _pick_images(
    model: Any, data: Any, n_images: int
) -> tuple[torch.Tensor, list[int] | None, str]:
    """Images for the picker: the held-out split of ``data`` (or the run's), else generated."""
    ds = None
    try:
        ds = model.run_.dataset("test", data)
    except GlanceError as exc:
        if data is not None:
            raise
        logger.warning("%s; showing generated images", exc)
    if ds is not None:
        n = min(n_images, len(ds))
        idx = np.arange(n)
        labels = [int(v) for v in np.asarray(ds.labels)[idx]]
        return ds.load_images(idx), labels, f"{ds.source}, first {n}"
    with torch.no_grad():
        z = model.sample_concepts(n_images, random_state=0)
        z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
        return (
            model.generate(z).detach().float().clamp(0, 1),
            None,
            "generated from sampled concepts",
        )

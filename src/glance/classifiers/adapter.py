"""Make any PyTorch image classifier explainable without changing it.

:class:`ClassifierAdapter` splits a classifier ``f`` into ``h`` (the feature maps at one layer) and
the rest, by recording the layer's output with a forward hook during one ordinary forward pass.
The user's model is never modified: hooks exist only for the duration of a call, the train/eval
flag of every submodule is restored afterwards (also after an exception), and the forward pass
runs through :func:`torch.func.functional_call` with *detached* parameters, so gradients reach the
input images (the generator trains through the frozen classifier) but never the parameters'
``.grad``, and ``requires_grad`` is never touched.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from glance.exceptions import ConfigError, IncompatibleClassifierError, ShapeError

__all__ = ["ClassifierAdapter", "RepeatChannels", "Normalize", "find_feature_layer"]

logger = logging.getLogger(__name__)

OutputKey = int | str | Callable[[Any], torch.Tensor] | None

#: Input sizes tried, in order, when neither the caller nor the model states one.
_CANDIDATE_SIZES = ((28, 28), (32, 32), (64, 64), (224, 224))


class RepeatChannels(nn.Module):
    """Input transform repeating a 1-channel image to ``n`` channels (grey → RGB models)."""

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.n = int(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, self.n, -1, -1) if x.shape[1] == 1 else x


class Normalize(nn.Module):
    """Input transform ``(x - mean) / std`` per channel (the model's own normalisation).

    Parameters
    ----------
    mean, std
        One value per channel (or one value for all channels).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if (std_t <= 0).any():
            raise ConfigError(f"the 'std' parameter of Normalize must be > 0; got {list(std)}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _model_name(model: nn.Module) -> str:
    return type(model).__name__


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


# Serialises mode switches: two threads (e.g. explorer requests) sharing one model would
# otherwise record each other's eval flags and leave the model in eval mode for good.
_MODE_LOCK = threading.RLock()


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each module's own flag afterwards."""
    with _MODE_LOCK:
        flags = [(m, m.training) for m in model.modules()]
        try:
            model.eval()
            yield
        finally:
            for m, flag in flags:
                m.training = flag  # set directly: .train() would recurse into children


@contextlib.contextmanager
def _recording(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, Any]]:
    """Record the output of each module in ``modules`` (last call wins) while the block runs."""
    outputs: dict[str, Any] = {}
    handles = []
    try:
        for name, module in modules.items():

            def hook(_m: nn.Module, _inp: Any, out: Any, _name: str = name) -> None:
                outputs[_name] = out

            handles.append(module.register_forward_hook(hook))
        yield outputs
    finally:
        for h in handles:
            h.remove()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _describe(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"tensor of shape {tuple(out.shape)}"
    if isinstance(out, Mapping):
        return f"{type(out).__name__} with keys {list(out.keys())}"
    if isinstance(out, (tuple, list)):
        inner = ", ".join(
            _describe(o) if isinstance(o, torch.Tensor) else type(o).__name__ for o in out
        )
        return f"{type(out).__name__} of {len(out)} ({inner})"
    return type(out).__name__


def find_feature_layer(
    model: nn.Module,
    probe: torch.Tensor,
    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> str:
    """Name of the last conv-bearing module whose output is a 4-D map with spatial extent > 1.

    Runs one probing forward pass (no gradients, eval mode, hooks removed afterwards).

    Raises
    ------
    IncompatibleClassifierError
        No conv-bearing module produces a 4-D ``(N, C, h, w)`` output with ``h * w > 1``.
    """
    order: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    named = [(n, m) for n, m in model.named_modules() if n and _has_conv(m)]
    try:
        for name, module in named:

            def hook(_m: nn.Module, _i: Any, out: Any, _name: str = name) -> None:
                if isinstance(out, torch.Tensor):
                    shapes[_name] = tuple(out.shape)
                    order.append(_name)  # completion order: a container after its children

            handles.append(module.register_forward_hook(hook))
        with _eval_mode(model), torch.no_grad():
            x = input_transform(probe) if input_transform is not None else probe
            model(x)
    finally:
        for h in handles:
            h.remove()
    for name in reversed(order):
        s = shapes[name]
        if len(s) == 4 and s[2] * s[3] > 1:
            return name
    raise IncompatibleClassifierError(
        f"no module with a 4-D (N, C, H, W) output of spatial extent > 1 found in "
        f"{_model_name(model)} when probed with input {tuple(probe.shape)}; GLANCE needs a "
        "convolutional feature map. Pass layer=NAME (--feature-layer NAME) naming a module "
        "that outputs one, or use a larger input_size."
    )


class ClassifierAdapter:
    """Wrap any ``nn.Module`` image classifier as ``f = g ∘ h`` without changing it.

    Parameters
    ----------
    model
        The classifier. It is never modified: its parameters, buffers, ``requires_grad`` flags,
        train/eval flags and hook dictionaries are the same after every call, even one that
        raised.
    layer
        Where ``h`` ends: a dotted module name (``"layer4"``, ``"features.18"``), a module of
        ``model``, or ``None`` to pick the last conv-bearing module whose output still has
        spatial extent > 1 (found by a probing forward pass).
    output_key
        Selects the class scores when the model returns a tuple/list (an int index), a dict (a
        key) or anything else (a callable ``output -> Tensor``).
    input_transform
        Applied to the ``[0, 1]`` images before the model, e.g. ``Normalize(mean, std)`` or
        ``RepeatChannels(3)`` (differentiable, so gradients still reach the images).
    in_channels, input_size
        The image geometry the adapter accepts. Default: the model's own ``in_channels`` /
        ``input_size`` attributes if it has them (glance's reference classifiers do), else the
        first ``Conv2d``'s input channels and the first of 28, 32, 64, 224 pixels that the model
        accepts.

    Attributes
    ----------
    n_classes : int
        Number of class scores.
    in_channels : int
        Image channels accepted.
    input_size : tuple of int
        ``(H, W)`` accepted.
    feature_shape : tuple of int
        ``(C, h, w)`` of the features.
    layer_name : str
        Dotted name of the feature layer.

    Raises
    ------
    IncompatibleClassifierError
        Unknown layer name (closest names listed), a layer without a 4-D output, a model that
        fails on the stated input geometry, or an output that is not ``(N, K)`` class scores.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    >>> adapter = ClassifierAdapter(net, input_size=(16, 16))
    >>> adapter.layer_name, adapter.feature_shape, adapter.n_classes
    ('0', (4, 16, 16), 3)
    >>> logits, feats = adapter.forward_features(torch.rand(2, 1, 16, 16))
    >>> tuple(logits.shape), tuple(feats.shape)
    ((2, 3), (2, 4, 16, 16))
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module | None = None,
        output_key: OutputKey = None,
        input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        in_channels: int | None = None,
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise IncompatibleClassifierError(
                f"ClassifierAdapter needs a torch.nn.Module classifier; got {type(model).__name__}"
            )
        if input_transform is not None and not callable(input_transform):
            raise IncompatibleClassifierError(
                f"input_transform must be callable; got {type(input_transform).__name__}"
            )
        if isinstance(model, torch.jit.ScriptModule):
            raise IncompatibleClassifierError(
                "TorchScript modules cannot be adapted (forward hooks are not supported); "
                "load the eager model and its state_dict instead"
            )
        self.model = model
        self.output_key = output_key
        self.input_transform = input_transform
        self._requested_layer = layer
        self._setup(in_channels, input_size)

    def _setup(self, in_channels: int | None, input_size: int | Sequence[int] | None) -> None:
        model, layer = self.model, self._requested_layer
        # Remember whether the geometry was stated or guessed: a guess may be corrected later
        # by check_dataset when the model also accepts the dataset's images.
        self._guessed = (
            in_channels is None and getattr(model, "in_channels", None) is None,
            input_size is None and getattr(model, "input_size", None) is None,
        )
        self.in_channels, self.input_size = self._resolve_geometry(in_channels, input_size)
        probe = self._probe_input(1)
        self.layer_name = self._resolve_layer(layer, probe)
        self._layer = model.get_submodule(self.layer_name)
        logits, feats = self._checked_forward(probe, where="probe")
        self.n_classes = int(logits.shape[1])
        self.feature_shape = tuple(int(s) for s in feats.shape[1:])
        self._check_scores()

    # -- geometry ---------------------------------------------------------------------------

    def _probe_input(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        x = torch.rand((n, self.in_channels, *self.input_size), generator=g)
        return x.to(self.device)

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter or buffer (CPU for a parameterless model)."""
        for t in self.model.parameters():
            return t.device
        for t in self.model.buffers():
            return t.device
        return torch.device("cpu")

    def _resolve_geometry(
        self, in_channels: int | None, input_size: int | Sequence[int] | None
    ) -> tuple[int, tuple[int, int]]:
        c = in_channels if in_channels is not None else getattr(self.model, "in_channels", None)
        size = input_size if input_size is not None else getattr(self.model, "input_size", None)
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
            raise IncompatibleClassifierError(
                f"in_channels of ClassifierAdapter must be a positive integer; got {c!r}"
            )
        size_t = self._as_size(size) if size is not None else None
        channel_options = [c] if c is not None else self._channel_candidates()
        size_options = [size_t] if size_t is not None else list(_CANDIDATE_SIZES)
        errors = []
        for ch in channel_options:
            for hw in size_options:
                try:
                    g = torch.Generator().manual_seed(0)  # never draw from the global RNG
                    x = torch.rand((1, ch, *hw), generator=g).to(self.device)
                    self._raw_forward(x, grad=False)
                except Exception as exc:  # any failure means "not this geometry"
                    errors.append(((ch, *hw), exc))
                    continue
                if c is None or size_t is None:
                    logger.info(
                        "%s: probed input geometry (%d, %d, %d)", _model_name(self.model), ch, *hw
                    )
                return ch, hw
        shape, exc = errors[0]
        conv = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        hint = f" (its first Conv2d expects {conv.in_channels} channels)" if conv else ""
        tried = ", ".join(str((1, *s)) for s, _ in errors[:6])
        raise IncompatibleClassifierError(
            f"{_model_name(self.model)} failed on probe input(s) {tried}{hint}: "
            f"{_first_line(exc)}. Check in_channels / input_size, or pass an input_transform "
            "(e.g. RepeatChannels(3) for a 3-channel model on grey images)."
        )

    def _channel_candidates(self) -> list[int]:
        conv = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        first = [conv.in_channels] if conv is not None else []
        tf = self.input_transform
        if isinstance(tf, nn.Module) and any(isinstance(m, RepeatChannels) for m in tf.modules()):
            return [1]  # grey images widened for the model: RepeatChannels passes RGB too
        if tf is None and first:
            return first
        return list(dict.fromkeys([*first, 1, 3]))

    @staticmethod
    def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        try:
            h, w = (int(s) for s in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise IncompatibleClassifierError(
                f"input_size of ClassifierAdapter must be an int or (H, W); got {size!r}"
            ) from None
        if h < 1 or w < 1:
            raise IncompatibleClassifierError(f"input_size must be positive; got {(h, w)}")
        return h, w

    # -- layer -----------------------------------------------------------------------------

    def _resolve_layer(self, layer: str | nn.Module | None, probe: torch.Tensor) -> str:
        names = [n for n, _ in self.model.named_modules() if n]
        if layer is None:
            name = find_feature_layer(self.model, probe, self.input_transform)
            logger.info("%s: feature layer %r chosen automatically", _model_name(self.model), name)
            return name
        if isinstance(layer, nn.Module):
            for n, m in self.model.named_modules():
                if m is layer:
                    if not n:
                        raise IncompatibleClassifierError(
                            "layer is the whole model; pass one of its submodules"
                        )
                    return n
            raise IncompatibleClassifierError(
                f"layer {type(layer).__name__} is not a submodule of {_model_name(self.model)}"
            )
        if not isinstance(layer, str):
            raise IncompatibleClassifierError(
                f"layer must be a dotted module name, a module or None; got {type(layer).__name__}"
            )
        if layer not in names:
            close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
            hint = f" Closest names: {', '.join(close)}." if close else ""
            conv_names = [n for n in names if _has_conv(self.model.get_submodule(n))]
            listing = ", ".join(conv_names[-12:])
            raise IncompatibleClassifierError(
                f"layer {layer!r} does not exist in {_model_name(self.model)}.{hint} "
                f"Conv-bearing modules (last 12): {listing or '(none)'}"
            )
        return layer

    # -- forward ---------------------------------------------------------------------------

    def _raw_forward(self, x: torch.Tensor, grad: bool = True) -> Any:
        """One forward pass in eval mode with detached parameters; returns the raw output."""
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        with _eval_mode(self.model), ctx:
            xin = self.input_transform(x) if self.input_transform is not None else x
            return torch.func.functional_call(self.model, params, (xin,), strict=False)

    def _select(self, out: Any) -> torch.Tensor:
        key = self.output_key
        if key is None:
            scores = out
        elif callable(key):
            scores = key(out)
        else:
            try:
                scores = out[key]
            except (KeyError, IndexError, TypeError):
                raise IncompatibleClassifierError(
                    f"output_key {key!r} does not select anything from the classifier's output "
                    f"({_describe(out)})"
                ) from None
        if not isinstance(scores, torch.Tensor):
            hint = (
                " Pass output_key (--output-key) to select the class scores."
                if isinstance(out, (Mapping, tuple, list))
                else ""
            )
            raise IncompatibleClassifierError(
                f"{_model_name(self.model)} returned {_describe(out)}, not a tensor of class "
                f"scores.{hint}"
            )
        if scores.ndim != 2 or not scores.is_floating_point():
            raise IncompatibleClassifierError(
                f"{_model_name(self.model)} must return class scores of shape (N, K); got "
                f"{_describe(scores)} of dtype {scores.dtype}"
            )
        return scores

    def _checked_forward(
        self, x: torch.Tensor, where: str = "call"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with _recording({self.layer_name: self._layer}) as rec:
            out = self._raw_forward(x)
        logits = self._select(out)
        feats = rec.get(self.layer_name)
        if feats is None:
            raise IncompatibleClassifierError(
                f"layer {self.layer_name!r} of {_model_name(self.model)} was not called during "
                "the forward pass; choose a layer the forward pass uses"
            )
        if not isinstance(feats, torch.Tensor) or feats.ndim != 4:
            raise IncompatibleClassifierError(
                f"layer {self.layer_name!r} of {_model_name(self.model)} outputs "
                f"{_describe(feats)}, not a 4-D (N, C, H, W) feature map; choose a "
                "convolutional layer"
            )
        if logits.shape[0] != x.shape[0]:
            raise IncompatibleClassifierError(
                f"{_model_name(self.model)} returned {logits.shape[0]} rows of scores for "
                f"{x.shape[0]} images; expected class scores of shape (N, K)"
            )
        return logits, feats

    def _check_scores(self) -> None:
        """Warn about probability outputs and non-deterministic eval forwards (RELIABILITY M3)."""
        x = self._probe_input(2)
        with torch.no_grad():
            a, b = (self._select(self._raw_forward(x, grad=False)) for _ in range(2))
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
            suspects = [
                n
                for n, m in self.model.named_modules()
                if isinstance(m, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm))
            ]
            logger.warning(
                "%s gives different outputs for the same input in eval mode; explanations "
                "will be noisy. Dropout/BatchNorm modules: %s",
                _model_name(self.model),
                ", ".join(suspects) or "(none found: randomness in forward())",
            )
        if (
            a.min() >= 0
            and a.max() <= 1
            and torch.allclose(a.sum(1), torch.ones(len(a)).to(a), atol=1e-4)
        ):
            logger.warning(
                "%s appears to output probabilities (rows in [0, 1] summing to 1), not logits; "
                "they are used as given as class scores",
                _model_name(self.model),
            )

    def _check_images(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"images must be a torch.Tensor; got {type(x).__name__}")
        expected = (self.in_channels, *self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ShapeError(
                f"images for the classifier must have shape (N, {expected[0]}, {expected[1]}, "
                f"{expected[2]}); got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ShapeError(f"images must be float tensors in [0, 1]; got dtype {x.dtype}")
        return x.to(self.device)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class scores and features of ``x`` from one forward pass.

        Parameters
        ----------
        x
            Images, float in ``[0, 1]``, of shape (N, in_channels, H, W) with ``(H, W) ==
            input_size``. Gradients flow back to ``x`` if it requires them.

        Returns
        -------
        logits : Tensor of shape (N, n_classes)
        features : Tensor of shape (N, *feature_shape)
        """
        return self._checked_forward(self._check_images(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of shape (N, n_classes)."""
        return self.forward_features(x)[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features at :attr:`layer_name`, of shape (N, *feature_shape)."""
        return self.forward_features(x)[1]

    __call__ = logits

    def check_dataset(self, dataset: Any, n_labels: int | None = None) -> None:
        """Raise :class:`IncompatibleClassifierError` if ``dataset`` does not fit the classifier.

        Checks the image shape and, when the dataset has labels, that the number of classes
        matches (``n_labels`` overrides ``len(dataset.classes)``).
        """
        shape = tuple(getattr(dataset, "image_shape", ()))
        src = getattr(dataset, "source", "dataset")
        expected = (self.in_channels, *self.input_size)
        adoptable = len(shape) == 3 and (shape[0] == expected[0] or self._guessed[0])
        adoptable = adoptable and (shape[1:] == expected[1:] or self._guessed[1])
        if shape != expected and adoptable:
            saved = dict(self.__dict__)
            try:  # the probed geometry was only a guess: adopt the dataset's if the model takes it
                self._setup(shape[0], shape[1:])
                logger.info(
                    "%s: input geometry set to the dataset's %s", _model_name(self.model), shape
                )
                expected = shape
            except IncompatibleClassifierError:
                self.__dict__.clear()
                self.__dict__.update(saved)
        if shape != expected:
            hint = ""
            if len(shape) == 3 and shape[0] != expected[0]:
                hint = (
                    " Pass input_transform=RepeatChannels(3)."
                    if shape[0] == 1 and expected[0] == 3
                    else " The channel counts differ."
                )
            raise IncompatibleClassifierError(
                f"{src}: images of shape {shape} but the classifier takes {expected}.{hint}"
            )
        k = n_labels if n_labels is not None else len(getattr(dataset, "classes", []) or [])
        if k and k != self.n_classes:
            raise IncompatibleClassifierError(
                f"classifier has {self.n_classes} outputs, {src} has {k} classes"
            )

    def __repr__(self) -> str:
        return (
            f"ClassifierAdapter({_model_name(self.model)}, layer={self.layer_name!r}, "
            f"in_channels={self.in_channels}, input_size={self.input_size}, "
            f"n_classes={self.n_classes}, feature_shape={self.feature_shape})"
        )

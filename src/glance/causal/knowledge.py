"""Background knowledge for causal discovery: tiers, required and forbidden edges.

File format (JSON or YAML, ``glance graph --knowledge FILE``)::

    default_tiers: true          # contexts -> concepts -> outputs; outputs are sinks and never
                                 # cause each other (set false to drop these defaults)
    tiers:                       # a node in an earlier tier is never caused by a later tier
      - [thickness]
      - [intensity]
    forbidden:                   # [source, target]: the edge source -> target is ruled out
      - [slant, thickness]
    required:                    # [source, target]: the edge source -> target exists
      - [thickness, intensity]

Names are node names (context columns, ``concept_<i>``, ``output_<class>``). ``tiers`` usually
orders contexts ("thickness before intensity"); it may name any node, on top of the default tiers.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from glance.config import ConfigBase, load_config_file
from glance.exceptions import ConfigError

__all__ = ["BackgroundKnowledge", "ResolvedKnowledge", "KIND_RANK"]

#: Default tier of each node kind (contexts first, outputs last).
KIND_RANK = {"context": 0, "concept": 1, "output": 2}


@dataclasses.dataclass(frozen=True, kw_only=True)
class _KnowledgeSpec(ConfigBase):
    """The file format above, validated by :class:`glance.config.ConfigBase`."""

    default_tiers: bool = True
    tiers: tuple[tuple[str, ...], ...] = ()
    forbidden: tuple[tuple[str, ...], ...] = ()
    required: tuple[tuple[str, ...], ...] = ()

    def validate(self) -> None:
        for key in ("forbidden", "required"):
            for i, pair in enumerate(getattr(self, key)):
                if len(pair) != 2:
                    raise ConfigError(
                        f"knowledge.{key}[{i}] must be a [source, target] pair; got {list(pair)}"
                    )


class BackgroundKnowledge:
    """What the user knows about the causal structure; a builder whose methods return ``self``.

    Parameters
    ----------
    default_tiers
        Apply the default tiers contexts -> concepts -> outputs, with outputs as sinks that
        never cause each other.

    Examples
    --------
    >>> bk = BackgroundKnowledge().add_tier(["thickness"]).add_tier(["intensity"])
    >>> bk = bk.forbid("slant", "thickness").require("thickness", "intensity")
    >>> sorted(bk.to_dict())
    ['default_tiers', 'forbidden', 'required', 'tiers']
    """

    def __init__(self, *, default_tiers: bool = True) -> None:
        self.default_tiers = bool(default_tiers)
        self.tiers: list[list[str]] = []
        self.forbidden: list[tuple[str, str]] = []
        self.required: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ builder
    def add_tier(self, names: Iterable[str]) -> BackgroundKnowledge:
        """Append a tier: its nodes are never caused by nodes of tiers added later."""
        tier = [str(n) for n in ([names] if isinstance(names, str) else names)]
        if not tier:
            raise ConfigError("BackgroundKnowledge.add_tier: 'names' must not be empty")
        self.tiers.append(tier)
        return self

    def order(self, *names: str) -> BackgroundKnowledge:
        """Each name in its own tier, in the given order ("thickness before intensity")."""
        for n in names:
            self.add_tier([n])
        return self

    def forbid(self, source: str, target: str) -> BackgroundKnowledge:
        """Rule out the edge ``source -> target``."""
        self.forbidden.append((str(source), str(target)))
        return self

    def require(self, source: str, target: str) -> BackgroundKnowledge:
        """Declare that the edge ``source -> target`` exists."""
        self.required.append((str(source), str(target)))
        return self

    def without_default_tiers(self) -> BackgroundKnowledge:
        """Drop the default contexts -> concepts -> outputs tiers."""
        self.default_tiers = False
        return self

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        """The file format as a dict."""
        return {
            "default_tiers": self.default_tiers,
            "tiers": [list(t) for t in self.tiers],
            "forbidden": [list(p) for p in self.forbidden],
            "required": [list(p) for p in self.required],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "knowledge") -> BackgroundKnowledge:
        """Build from the file format; unknown keys or bad values raise :class:`ConfigError`."""
        spec = _KnowledgeSpec.from_dict(data, where=where)
        bk = cls(default_tiers=spec.default_tiers)
        for tier in spec.tiers:
            bk.add_tier(tier)
        for a, b in spec.forbidden:
            bk.forbid(a, b)
        for a, b in spec.required:
            bk.require(a, b)
        return bk

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BackgroundKnowledge:
        """Read a JSON or YAML knowledge file (format in the module docstring)."""
        return cls.from_dict(load_config_file(path), where=str(path))

    # ------------------------------------------------------------------ resolution
    def resolve(self, names: Sequence[str], kinds: Sequence[str]) -> ResolvedKnowledge:
        """Check the names against the nodes and return index-level rules.

        Raises
        ------
        ConfigError
            A name that is not a node (with a suggestion), or a required edge that the tiers
            or the forbidden list rule out.
        """
        index = {n: i for i, n in enumerate(names)}

        def idx(name: str, what: str) -> int:
            if name in index:
                return index[name]
            close = difflib.get_close_matches(name, list(index), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"background knowledge ({what}) names {name!r}, which is not a node; "
                f"nodes are {list(names)}.{hint}"
            )

        user_tier: dict[int, int] = {}
        for t, tier in enumerate(self.tiers):
            for n in tier:
                i = idx(n, f"tier {t}")
                if i in user_tier and user_tier[i] != t:
                    raise ConfigError(
                        f"background knowledge: {n!r} is in tiers {user_tier[i]} and {t}"
                    )
                user_tier[i] = t
        forbidden = {(idx(a, "forbidden"), idx(b, "forbidden")) for a, b in self.forbidden}
        required = {(idx(a, "required"), idx(b, "required")) for a, b in self.required}
        rk = ResolvedKnowledge(
            list(names), list(kinds), self.default_tiers, user_tier, forbidden, required
        )
        for a, b in sorted(required):
            if (b, a) in required:
                raise ConfigError(
                    f"background knowledge requires both {names[a]!r} -> "
                    f"{names[b]!r} and the reverse"
                )
            if rk.is_forbidden(a, b):
                raise ConfigError(
                    f"background knowledge requires {names[a]!r} -> {names[b]!r}, but the "
                    f"{rk.why_forbidden(a, b)} forbid it"
                )
        return rk

    def __repr__(self) -> str:
        return f"BackgroundKnowledge({self.to_dict()})"


@dataclasses.dataclass
class ResolvedKnowledge:
    """Knowledge resolved against a node list: rules over node indices."""

    names: list[str]
    kinds: list[str]
    default_tiers: bool
    user_tier: dict[int, int]
    forbidden: set[tuple[int, int]]
    required: set[tuple[int, int]]

    def why_forbidden(self, a: int, b: int) -> str | None:
        """Which rule forbids ``a -> b`` (``None`` if allowed)."""
        if (a, b) in self.forbidden:
            return "forbidden edges"
        if self.default_tiers:
            ka, kb = KIND_RANK[self.kinds[a]], KIND_RANK[self.kinds[b]]
            if ka > kb or (self.kinds[a] == "output"):
                return "default tiers (contexts -> concepts -> outputs; outputs are sinks)"
        ta, tb = self.user_tier.get(a), self.user_tier.get(b)
        if ta is not None and tb is not None and ta > tb:
            return "tiers"
        return None

    def is_forbidden(self, a: int, b: int) -> bool:
        """Whether the edge ``a -> b`` is ruled out."""
        return self.why_forbidden(a, b) is not None

    def allowed(self, a: int, b: int) -> bool:
        """Whether ``a -> b`` may be oriented (not forbidden, reverse not required)."""
        return not self.is_forbidden(a, b) and (b, a) not in self.required

    def to_causallearn(self) -> Any:
        """The same rules as a ``causallearn`` ``BackgroundKnowledge`` (lazy import)."""
        from causallearn.graph.GraphNode import GraphNode
        from causallearn.utils.PCUtils.BackgroundKnowledge import (
            BackgroundKnowledge as ClKnowledge,
        )

        nodes = [GraphNode(n) for n in self.names]
        bk = ClKnowledge()
        p = len(nodes)
        # Default tiers go through causal-learn's tier map (a dict lookup per check); the rest
        # as explicit pairs, which causal-learn scans linearly, so keep that list short.
        if self.default_tiers:
            for i, kind in enumerate(self.kinds):
                bk.add_node_to_tier(nodes[i], KIND_RANK[kind])
            if "output" in self.kinds:
                bk.forbidden_within_tiers.add(KIND_RANK["output"])
        for a in range(p):
            for b in range(p):
                if a == b or (self.default_tiers and self._default_forbids(a, b)):
                    continue
                if self.is_forbidden(a, b):
                    bk.add_forbidden_by_node(nodes[a], nodes[b])
        for a, b in sorted(self.required):
            bk.add_required_by_node(nodes[a], nodes[b])
        return bk

    def _default_forbids(self, a: int, b: int) -> bool:
        ka, kb = KIND_RANK[self.kinds[a]], KIND_RANK[self.kinds[b]]
        return ka > kb or (ka == kb == KIND_RANK["output"])

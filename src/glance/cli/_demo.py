"""CLI subcommands of the 'demo' area (see glance.cli.main): ``glance demo``.

From nothing to a report on the embedded Morpho-MNIST, as a thin orchestration over the public
APIs of the other areas: generate the data, train (or reuse a cached) small-cnn digit
classifier, fit the twin surrogate, discover the causal graph, describe every concept (the
atlas), explain a few held-out images
(significance against random concepts, the graph coloured by each image's importances),
evaluate the surrogate's faithfulness and write the report. Every step seals what it adds into
the run (:class:`glance.Run`). A step whose piece is unavailable fails with a one-line error;
nothing is faked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glance.cli._common import add_threads_arg, nonneg_int, positive_int
from glance.cli._common import seed as seed_type
from glance.exceptions import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

CONTEXTS = ("thickness", "intensity")
#: Random concepts the importances are tested against (smallest p: 1/50; docs/faithfulness.md).
N_RANDOM = 49
_STEPS = 8


def _default_cache() -> Path:
    root = os.environ.get("GLANCE_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) / "glance" if root else Path.home() / ".cache" / "glance"


class _Progress:
    """Numbered step headers with timings on the log (stderr)."""

    def __init__(self, total: int) -> None:
        self.total, self.k, self.t0 = total, 0, time.perf_counter()

    def step(self, title: str, fn: Callable[[], Any]) -> Any:
        self.k += 1
        logger.info("[%d/%d] %s ...", self.k, self.total, title)
        t = time.perf_counter()
        result = fn()
        logger.info(
            "[%d/%d] %s: done in %.1f s (total %.1f s)",
            self.k,
            self.total,
            title,
            time.perf_counter() - t,
            time.perf_counter() - self.t0,
        )
        return result


def _data(cache: Path, n_digits: int, seed: int, quiet: bool) -> Path:
    from glance.data.morpho_generate import generate_morphomnist

    path = cache / f"morpho-mnist-n{n_digits}-seed{seed}"
    if (path / "MANIFEST.json").is_file():
        from glance._io import verify_manifest

        verify_manifest(path)
        logger.info("reusing the generated digits in %s", path)
        return path
    return generate_morphomnist(path, n=n_digits, seed=seed, progress=not quiet, force=True)


def _classifier(data: Path, cache: Path, epochs: int, seed: int, quiet: bool) -> Any:
    from glance.classifiers.serialization import load_classifier, save_classifier
    from glance.classifiers.training import train_classifier
    from glance.data import load_dataset

    key = hashlib.sha256(
        (data / "MANIFEST.json").read_bytes() + f"small-cnn/{epochs}/{seed}".encode()
    ).hexdigest()[:16]
    path = cache / "classifiers" / f"small-cnn-{key}.safetensors"
    if path.is_file():
        try:
            model = load_classifier(path)
        except CheckpointError as exc:  # e.g. written by a glance with another small-cnn
            logger.warning("cached classifier unusable (%s); training a new one", exc)
        else:
            logger.info("reusing the cached classifier %s", path)
            return model
    model = train_classifier(
        load_dataset(data, split="train"), "small-cnn", epochs=epochs, seed=seed, quiet=quiet
    )
    logger.info("classifier held-out accuracy: %.4f", float(model.meta.get("accuracy", "nan")))
    save_classifier(model, path)
    return model


def _fit(
    classifier: Any, data: Path, run: Path, preset: str, seed: int, quiet: bool, threads: Any
) -> Any:
    from glance.data import load_dataset
    from glance.estimator import Glance

    est = Glance(
        classifier,
        contexts=CONTEXTS,
        preset=preset,
        random_state=seed,
        quiet=quiet,
        n_threads=threads,
    )
    # saves the sealed run, with the record of its data that `glance evaluate/explain/serve RUN`
    # use by default
    return est.fit(load_dataset(data, split="train"), out=run)


def _graph(est: Any, data: Path, run: Path, n_resamples: int, seed: int) -> None:
    from glance.data import load_dataset

    graph = est.global_explanation(
        load_dataset(data, split="train"),
        n_resamples=n_resamples,
        random_state=seed,
        out=est.run_.path / est.run_.graph_dir,
    )
    logger.info(
        "causal graph: %d nodes, %d edges (%d undirected)",
        len(graph.names),
        len(graph.edges()),
        sum(not e.directed for e in graph.edges()),
    )


def _explain(est: Any, data: Path, run: Path, n_explain: int) -> None:
    """Explain held-out images, with the test against random concepts and the graph pictures.

    ``n_random=N_RANDOM`` adds the significance of each node against random concepts
    (RELIABILITY c.13): one extra generator pass of ``images × N_RANDOM × shifts`` rows, about
    1.5 s on the 8 default images of the busy 2-core machine (explanations alone: about 1.3 s).
    ``graph_<i>.png`` (the causal graph coloured by image ``i``'s importances, as
    ``glance explain`` writes it) needs the graph of the previous step.
    """
    from glance.data import load_dataset, test_split
    from glance.explain import explain

    test = load_dataset(data, split=test_split(data))
    images = test.load_images(list(range(min(n_explain, len(test)))))
    explanation = explain(est, images, n_random=N_RANDOM)
    explanation.save(est.run_.path / est.run_.explanations_dir, graph=getattr(est, "graph_", None))


def _atlas(est: Any, data: Path) -> None:
    """The concept atlas on held-out digits, sealed into the run (the report links every node
    name of the explanations to its entry)."""
    from glance.data import load_dataset, test_split

    test = load_dataset(data, split=test_split(data))
    est.describe_concepts(test, out=est.run_.path / est.run_.atlas_dir)


def _evaluate(est: Any, data: Path, run: Path) -> dict:
    from glance.data import load_dataset, test_split

    return est.evaluate(load_dataset(data, split=test_split(data)), out=run)


def run_demo(
    out: Path,
    *,
    n_digits: int = 10_000,
    epochs: int = 3,
    preset: str = "fast",
    n_explain: int = 8,
    n_resamples: int = 20,
    seed: int = 0,
    cache: Path | None = None,
    force: bool = False,
    quiet: bool = False,
    threads: int | None = None,
) -> Path:
    """Run the whole demo into ``out``; return the report's path.

    ``out/run`` is the run directory; ``out/report.html`` the report. Generated data and the
    trained classifier are cached in ``cache`` (default ``~/.cache/glance``) and reused.
    ``threads``: CPU threads; ``None`` uses the cores other processes leave free
    (:mod:`glance.threads`), so an idle machine is used whole and a busy one is not fought over.
    """
    from glance.report import write_report
    from glance.threads import compute

    with compute(threads):
        cache = cache or _default_cache()
        run = out / "run"
        if run.exists():
            if not force:
                raise ConfigError(
                    f"{run} already exists; pass --force to replace it or another --out"
                )
            shutil.rmtree(run)
        p = _Progress(_STEPS)
        data = p.step("generate Morpho-MNIST digits", lambda: _data(cache, n_digits, seed, quiet))
        clf = p.step(
            "train the small-cnn classifier", lambda: _classifier(data, cache, epochs, seed, quiet)
        )
        est = p.step(
            f"fit the twin surrogate ({preset} preset)",
            lambda: _fit(clf, data, run, preset, seed, quiet, threads),
        )
        p.step(
            f"discover the causal graph ({n_resamples} bootstrap resamples)",
            lambda: _graph(est, data, run, n_resamples, seed),
        )
        p.step("describe every concept (the atlas)", lambda: _atlas(est, data))
        p.step(
            f"explain {n_explain} held-out images (significance vs {N_RANDOM} random concepts)",
            lambda: _explain(est, data, run, n_explain),
        )
        metrics = p.step("evaluate faithfulness", lambda: _evaluate(est, data, run))
        logger.info(
            "fidelity %s",
            json.dumps(
                {
                    k: metrics.get(k)
                    for k in ("fidelity", "reconstruction_fidelity", "sampled_fidelity")
                }
            ),
        )
        return p.step("write the report", lambda: write_report(run, out / "report.html"))


def _run(args: argparse.Namespace) -> int:
    if args.n_digits < 100:
        raise ConfigError(f"--n-digits must be at least 100; got {args.n_digits}")
    report = run_demo(
        args.out,
        n_digits=args.n_digits,
        epochs=args.epochs,
        preset=args.preset,
        n_explain=args.n_explain,
        n_resamples=args.bootstrap,
        seed=args.seed,
        cache=args.cache,
        force=args.force,
        quiet=args.quiet,
        threads=args.threads,
    )
    print(f"report: {report.resolve()}")
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``glance demo``."""
    p = subparsers.add_parser(
        "demo",
        help="from nothing to a report on the embedded Morpho-MNIST digits",
        description="Generate causal Morpho-MNIST, train (or reuse) a digit classifier, fit the "
        "twin surrogate, discover the causal graph, explain held-out images, evaluate and write "
        "the HTML report. The last line printed names the report.",
    )
    p.add_argument("--out", type=Path, default=Path("demo-run"), help="output directory")
    p.add_argument(
        "--n-digits", type=positive_int, default=10_000, help="digits to generate (10000)"
    )
    p.add_argument("--epochs", type=positive_int, default=3, help="classifier training epochs")
    p.add_argument("--preset", default="fast", help="surrogate preset (fast)")
    p.add_argument(
        "--n-explain", type=positive_int, default=8, help="held-out images to explain (8)"
    )
    p.add_argument(
        "--bootstrap", type=nonneg_int, default=20, help="graph bootstrap resamples (20)"
    )
    p.add_argument("--seed", type=seed_type, default=0, help="random seed (0)")
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache of data and classifiers (default: $GLANCE_CACHE or ~/.cache/glance)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing OUT/run")
    add_threads_arg(p)
    p.set_defaults(func=_run)

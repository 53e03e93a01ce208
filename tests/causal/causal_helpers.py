"""Data generators for the causal tests (linear-Gaussian SCMs with known answers)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch

from glance.estimator import Glance

#: The 5-node DAG of the data test: a -> c <- b, c -> d -> e, a -> e.
FIVE_NODE_EDGES = [("a", "c"), ("b", "c"), ("c", "d"), ("d", "e"), ("a", "e")]
FIVE_NODE_WEIGHTS = {
    ("a", "c"): 0.8,
    ("b", "c"): 0.7,
    ("c", "d"): 0.9,
    ("d", "e"): 0.7,
    ("a", "e"): 0.6,
}


def linear_gaussian(names, weights, n, seed, noise_std=1.0):
    """Samples of a linear-Gaussian SCM ``x_v = sum_w w * x_parent + N(0, noise_std^2)``."""
    rng = np.random.default_rng(seed)
    dag = nx.DiGraph(list(weights))
    dag.add_nodes_from(names)
    cols = {}
    for v in nx.topological_sort(dag):
        cols[v] = noise_std * rng.normal(size=n)
        for u in dag.predecessors(v):
            cols[v] = cols[v] + weights[(u, v)] * cols[u]
    return np.column_stack([cols[v] for v in names])


N = 1500


class StubDataset:
    """Images whose pixels carry (thickness reading, intensity reading, free concept)."""

    def __init__(self, seed: int = 0, missing: int = 100):
        rng = np.random.default_rng(seed)
        t = 0.5 + rng.gamma(10, 1 / 5, N)
        i = 64 + 191 / (1 + np.exp(-(2 * (t - 2.5) + 0.5 * rng.normal(size=N))))
        free = rng.normal(size=N)
        self.truth = np.c_[t, i]
        # what the encoder reads: standardised contexts with a little reading noise
        read = (self.truth - self.truth.mean(0)) / self.truth.std(0)
        read = read + 0.05 * rng.normal(size=read.shape)
        self.pixels = np.c_[read, free].astype(np.float32)
        self.attribute_names = ["thickness", "intensity", "slant"]
        self.attributes = np.c_[self.truth, rng.normal(size=N)]
        self.attributes[:missing, 0] = np.nan  # weak supervision: some thickness unknown
        self.source = "stub"

    def __len__(self):
        return N

    def load_images(self, indices):
        return torch.from_numpy(self.pixels[np.asarray(indices)]).reshape(-1, 1, 1, 3)


class StubGlance:
    """A fitted-Glance stand-in with a closed-form encoder and head; its global explanation
    and state assignment are :class:`glance.Glance`'s own."""

    context_names_ = ["thickness", "intensity"]
    concept_names_ = ["thickness", "intensity", "concept_0"]
    classes_ = ["thin", "thick"]
    encoder_ = object()  # fitted marker
    run_ = None
    n_threads = 1

    global_explanation = Glance.global_explanation
    _set_global = Glance._set_global
    _check_fitted = Glance._check_fitted

    def __init__(self, data: StubDataset):
        self.context_mean_ = data.truth.mean(0)
        self.context_std_ = data.truth.std(0)

    def encode(self, images):
        return images.reshape(len(images), 3).double()

    def surrogate_logits(self, z):
        thick = 2.0 * z[:, 0] - 0.8 * z[:, 2] + 0.2 * torch.tanh(3 * z[:, 0])
        return torch.stack([-thick + 0.1 * z[:, 2] ** 2, thick], dim=1)

"""FeatureRows: a feature cache read back by rows, as a tensor would be indexed, without a map."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from glance.classifiers import ClassifierAdapter, FeatureRows, cache_features
from glance.exceptions import CheckpointCorruptError
from helpers import TinyCNN, make_dataset


@pytest.fixture
def cache(tmp_path):
    torch.manual_seed(0)
    adapter = ClassifierAdapter(TinyCNN().eval())
    return cache_features(adapter, make_dataset(37), tmp_path / "cache", batch_size=10)


def test_rows_index_like_the_array(cache):
    ref = torch.from_numpy(np.array(cache.features))
    with cache.rows() as rows:
        assert len(rows) == 37 and rows.shape == tuple(ref.shape)
        keys = [
            5,
            -1,
            slice(3, 29),
            slice(30, None),
            slice(0, 37, 4),
            slice(20, 10),
            np.array([36, 0, 7, 7, 2]),  # unsorted, repeated
            np.array([-2, 3]),
            torch.tensor([4, 1]),
            [9, 8],
            np.array([], dtype=np.int64),
        ]
        for key in keys:
            got = rows[key]
            assert got.dtype == torch.float32
            assert torch.equal(got, ref[torch.as_tensor(key) if isinstance(key, list) else key])
        for bad in (37, -38, np.array([1, 37])):
            with pytest.raises(IndexError):
                rows[bad]
        assert torch.equal(rows[np.array(3)], ref[3])
        for bad in (np.array([0.5]), np.array([[1, 2]]), np.array([True] * 37)):
            with pytest.raises(IndexError, match="1-D integer array"):
                rows[bad]


def test_rows_pickle_reopen_and_close(cache):
    rows = cache.rows()
    again = pickle.loads(pickle.dumps(rows))
    assert torch.equal(again[3:6], rows[3:6])
    rows.close()
    rows.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        rows[0]
    again.close()


def test_rows_refuse_a_file_of_the_wrong_size(cache):
    path = cache.path / "features.npy"
    size = path.stat().st_size
    for wrong in (size - 4, size + 4, size):  # truncated, with bytes appended, restored
        with open(path, "r+b") as fh:
            fh.truncate(wrong)
        if wrong == size:
            cache.rows().close()
            continue
        with pytest.raises(CheckpointCorruptError, match=f"{wrong} bytes"):
            cache.rows()
    with pytest.raises(CheckpointCorruptError, match="need"):  # a shape the file cannot hold
        FeatureRows(path, offset=cache.features.offset, shape=(38, *cache.features.shape[1:]))

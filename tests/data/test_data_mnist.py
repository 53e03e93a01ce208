"""Embedded digits and the Morpho-MNIST on-disk format."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from glance.data import load_embedded_digits, load_morphomnist
from glance.data.idx import write_idx
from glance.data.mnist import save_morphomnist_split
from glance.exceptions import DataValidationError


def test_embedded_digits_are_ten_thousand_mnist_digits():
    images, labels = load_embedded_digits()
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and set(np.unique(labels)) == set(range(10))
    # MNIST statistics: white strokes on black (mean pixel ~33), digits centred in a 20x20 box
    # so the outer rows are nearly empty; stored shuffled, so any prefix holds every class.
    assert 28 < images.mean() < 40 and images.max() == 255
    assert images[:, :2].mean() < 1 and images[:, 10:18, 10:18].mean() > 80
    assert len(np.unique(labels[:100])) == 10
    images[0, 0, 0] = 7  # a copy: the cache must stay intact
    assert load_embedded_digits()[0][0, 0, 0] == 0


def _write_split(tmp_path, n=12, split="train", extra=None, gz=True):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    attrs = {"thickness": rng.uniform(1, 4, n), "intensity": rng.uniform(64, 255, n)}
    attrs.update(extra or {})
    save_morphomnist_split(tmp_path, split, images, labels, attrs)
    if not gz:
        for p in tmp_path.glob(f"{split}-*.gz"):
            p.with_suffix("").write_bytes(gzip.decompress(p.read_bytes()))
            p.unlink()
    return images, labels, attrs


def test_round_trip_gz_and_raw(tmp_path):
    images, labels, attrs = _write_split(tmp_path, split="train")
    _write_split(tmp_path, split="t10k", n=5, gz=False)
    ds = load_morphomnist(tmp_path, "train")
    assert len(ds) == 12 and ds.image_shape == (1, 28, 28)
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.attribute_names == ["thickness", "intensity"]
    np.testing.assert_allclose(ds.attribute("thickness"), attrs["thickness"], rtol=1e-7)
    assert ds.classes == [str(k) for k in range(10)]
    assert len(load_morphomnist(tmp_path, "t10k")) == 5
    img, label, a = ds[3]
    assert img.shape == (1, 28, 28) and float(img.max()) <= 1.0 and int(label) == labels[3]


def test_real_morpho_mnist_csv_with_more_columns_and_shuffled_index(tmp_path):
    _write_split(tmp_path, n=6)
    header = "index,area,length,thickness,slant,width,height\n"
    rows = [f"{i},{10 + i},{20 + i},{1 + i / 10},{0.1 * i},{5},{9}\n" for i in range(6)]
    rows = rows[3:] + rows[:3]  # rows out of order: 'index' decides
    (tmp_path / "train-morpho.csv").write_text(header + "".join(rows))
    ds = load_morphomnist(tmp_path, "train")
    assert ds.attribute_names == ["area", "length", "thickness", "slant", "width", "height"]
    np.testing.assert_allclose(ds.attribute("area"), 10 + np.arange(6))


def test_missing_csv_gives_no_attributes(tmp_path):
    _write_split(tmp_path, n=4)
    (tmp_path / "train-morpho.csv").unlink()
    ds = load_morphomnist(tmp_path)
    assert ds.attribute_names == [] and ds.attributes.shape == (4, 0)


def test_count_mismatch_names_all_three_sources(tmp_path):
    images, labels, _ = _write_split(tmp_path, n=10)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:9])
    with pytest.raises(DataValidationError) as info:
        load_morphomnist(tmp_path, "train")
    msg = str(info.value)
    assert "images=10" in msg and "labels=9" in msg and "attributes=10" in msg
    assert "train-images-idx3-ubyte.gz" in msg and "train-morpho.csv" in msg


def test_csv_row_count_mismatch(tmp_path):
    _write_split(tmp_path, n=10)
    lines = (tmp_path / "train-morpho.csv").read_text().splitlines()
    (tmp_path / "train-morpho.csv").write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(DataValidationError, match="attributes=8"):
        load_morphomnist(tmp_path, "train")


def test_non_finite_and_non_numeric_cells_list_column_and_rows(tmp_path):
    _write_split(tmp_path, n=6)
    csv = tmp_path / "train-morpho.csv"
    lines = csv.read_text().splitlines()
    cells = [ln.split(",") for ln in lines]
    cells[2][1] = "inf"  # line 3, thickness
    cells[5][1] = "nan"  # line 6, thickness
    cells[4][2] = "bright"  # line 5, intensity
    csv.write_text("\n".join(",".join(c) for c in cells) + "\n")
    with pytest.raises(DataValidationError) as info:
        load_morphomnist(tmp_path, "train")
    msg = str(info.value)
    assert "'thickness' at line(s) 3, 6" in msg and "'intensity' at line(s) 5" in msg
    assert "train-morpho.csv" in msg


def test_bad_index_column(tmp_path):
    _write_split(tmp_path, n=4)
    csv = tmp_path / "train-morpho.csv"
    csv.write_text(csv.read_text().replace("\n3,", "\n7,"))
    with pytest.raises(DataValidationError, match="'index' must hold each image index 0..3"):
        load_morphomnist(tmp_path)
    csv.write_text(csv.read_text().replace("index,", "idx,"))
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['index'\]"):
        load_morphomnist(tmp_path)


def test_missing_split_and_wrong_dtype(tmp_path):
    with pytest.raises(DataValidationError, match="no Morpho-MNIST split 'train'"):
        load_morphomnist(tmp_path, "train")
    _write_split(tmp_path, n=4)
    with pytest.raises(DataValidationError, match="splits found: \\['train'\\]"):
        load_morphomnist(tmp_path, "t10k")
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.float32))
    with pytest.raises(DataValidationError, match="expected uint8 images"):
        load_morphomnist(tmp_path, "train")
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28 * 28), np.uint8))
    with pytest.raises(DataValidationError, match="shape \\(N, H, W\\)"):
        load_morphomnist(tmp_path, "train")
    shutil.rmtree(tmp_path)
    with pytest.raises(DataValidationError, match="not a directory"):
        load_morphomnist(tmp_path, "train")


def test_save_rejects_bad_arrays(tmp_path):
    with pytest.raises(DataValidationError, match="uint8"):
        save_morphomnist_split(tmp_path, "train", np.zeros((2, 4, 4)), np.zeros(2), {})
    with pytest.raises(DataValidationError, match="shape \\(2,\\)"):
        save_morphomnist_split(
            tmp_path, "train", np.zeros((2, 4, 4), np.uint8), np.zeros(2), {"t": np.zeros(3)}
        )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    images=hnp.arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9))),
    data=st.data(),
)
def test_property_any_split_round_trips(tmp_path, images, data):
    n = len(images)
    labels = data.draw(hnp.arrays(np.uint8, n, elements=st.integers(0, 9)))
    finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
    attrs = {"a": data.draw(hnp.arrays(np.float64, n, elements=finite))}
    save_morphomnist_split(tmp_path, "s", images, labels, attrs)
    ds = load_morphomnist(tmp_path, "s")
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_allclose(ds.attribute("a"), attrs["a"], rtol=1e-7, atol=1e-30)

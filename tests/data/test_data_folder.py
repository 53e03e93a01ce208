"""ImageFolderDataset and load_dataset / list_splits / test_split over every layout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from glance.data import ImageFolderDataset, list_splits, load_dataset, test_split
from glance.data.mnist import save_morphomnist_split
from glance.exceptions import DataValidationError


def _png(path, shape=(8, 6, 3), value=None, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = (
        rng.integers(0, 256, shape, dtype=np.uint8)
        if value is None
        else np.full(shape, value, np.uint8)
    )
    img = Image.fromarray(arr)
    (img.convert(mode) if mode else img).save(path)
    return arr


def _folder(tmp_path, n=4, csv=None):
    for i in range(n):
        _png(tmp_path / "img" / f"{i}.png")
    if csv is not None:
        (tmp_path / "img" / "attrs.csv").write_text(csv)
    return tmp_path / "img"


def test_folder_with_csv_missing_values_and_labels(tmp_path):
    root = _folder(tmp_path, 3)
    csv = root / "attrs.csv"
    csv.write_text("filename,label,age,smile\n2.png,cat,30,\n0.png,dog,NA,1\n1.png,,41.5,0\n")
    ds = ImageFolderDataset(root, csv)
    assert len(ds) == 3 and ds.image_shape == (3, 8, 6)
    assert ds.files == ["2.png", "0.png", "1.png"]  # CSV order
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 1, -1]
    np.testing.assert_array_equal(np.isnan(ds.attributes), [[0, 1], [1, 0], [0, 0]])
    assert ds.attribute("age")[2] == 41.5
    expect = np.asarray(Image.open(root / "0.png")).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(ds[1][0].numpy(), expect, atol=1e-6)


def test_integer_labels_and_float_written_labels(tmp_path):
    root = _folder(tmp_path, 3)
    (root / "a.csv").write_text("filename,label\n0.png,2.0\n1.png,0.0\n2.png,nan\n")
    ds = ImageFolderDataset(root, root / "a.csv")
    assert ds.labels.tolist() == [2, 0, -1] and ds.classes == ["0", "1", "2"]
    (root / "a.csv").write_text("filename,label\n0.png,-3\n1.png,0\n2.png,1\n")
    with pytest.raises(DataValidationError, match="negative class numbers at line 2"):
        ImageFolderDataset(root, root / "a.csv")


def test_streams_from_disk(tmp_path):
    root = _folder(tmp_path, 2)
    ds = ImageFolderDataset(root)
    assert ds.labels.tolist() == [-1, -1] and ds.attribute_names == []
    _png(root / "1.png", value=7)  # changed on disk after construction
    assert float(ds.load_images([1]).max()) == pytest.approx(7 / 255)
    assert not hasattr(ds, "images")


def test_modes_resize_and_sixteen_bit(tmp_path):
    root = tmp_path / "m"
    _png(root / "a.png", (10, 12, 3))
    _png(root / "b.png", (20, 24, 4), mode="RGBA")
    grey = ImageFolderDataset(root, image_mode="L", image_size=(5, 6))
    assert grey.image_shape == (1, 5, 6) and grey.load_images().shape == (2, 1, 5, 6)
    rgba = ImageFolderDataset(root, image_mode="RGBA", image_size=8)
    assert rgba.load_images().shape == (2, 4, 8, 8)
    with pytest.raises(DataValidationError, match="b.png: image is 24x20.*12x10"):
        ImageFolderDataset(root)
    sixteen = tmp_path / "s"
    sixteen.mkdir()
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(sixteen / "x.png")
    ds = ImageFolderDataset(sixteen)
    assert ds.image_shape == (1, 4, 4) and float(ds.load_images().min()) == 1.0
    with pytest.raises(DataValidationError, match="image_mode"):
        ImageFolderDataset(root, image_mode="CMYK")


def test_list_file(tmp_path):
    root = _folder(tmp_path, 3)
    (tmp_path / "list.txt").write_text("img/2.png\n# comment\n\nimg/0.png\n")
    ds = ImageFolderDataset(tmp_path / "list.txt")
    assert ds.files == ["img/2.png", "img/0.png"]
    assert load_dataset(tmp_path / "list.txt").files == ds.files
    assert root.is_dir()


def test_corrupt_and_fake_images_are_all_listed(tmp_path):
    root = _folder(tmp_path, 2)
    data = (root / "1.png").read_bytes()
    (root / "1.png").write_bytes(data[: len(data) // 2])
    (root / "fake.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DataValidationError) as info:
        ImageFolderDataset(root)
    assert "2 unreadable" in str(info.value)
    assert "1.png" in str(info.value) and "fake.jpg" in str(info.value)
    ds = ImageFolderDataset(root, verify="none", image_mode="RGB", image_size=4)
    with pytest.raises(DataValidationError, match="1.png"):
        ds.load_images([1])


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "b"
    _png(root / "big.png", (64, 64, 3))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataValidationError, match="big.png.*decompression bomb"):
        ImageFolderDataset(root)


@pytest.mark.parametrize(
    ("csv", "match"),
    [
        ("filename,a\n../../etc/passwd,1\n0.png,2\n", "line 2: '../../etc/passwd'"),
        ("filename,a\n/etc/passwd,1\n", "relative paths inside"),
        ("name,a\n0.png,1\n", r"missing column\(s\) \['filename'\]"),
        ("filename,a,a\n0.png,1,2\n", r"duplicate column names in the header: \['a'\]"),
        ("filename,a\n0.png,1\n0.png,2\n", "duplicate file names.*lines 2 and 3"),
        ("filename,a\n0.png,1\n9.png,2\n", "do not exist.*line 3: '9.png'"),
        ("filename,a,b\n0.png,x,inf\n", "'a' at line\\(s\\) 2 .*'b' at line\\(s\\) 2"),
        ("filename;a\n0.png;1\n", "single column 'filename;a'"),
        ("filename,a\n0.png,1,3\n", "line 2 has 3 cells"),
        ("", "empty CSV"),
        ("filename,a\n", "no data rows"),
        ("filename,,b\n0.png,1,2\n", "blank column names"),
    ],
)
def test_bad_csv_is_rejected_naming_file_and_row(tmp_path, csv, match):
    root = _folder(tmp_path, 1)
    (root / "a.csv").write_text(csv)
    with pytest.raises(DataValidationError, match=match) as info:
        ImageFolderDataset(root, root / "a.csv")
    assert "a.csv" in str(info.value) or "filename" not in csv


def test_bom_is_handled_and_non_utf8_rejected(tmp_path):
    root = _folder(tmp_path, 1)
    (root / "a.csv").write_bytes("\ufefffilename,a\n0.png,1\n".encode())
    assert ImageFolderDataset(root, root / "a.csv").attribute_names == ["a"]
    (root / "a.csv").write_bytes(b"filename,a\n0.png,\xff\n")
    with pytest.raises(DataValidationError, match="not UTF-8"):
        ImageFolderDataset(root, root / "a.csv")


def test_images_without_csv_row_and_empty_folder(tmp_path):
    root = _folder(tmp_path, 3)
    (root / "a.csv").write_text("filename,a\n0.png,1\n1.png,2\n")
    with pytest.raises(DataValidationError, match="images=3.*attribute rows=2.*'2.png'"):
        ImageFolderDataset(root, root / "a.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataValidationError, match="0 images found"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(DataValidationError, match="no such image folder"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(DataValidationError, match="got one image"):
        ImageFolderDataset(root / "0.png")
    (tmp_path / "list.txt").write_text("img/0.png\nimg/gone.png\n")
    with pytest.raises(DataValidationError, match="gone.png: unreadable image"):
        ImageFolderDataset(tmp_path / "list.txt")


def test_outside_paths_allowed_on_request(tmp_path):
    _png(tmp_path / "outside.png")
    root = _folder(tmp_path, 1)
    (tmp_path / "l.csv").write_text("filename,a\n../outside.png,1\n0.png,2\n")
    ds = ImageFolderDataset(root, tmp_path / "l.csv", allow_paths_outside_root=True)
    assert len(ds) == 2 and ds.load_images().shape == (2, 3, 8, 6)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(
        st.lists(
            st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)), min_size=2, max_size=2
        ),
        min_size=1,
        max_size=5,
    )
)
def test_property_attribute_tables_round_trip(tmp_path, values):
    root = tmp_path / "p"
    for i in range(len(values)):
        if not (root / f"{i}.png").exists():
            _png(root / f"{i}.png", (2, 2, 3), value=i)
    for stale in root.glob("*.png"):
        if int(stale.stem) >= len(values):
            stale.unlink()
    rows = [
        f"{i}.png," + ",".join("" if v is None else repr(v) for v in row)
        for i, row in enumerate(values)
    ]
    (tmp_path / "attrs.csv").write_text("filename,x,y\n" + "\n".join(rows) + "\n")
    ds = ImageFolderDataset(root, tmp_path / "attrs.csv", verify="header")
    expect = np.array([[np.nan if v is None else v for v in row] for row in values], np.float64)
    np.testing.assert_array_equal(ds.attributes, expect)


def test_load_dataset_layouts(tmp_path):
    mm = tmp_path / "mm"
    for split, n in (("train", 5), ("t10k", 3)):
        save_morphomnist_split(
            mm, split, np.zeros((n, 4, 4), np.uint8), np.zeros(n), {"t": np.ones(n)}
        )
    assert list_splits(mm) == ["train", "t10k"] and test_split(mm) == "t10k"
    assert len(load_dataset(mm)) == 5 and len(load_dataset(mm, "t10k")) == 3
    with pytest.raises(DataValidationError, match="no split 'val'.*\\['train', 't10k'\\]"):
        load_dataset(mm, "val")

    sp = tmp_path / "sp"
    for split in ("test", "train"):
        _png(sp / split / "images" / "0.png")
        (sp / split / "factors.csv").write_text("filename,label,f\nimages/0.png,1,0.5\n")
    assert list_splits(sp) == ["train", "test"] and test_split(sp) == "test"
    assert load_dataset(sp, "test").attribute_names == ["f"]

    plain = _folder(tmp_path, 2, csv="filename,q\n0.png,1\n1.png,2\n")
    assert list_splits(plain) == [] and test_split(plain) is None
    assert load_dataset(plain).attribute_names == ["q"]
    assert load_dataset(plain / "attrs.csv").attribute_names == ["q"]
    with pytest.raises(DataValidationError, match="no splits found"):
        load_dataset(plain, "train")

    np.savez(tmp_path / "a.npz", images=np.zeros((3, 5, 5), np.uint8), labels=np.arange(3))
    assert load_dataset(tmp_path / "a.npz").labels.tolist() == [0, 1, 2]
    np.savez(tmp_path / "b.npz", pictures=np.zeros(3))
    with pytest.raises(DataValidationError, match="no array named 'images'"):
        load_dataset(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", images=np.zeros((3, 5, 5)))
    with pytest.raises(DataValidationError, match="expected uint8 images"):
        load_dataset(tmp_path / "c.npz")
    assert len(load_dataset(mm / "train-images-idx3-ubyte.gz")) == 5
    with pytest.raises(DataValidationError, match="no such dataset"):
        load_dataset(tmp_path / "nothing")


def test_mode_conversion_is_logged(tmp_path, caplog):
    root = tmp_path / "c"
    _png(root / "a.png", (4, 4, 3))
    _png(root / "b.png", (4, 4, 3))
    with caplog.at_level("INFO", logger="glance.data.folder"):
        ImageFolderDataset(root, image_mode="L")
    assert "converting 2 image(s) to mode L (from RGB: 2)" in caplog.text


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab1.,;"\n\r\t e-+naif\ufeff')), max_size=60))
def test_fuzz_csv_parser_returns_table_or_validation_error(text):
    import tempfile
    from pathlib import Path

    from glance.data._csv import numeric_columns, read_csv

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.csv"
        path.write_text(text, encoding="utf-8")
        try:
            table = read_csv(path)
            values = numeric_columns(table, table.header, allow_missing=True)
        except DataValidationError:
            return
        assert values.shape == (len(table.rows), len(table.header))
        assert not np.isinf(values).any()


def test_explicit_delimiter(tmp_path):
    root = _folder(tmp_path, 1)
    (root / "a.csv").write_text("filename;a\n0.png;1.5\n")
    ds = ImageFolderDataset(root, root / "a.csv", delimiter=";", verify="header")
    assert ds.attribute("a").tolist() == [1.5]

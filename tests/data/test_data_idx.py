"""IDX reader/writer: round trips, every corrupt header field, and a fuzz test."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from glance.data.idx import parse_idx, read_idx, write_idx
from glance.exceptions import DataValidationError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    array=st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    ),
    compress=st.booleans(),
)
def test_round_trip_any_dtype_and_shape(tmp_path, array, compress):
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=")
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress


def test_writes_big_endian_layout(tmp_path):
    write_idx(tmp_path / "x", np.array([[1, 258]], dtype=np.int16))
    raw = (tmp_path / "x").read_bytes()
    assert raw == bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 1, 2) + struct.pack(">hh", 1, 258)


def test_gzip_output_is_deterministic(tmp_path):
    a = np.arange(100, dtype=np.uint8).reshape(10, 10)
    write_idx(tmp_path / "1.gz", a)
    write_idx(tmp_path / "2.gz", a)
    assert (tmp_path / "1.gz").read_bytes() == (tmp_path / "2.gz").read_bytes()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "two zero bytes"),
        (b"\x00\x07\x08\x01" + struct.pack(">I", 1) + b"\x00", "two zero bytes"),
        (_header(0x0A, (1,)) + b"\x00", "unknown IDX dtype code 0x0A"),
        (bytes([0, 0, 8, 0]), "0 dimensions"),
        (bytes([0, 0, 8, 3]) + struct.pack(">I", 2), "dimension sizes"),
        (_header(0x08, (2, 3)) + b"\x00" * 5, "payload length.*only 5 of 6"),
        (_header(0x08, (2, 3)) + b"\x00" * 7, "payload length.*more than 6"),
        (_header(0x0C, (3,)) + b"\x00" * 11, "only 11 of 12"),
        (b"\x00\x00", "magic number"),
        (b"", "magic number"),
    ],
)
def test_bad_header_fields_are_named(tmp_path, data, match):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataValidationError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_absurd_declared_size_is_refused_before_allocating(tmp_path):
    path = tmp_path / "forged"
    path.write_bytes(_header(0x0E, (2**31, 2**31, 2**31)))
    with pytest.raises(DataValidationError, match="above the limit"):
        read_idx(path)
    small = tmp_path / "small"
    small.write_bytes(_header(0x08, (100,)) + b"\x00" * 100)
    with pytest.raises(DataValidationError, match="above the limit of 50 bytes"):
        read_idx(small, max_bytes=50)
    assert read_idx(small, max_bytes=100).shape == (100,)
    # Below the cap but far beyond the file: rejected from the bytes present, no 4 GiB buffer.
    short = tmp_path / "short"
    short.write_bytes(_header(0x08, (2**32 - 1,)) + b"\x00" * 10)
    with pytest.raises(DataValidationError, match="only 10 of 4294967295"):
        read_idx(short)


def test_truncated_and_corrupt_gzip(tmp_path):
    good = gzip.compress(_header(0x08, (50, 50)) + bytes(range(250)) * 10, mtime=0)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataValidationError, match="cut.gz.*(truncated|corrupt|ends)"):
        read_idx(cut)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    bad = tmp_path / "flipped.gz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataValidationError, match="flipped.gz"):
        read_idx(bad)


def test_write_refuses_unsupported_arrays(tmp_path):
    with pytest.raises(DataValidationError, match="int64"):
        write_idx(tmp_path / "a", np.zeros(3, np.int64))
    with pytest.raises(DataValidationError, match="bool"):
        write_idx(tmp_path / "a", np.zeros(3, bool))
    with pytest.raises(DataValidationError, match="shape"):
        write_idx(tmp_path / "a", np.array(5, np.uint8))
    assert not (tmp_path / "a").exists()


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=64)
    | st.builds(
        lambda h, b: h + b,
        st.sampled_from(
            [
                _header(c, d)
                for c in (8, 9, 0x0B, 0x0C, 0x0D, 0x0E)
                for d in ((2,), (1, 3), (2, 1, 2))
            ]
        ),
        st.binary(max_size=40),
    )
)
def test_fuzz_random_bytes_give_array_or_validation_error(data):
    for blob in (data, gzip.compress(data, mtime=0), gzip.compress(data, mtime=0)[:-3]):
        try:
            out = parse_idx(blob, "fuzz", max_bytes=1 << 16)
        except DataValidationError:
            continue
        assert isinstance(out, np.ndarray)

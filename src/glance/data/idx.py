"""Reading and writing IDX files (the MNIST / Morpho-MNIST array format), raw or gzip-compressed.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the array data, big-endian, row-major. Every header field is
validated, and the declared size is checked against a cap *before* anything is allocated, so a
forged header cannot trigger a giant allocation.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from glance._io import atomic_write_bytes
from glance.exceptions import DataValidationError

__all__ = ["IDX_DTYPES", "DEFAULT_MAX_BYTES", "read_idx", "parse_idx", "write_idx"]

#: IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}

#: Largest payload :func:`read_idx` accepts by default (8 GiB; full MNIST train is 47 MB).
DEFAULT_MAX_BYTES = 8 << 30

_GZIP_MAGIC = b"\x1f\x8b"
_BLOCK = 1 << 24
_DECOMPRESS_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


def _read_exact(fh: BinaryIO, n: int, source: str, what: str) -> bytes:
    try:
        data = fh.read(n)
    except _DECOMPRESS_ERRORS as exc:
        raise DataValidationError(
            f"{source}: corrupt or truncated gzip stream while reading the {what} ({exc})"
        ) from None
    if len(data) != n:
        raise DataValidationError(
            f"{source}: file ends inside the {what}: expected {n} bytes, got {len(data)}"
        )
    return data


def _parse_header(
    fh: BinaryIO, source: str, max_bytes: int
) -> tuple[np.dtype, tuple[int, ...], int]:
    magic = _read_exact(fh, 4, source, "magic number (4 bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise DataValidationError(
            f"{source}: not an IDX file: magic number must start with two zero bytes; "
            f"got {magic[:2].hex()}"
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataValidationError(
            f"{source}: unknown IDX dtype code 0x{code:02X} in the magic number; expected one "
            f"of {known}"
        )
    if ndim == 0:
        raise DataValidationError(f"{source}: IDX header declares 0 dimensions; expected >= 1")
    dims = struct.unpack(f">{ndim}I", _read_exact(fh, 4 * ndim, source, f"{ndim} dimension sizes"))
    dtype = IDX_DTYPES[code]
    n_bytes = int(np.prod(dims, dtype=object)) * dtype.itemsize
    if n_bytes > max_bytes:
        raise DataValidationError(
            f"{source}: IDX header declares dimensions {dims} of {dtype.name} = {n_bytes} bytes, "
            f"above the limit of {max_bytes} bytes (pass max_bytes to read larger files)"
        )
    return dtype, tuple(int(d) for d in dims), n_bytes


def _parse_stream(fh: BinaryIO, source: str, max_bytes: int) -> np.ndarray:
    dtype, dims, n_bytes = _parse_header(fh, source, max_bytes)
    # Read in bounded blocks: a forged header must not make one read() allocate its declared
    # size before we learn the file is short.
    payload = bytearray()
    try:
        while len(payload) <= n_bytes:
            block = fh.read(min(n_bytes + 1 - len(payload), _BLOCK))
            if not block:
                break
            payload += block
    except _DECOMPRESS_ERRORS as exc:
        raise DataValidationError(
            f"{source}: corrupt or truncated gzip stream in the IDX data ({exc})"
        ) from None
    if len(payload) != n_bytes:
        more = "more than" if len(payload) > n_bytes else f"only {len(payload)} of"
        raise DataValidationError(
            f"{source}: payload length: header declares dimensions {dims} of {dtype.name} "
            f"({n_bytes} bytes); the file holds {more} {n_bytes} bytes"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def parse_idx(
    data: bytes, source: str = "<bytes>", *, max_bytes: int = DEFAULT_MAX_BYTES
) -> np.ndarray:
    """Parse IDX ``data`` (raw or gzip-compressed bytes) into an array.

    Parameters
    ----------
    data
        The file's bytes.
    source
        Name used in error messages.
    max_bytes
        Largest declared payload accepted.

    Returns
    -------
    numpy.ndarray
        Native-endian array with the declared dtype and shape.

    Raises
    ------
    DataValidationError
        Any malformed header field, payload length mismatch or corrupt gzip stream.
    """
    import io

    fh: BinaryIO = io.BytesIO(data)
    if data[:2] == _GZIP_MAGIC:
        fh = gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[assignment]
    return _parse_stream(fh, source, max_bytes)


def read_idx(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw, detected from its first bytes).

    Parameters
    ----------
    path
        The file, e.g. ``train-images-idx3-ubyte.gz``.
    max_bytes
        Largest declared payload accepted; larger headers are refused before allocating.

    Returns
    -------
    numpy.ndarray
        Native-endian array with the dtype and shape the header declares.

    Raises
    ------
    DataValidationError
        Bad magic number, unknown dtype code, zero dimensions, declared size above
        ``max_bytes``, payload length not equal to the product of the dimensions times the item
        size, or a truncated / corrupt gzip stream. The message names the file and the field.
    FileNotFoundError
        ``path`` does not exist.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        if head == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                return _parse_stream(gz, str(path), max_bytes)  # type: ignore[arg-type]
        return _parse_stream(raw, str(path), max_bytes)


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None
) -> None:
    """Write ``array`` as an IDX file, atomically.

    Parameters
    ----------
    path
        Destination file.
    array
        Array of a dtype IDX supports (uint8, int8, int16, int32, float32, float64), at least
        one dimension, each below 2**32.
    compress
        gzip the file; default: when ``path`` ends in ``.gz``. The gzip header carries no
        timestamp, so equal arrays give equal bytes.

    Raises
    ------
    DataValidationError
        The dtype or shape cannot be stored in IDX.
    """
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise DataValidationError(
            f"{path}: cannot store dtype {array.dtype} in IDX; expected one of uint8, int8, "
            "int16, int32, float32, float64"
        )
    if array.ndim < 1 or array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise DataValidationError(
            f"{path}: cannot store an array of shape {array.shape} in IDX "
            "(1 to 255 dimensions, each below 2**32)"
        )
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)

"""Any image dataset: an image folder or list file plus an optional attributes CSV, read lazily.

Images are decoded from disk with Pillow when requested (nothing is held in memory but the
file names, labels and attributes), converted to one explicit mode (``L``, ``RGB`` or ``RGBA``)
and optionally resized, so datasets of any size, resolution and channel count stream.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from glance.data._csv import MISSING_TOKENS, CsvTable, numeric_columns, read_csv, require_columns
from glance.data.base import ImageDataset
from glance.exceptions import DataValidationError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "list_image_files"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)
_MODES = {"L": 1, "RGB": 3, "RGBA": 4}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_MAX_LISTED = 20
#: verify="auto" decodes every image up front up to this many images (~1 ms each), else only
#: opens them (decode errors then surface when an image is loaded, naming the file).
FULL_VERIFY_LIMIT = 20_000


def list_image_files(root: str | os.PathLike[str]) -> list[str]:
    """Image files under ``root`` (recursive), as sorted POSIX paths relative to ``root``."""
    root = Path(root)
    found = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    ]
    return sorted(found)


def _listing(problems: Sequence[str]) -> str:
    more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
    return "; ".join(problems[:_MAX_LISTED]) + more


class ImageFolderDataset(ImageDataset):
    """Images on disk with optional labels and context attributes from a CSV.

    Parameters
    ----------
    root
        An image folder (searched recursively) or a list file (one image path per line,
        relative to the list file's folder). CSV file names are relative to the folder.
    attributes_csv
        Optional CSV with a ``filename_column``, an optional ``label_column`` and attribute
        columns. When given, its rows define the dataset and its order; every listed file must
        exist and every image under ``root`` must have a row. Empty / ``NA`` / ``NaN`` cells are
        missing values (NaN).
    filename_column, label_column
        Column names. Labels may be integers (classes ``"0"`` .. ``"K-1"``) or strings (classes
        in sorted order); an empty label cell means unknown (-1). The label column is optional
        unless a name other than the default is given.
    attribute_columns
        Attribute columns to read (default: every column but file name and label). All must be
        numeric.
    image_mode
        ``"L"`` (1 channel), ``"RGB"`` (3) or ``"RGBA"`` (4); every image is converted to it
        (16-bit greyscale is scaled to 8 bits). Default: ``"L"`` if the first image is greyscale,
        else ``"RGB"``.
    image_size
        ``(H, W)`` or an int to resize every image to (bilinear); default: the first image's
        size, and every other image must match it.
    verify
        ``"full"`` decodes every image up front and lists all unreadable files in one error;
        ``"header"`` only opens them (size and format); ``"none"`` defers errors to loading;
        ``"auto"``: ``"full"`` up to :data:`FULL_VERIFY_LIMIT` images, else ``"header"``.
    delimiter
        CSV delimiter (explicit, never guessed; a header that looks delimited by something else
        is reported).
    allow_paths_outside_root
        Accept CSV / list entries that are absolute or lead outside the root folder.

    Raises
    ------
    DataValidationError
        Empty folder, missing or duplicate columns, duplicate file names, paths outside the root,
        files missing on disk, images without a CSV row, non-numeric or infinite attribute
        values, unreadable or corrupt images, images of mismatched size.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        attributes_csv: str | os.PathLike[str] | None = None,
        *,
        filename_column: str = "filename",
        label_column: str = "label",
        attribute_columns: Sequence[str] | None = None,
        image_mode: Literal["L", "RGB", "RGBA"] | None = None,
        image_size: int | tuple[int, int] | None = None,
        verify: Literal["auto", "full", "header", "none"] = "auto",
        delimiter: str = ",",
        allow_paths_outside_root: bool = False,
    ) -> None:
        root = Path(root)
        if image_mode is not None and image_mode not in _MODES:
            raise DataValidationError(
                f"image_mode must be one of {sorted(_MODES)} or None; got {image_mode!r}"
            )
        if verify not in ("auto", "full", "header", "none"):
            raise DataValidationError(
                f"verify must be 'auto', 'full', 'header' or 'none'; got {verify!r}"
            )
        if root.is_file() and root.suffix.lower() in IMAGE_EXTENSIONS:
            raise DataValidationError(
                f"{root}: expected an image folder or a list file of image paths; got one image"
            )
        if root.is_file():
            base, files = root.parent, self._read_list_file(root)
        elif root.is_dir():
            base, files = root, list_image_files(root)
        else:
            raise DataValidationError(f"{root}: no such image folder or list file")
        self.root = base
        self.source = str(attributes_csv or root)
        self._allow_outside = allow_paths_outside_root
        self._delimiter = delimiter
        if attributes_csv is None:
            if not files:
                raise DataValidationError(
                    f"{root}: 0 images found (extensions: {', '.join(IMAGE_EXTENSIONS)})"
                )
            self._check_paths(files, str(root), None)
            self.files = files
            self.labels = np.full(len(files), -1, np.int64)
            self.attributes = np.zeros((len(files), 0))
            self.attribute_names = []
            self.classes = []
        else:
            self._from_csv(
                Path(attributes_csv),
                files,
                root.is_dir(),
                filename_column,
                label_column,
                attribute_columns,
            )
        self.image_mode = image_mode or self._infer_mode()
        self._size = self._parse_size(image_size)
        if verify == "auto":
            verify = "full" if len(self.files) <= FULL_VERIFY_LIMIT else "header"
        self._verify(verify)

    # -- construction helpers ------------------------------------------------------------------

    @staticmethod
    def _read_list_file(path: Path) -> list[str]:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DataValidationError(f"{path}: list file is not UTF-8 text") from None
        files = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not files:
            raise DataValidationError(f"{path}: list file names no images")
        return files

    def _check_paths(self, files: Sequence[str], source: str, lines: Sequence[int] | None) -> None:
        """Reject absolute paths and paths leading outside the root (unless allowed)."""
        if self._allow_outside:
            return
        root = self.root.resolve()
        bad = []
        for k, name in enumerate(files):
            path = Path(name)
            inside = not path.is_absolute() and (root / path).resolve().is_relative_to(root)
            if not inside:
                where = f"line {lines[k]}" if lines is not None else f"entry {k + 1}"
                bad.append(f"{where}: {name!r}")
        if bad:
            raise DataValidationError(
                f"{source}: file names must be relative paths inside {self.root} "
                f"(pass allow_paths_outside_root=True to accept others); {_listing(bad)}"
            )

    def _from_csv(
        self,
        csv_path: Path,
        files: list[str],
        check_unlisted: bool,
        filename_column: str,
        label_column: str,
        attribute_columns: Sequence[str] | None,
    ) -> None:
        table = read_csv(csv_path, delimiter=self._delimiter)
        require_columns(table, [filename_column])
        if not table.rows:
            raise DataValidationError(f"{csv_path}: no data rows below the header")
        has_label = label_column in table.header
        if not has_label and label_column != "label":
            require_columns(table, [label_column])
        names = table.column(filename_column)
        self._check_paths(names, str(csv_path), table.lines)
        self._check_files(csv_path, table, names, files, filename_column, check_unlisted)
        if attribute_columns is None:
            attribute_columns = [
                h for h in table.header if h not in (filename_column, label_column)
            ]
        self.files = [Path(n).as_posix() for n in names]
        self.attribute_names = list(attribute_columns)
        self.attributes = numeric_columns(table, self.attribute_names, allow_missing=True)
        if has_label:
            self.labels, self.classes = self._parse_labels(table, label_column)
        else:
            self.labels, self.classes = np.full(len(names), -1, np.int64), []

    def _check_files(
        self,
        csv_path: Path,
        table: CsvTable,
        names: list[str],
        files: list[str],
        filename_column: str,
        check_unlisted: bool,
    ) -> None:
        seen: dict[str, int] = {}
        dups = []
        for line, name in zip(table.lines, names, strict=True):
            key = os.path.normpath(name)
            if key in seen:
                dups.append(f"{name!r} at lines {seen[key]} and {line}")
            seen.setdefault(key, line)
        if dups:
            raise DataValidationError(
                f"{csv_path}: duplicate file names in column {filename_column!r}: {_listing(dups)}"
            )
        missing = [
            f"line {line}: {name!r}"
            for line, name in zip(table.lines, names, strict=True)
            if not (self.root / name).is_file()
        ]
        if missing:
            raise DataValidationError(
                f"{csv_path}: {len(missing)} file(s) listed in column {filename_column!r} do not "
                f"exist under {self.root}: {_listing(missing)}"
            )
        if check_unlisted:
            unlisted = [f for f in files if os.path.normpath(f) not in seen]
            if unlisted:
                raise DataValidationError(
                    f"inconsistent numbers of samples: images={len(files)} ({self.root}), "
                    f"attribute rows={len(names)} ({csv_path}); {len(unlisted)} image(s) have no "
                    f"CSV row, e.g. {unlisted[0]!r}"
                )

    @staticmethod
    def _parse_labels(table: CsvTable, column: str) -> tuple[np.ndarray, list[str]]:
        cells = table.column(column)
        known = [c for c in cells if c.lower() not in MISSING_TOKENS]
        try:
            values = [float(c) for c in known]
            if not all(v.is_integer() for v in values):
                raise ValueError("not integral")
            ints = [int(v) for v in values]
        except ValueError:
            classes = sorted(set(known))
            index = {c: k for k, c in enumerate(classes)}
            return np.array([index.get(c, -1) for c in cells], np.int64), classes
        bad = [
            f"line {ln}"
            for ln, c in zip(table.lines, cells, strict=True)
            if c.lower() not in MISSING_TOKENS and float(c) < 0
        ]
        if bad:
            raise DataValidationError(
                f"{table.path}: column {column!r} holds negative class numbers at {_listing(bad)}; "
                "use an empty cell for an unknown label"
            )
        labels = np.array(
            [int(float(c)) if c.lower() not in MISSING_TOKENS else -1 for c in cells], np.int64
        )
        return labels, [str(k) for k in range(max(ints, default=-1) + 1)]

    def _open(self, k: int) -> Image.Image:
        path = self.root / self.files[k]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataValidationError(f"{path}: refusing a decompression bomb ({exc})") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataValidationError(f"{path}: unreadable image ({exc})") from None

    def _infer_mode(self) -> str:
        with self._open(0) as img:
            return "L" if img.mode in _GREY_MODES else "RGB"

    def _parse_size(self, image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
        if image_size is None:
            with self._open(0) as img:
                w, h = img.size
            self.image_shape = (_MODES[self.image_mode], h, w)
            return None
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
            raise DataValidationError(
                f"image_size must be a positive int or (height, width); got {image_size!r}"
            )
        self.image_shape = (_MODES[self.image_mode], size[0], size[1])
        return size  # type: ignore[return-value]

    def _verify(self, verify: str) -> None:
        if verify == "none":
            return
        bad = []
        modes: dict[str, int] = {}
        for k in range(len(self.files)):
            try:
                with self._open(k) as img:
                    self._check_size(k, img.size)
                    modes[img.mode] = modes.get(img.mode, 0) + 1
                if verify == "full":
                    self._decode(k)
            except DataValidationError as exc:
                bad.append(str(exc))
        if bad:
            raise DataValidationError(
                f"{self.source}: {len(bad)} unreadable or mismatched image(s): {_listing(bad)}"
            )
        converted = {m: c for m, c in modes.items() if m != self.image_mode}
        if converted:
            logger.info(
                "%s: converting %d image(s) to mode %s (from %s)",
                self.source,
                sum(converted.values()),
                self.image_mode,
                ", ".join(f"{m}: {c}" for m, c in sorted(converted.items())),
            )

    # -- loading --------------------------------------------------------------------------------

    def _check_size(self, k: int, size: tuple[int, int]) -> None:
        if self._size is None and (size[1], size[0]) != self.image_shape[1:]:
            raise DataValidationError(
                f"{self.root / self.files[k]}: image is {size[0]}x{size[1]} (WxH); the dataset's "
                f"images are {self.image_shape[2]}x{self.image_shape[1]} (pass image_size to "
                "resize)"
            )

    def _decode(self, k: int) -> np.ndarray:
        """Image ``k`` as uint8 (C, H, W) in the dataset's mode and size."""
        path = self.root / self.files[k]
        with self._open(k) as img:
            self._check_size(k, img.size)
            try:
                img.load()
                img = _convert(img, self.image_mode)
                if self._size is not None and img.size != (self._size[1], self._size[0]):
                    img = img.resize((self._size[1], self._size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
            except (OSError, ValueError, SyntaxError) as exc:
                raise DataValidationError(f"{path}: corrupt image ({exc})") from None
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def _load_uint8(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self.image_shape), np.uint8)
        for j, k in enumerate(np.asarray(indices, np.int64)):
            out[j] = self._decode(int(k))
        return out


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """Convert to ``mode``; 16-bit greyscale is rescaled (Pillow's convert would clip it)."""
    if img.mode.startswith("I;16") or img.mode == "I":
        array = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        img = Image.fromarray(np.rint(array * (255.0 / peak)).clip(0, 255).astype(np.uint8))
    elif img.mode == "F":
        raise DataValidationError(
            f"{getattr(img, 'filename', '<image>')}: floating-point images (mode F) are not "
            "supported; convert them to 8 or 16 bits"
        )
    return img if img.mode == mode else img.convert(mode)

"""Read and validate Kaggle Digit Recognizer CSV files (train.csv / test.csv, plain or gzipped).

Valid files take a fast path (numpy's C parser). Only when that fails, or the values
are out of range, does a slow line-by-line validator run to name the first bad cell.
A gzipped file is inflated only as far as a valid one could reach (MAX_TEXT_BYTES).
"""

from __future__ import annotations

import functools
import gzip
import io
import re
import zlib
from pathlib import Path

import numpy as np

from search.config import IMAGE_SIDE
from search.errors import UserError

PIXEL_COUNT = IMAGE_SIDE * IMAGE_SIDE
PIXEL_COLUMNS = tuple(f"pixel{i}" for i in range(PIXEL_COUNT))
TRAIN_COLUMNS = ("label",) + PIXEL_COLUMNS
KAGGLE_URL = "https://www.kaggle.com/competitions/digit-recognizer/data"

# A .gz is inflated only this far: a valid digit file can't be longer, and a few MB of gzip can
# expand to many GB. 100,000 rows is over twice Kaggle's train.csv (42,000) and all of MNIST (70,000).
MAX_ROWS = 100_000
_WIDEST_ROW = len(TRAIN_COLUMNS) * len("255,") + 1  # every cell "255,"; the last one's comma is a CRLF
MAX_TEXT_BYTES = len("\ufeff".encode()) + len(",".join(TRAIN_COLUMNS) + "\r\n") + MAX_ROWS * _WIDEST_ROW
_INFLATE_CHUNK = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_FIX_ROW = "fix the row or re-download the file from Kaggle"
_INTEGER = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)


class DataError(UserError, ValueError):
    """A user's data problem; str(err) is ONE line naming the file, row and column where known and what to do."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


def find_csv(directory: Path, stem: str) -> Path | None:
    """Return `stem.csv` in `directory`, else `stem.csv.gz`, else None (plain wins over gzip)."""
    for candidate in (directory / f"{stem}.csv", directory / f"{stem}.csv.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_raw(path: Path) -> bytes:
    """Return the file's bytes as stored on disk, or raise DataError if it can't be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from exc


def parse_train(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse train.csv bytes into (images (N, 28, 28) uint8, labels (N,) int64)."""
    table = _parse_table(str(path), raw, labelled=True)
    labels = table[:, 0].astype(np.int64)
    return _to_images(table[:, 1:]), labels


def parse_test(path: Path, raw: bytes) -> np.ndarray:
    """Parse test.csv bytes into images (M, 28, 28) uint8."""
    return _to_images(_parse_table(str(path), raw, labelled=False))


def _to_images(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def _parse_table(name: str, raw: bytes, *, labelled: bool) -> np.ndarray:
    if not raw:
        raise DataError(f"{name}: the file is empty (0 bytes); re-download it from Kaggle ({KAGGLE_URL})")
    text = _decode(name, _decompress(name, raw))
    header, body = _split_header(name, text)
    columns = _check_header(name, header, labelled)
    table = _fast_parse(body, len(columns))
    if table is not None and _values_in_range(table, labelled):
        return table
    _raise_first_bad_row(name, body, columns, labelled)
    raise DataError(f"{name}: could not be parsed as {len(columns)} integer columns; re-download it from Kaggle")


def _decompress(name: str, raw: bytes) -> bytes | bytearray:
    """The file's text bytes: gzip is inflated in chunks, and refused once past MAX_TEXT_BYTES."""
    if not raw.startswith(_GZIP_MAGIC):
        if name.endswith(".gz"):
            raise DataError(f"{name}: not a gzip file (no gzip signature); re-download it")
        return raw
    text = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            while chunk := stream.read(_INFLATE_CHUNK):
                text += chunk
                if len(text) > MAX_TEXT_BYTES:
                    raise DataError(
                        f"{name}: inflates to more than {MAX_TEXT_BYTES / 1e6:.0f} MB, longer than a digit CSV of "
                        f"{MAX_ROWS:,} rows can be ({len(TRAIN_COLUMNS)} values of at most 3 digits each); "
                        f"not a Kaggle file (or a gzip bomb): re-download it, or decompress it yourself if it is "
                        f"really that large"
                    )
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: truncated or corrupt gzip ({exc}); re-download it") from exc
    return text


def _decode(name: str, data: bytes | bytearray) -> str:
    if not data:
        raise DataError(f"{name}: contains no text; re-download it from Kaggle ({KAGGLE_URL})")
    head = data[:1024]
    if b"\x00" in head or not _is_utf8_prefix(head):
        raise DataError(
            f"{name}: does not look like a CSV text file (binary data at the start); "
            f"re-download it from Kaggle ({KAGGLE_URL})"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{name} line {line}: not valid UTF-8 text (byte 0x{data[exc.start]:02x}); "
            f"save it as UTF-8 or re-download it from Kaggle"
        ) from exc
    return text.removeprefix("\ufeff")


def _is_utf8_prefix(head: bytes) -> bool:
    """True if `head` is valid UTF-8, allowing a multi-byte character cut off at the end."""
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data"


def _split_header(name: str, text: str) -> tuple[str, str]:
    if not text.strip():
        raise DataError(f"{name}: the file is empty (only blank space); re-download it from Kaggle ({KAGGLE_URL})")
    header, _, body = text.partition("\n")
    if not body.strip():
        raise DataError(f"{name}: has a header line but no data rows; re-download it from Kaggle ({KAGGLE_URL})")
    return header.rstrip("\r"), body


def _check_header(name: str, header: str, labelled: bool) -> tuple[str, ...]:
    expected = TRAIN_COLUMNS if labelled else PIXEL_COLUMNS
    found = tuple(cell.strip().strip('"') for cell in header.split(","))
    if found == expected:
        return expected
    where = f"{name} line 1"
    if header.lstrip().startswith("<"):
        raise DataError(
            f"{where}: looks like an HTML or XML page, not a CSV (a failed download?); "
            f"re-download the file from Kaggle ({KAGGLE_URL})"
        )
    wanted = "label,pixel0,...,pixel783" if labelled else "pixel0,...,pixel783"
    if _INTEGER.fullmatch(found[0]):
        raise DataError(
            f"{where}: no header row (it starts with numbers); the first line must be "
            f"'{wanted}'; add it or re-download the file from Kaggle"
        )
    if labelled and found[0] != "label":
        looks_like_test = " (it looks like test.csv - are the files swapped?)" if found == PIXEL_COLUMNS else ""
        raise DataError(
            f"{where}: the first column must be 'label', found {_show(found[0])}{looks_like_test}; "
            f"training data needs the header '{wanted}'"
        )
    if not labelled and found[0] == "label":
        raise DataError(
            f"{where}: has a 'label' column, but test.csv must be unlabelled ('{wanted}'); "
            f"are train.csv and test.csv swapped?"
        )
    if len(found) != len(expected):
        raise DataError(
            f"{where}: the header has {len(found)} columns, expected {len(expected)} ('{wanted}'); "
            f"images must be 28x28 = 784 pixels; re-download the file from Kaggle"
        )
    column = next(i for i, (got, want) in enumerate(zip(found, expected, strict=True)) if got != want)
    raise DataError(
        f"{where}, column {column + 1}: header says {_show(found[column])}, expected "
        f"{_show(expected[column])}; re-download the file from Kaggle"
    )


def _fast_parse(body: str, column_count: int) -> np.ndarray | None:
    """Parse all data rows with numpy's C parser, or return None if anything looks off."""
    try:
        table = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.int16, ndmin=2, comments=None)
    except ValueError:
        return None
    # loadtxt silently skips blank lines; count lines so a blank one goes to the validator
    line_count = body.rstrip().count("\n") + 1
    if table.shape != (line_count, column_count):
        return None
    return table


def _values_in_range(table: np.ndarray, labelled: bool) -> bool:
    pixels = table[:, 1:] if labelled else table
    if pixels.min() < 0 or pixels.max() > 255:
        return False
    return not labelled or (table[:, 0].min() >= 0 and table[:, 0].max() <= 9)


def _raise_first_bad_row(name: str, body: str, columns: tuple[str, ...], labelled: bool) -> None:
    """Scan rows in file order and raise DataError for the first problem found."""
    for line_number, line in enumerate(body.rstrip().split("\n"), start=2):
        line = line.rstrip("\r")
        if _is_clean_row(line, len(columns), labelled):
            continue
        problem = _row_problem(line, columns, labelled)
        if problem:
            raise DataError(f"{name} line {line_number}{problem}; {_FIX_ROW}")


def _is_clean_row(line: str, column_count: int, labelled: bool) -> bool:
    """Cheap check that passes almost every good row, so the slow per-cell check runs rarely."""
    return _clean_row_pattern(column_count, labelled).fullmatch(line) is not None


@functools.lru_cache(maxsize=4)
def _clean_row_pattern(column_count: int, labelled: bool) -> re.Pattern[str]:
    pixel = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
    cells = [r"[0-9]"] if labelled else []
    cells += [pixel] * (column_count - len(cells))
    return re.compile(",".join(cells), re.ASCII)


def _row_problem(line: str, columns: tuple[str, ...], labelled: bool) -> str | None:
    """Describe the row's first problem as ', column X: ...' or ': ...', or None if it is fine."""
    if not line.strip():
        return ": the line is empty (blank lines are not allowed between rows)"
    cells = line.split(",")
    if len(cells) != len(columns):
        return f": has {len(cells)} values, expected {len(columns)} (one per header column)"
    for column, cell in zip(columns, cells, strict=True):
        is_label = labelled and column == "label"
        problem = _cell_problem(cell, 9 if is_label else 255, "label" if is_label else "pixel")
        if problem:
            return f", column {column}: {problem}"
    return None


def _cell_problem(cell: str, highest: int, kind: str) -> str | None:
    if not cell.strip():
        return f"the cell is empty (a {kind} must be an integer 0..{highest})"
    if not _INTEGER.fullmatch(cell):
        if _NUMBER.fullmatch(cell):
            return f"{_show(cell)} is not a whole number (a {kind} must be an integer 0..{highest})"
        return f"{_show(cell)} is not an integer (a {kind} must be 0..{highest})"
    value = int(cell)
    if not 0 <= value <= highest:
        return f"{kind} value {value} is outside 0..{highest}"
    return None


def _show(value: str, limit: int = 30) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _one_line(message: str) -> str:
    return " ".join(message.split())

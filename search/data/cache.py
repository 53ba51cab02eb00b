"""The parsed-data cache: named arrays in one file per key, verified whenever it is read.

An entry is an uncompressed zip (numpy's .npz layout) holding `NAME.npy` per array and a
`manifest.json` that records the key, each array's dtype and shape, and a SHA-256 of their
bytes. A reader checks every array's header against the manifest and the bytes actually stored
before allocating anything, then the hash, so a damaged, edited or foreign file is rebuilt,
never served. Caching is best effort: an entry that can't be read or written is rebuilt or skipped.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from search.io import remove_stale_temporaries, write_atomically

__all__ = ["CACHE_FORMAT", "content_hash", "entry_path", "read_arrays", "write_arrays"]

CACHE_FORMAT = 2  # 2: one verified .npz per key (1 was three unverified .npy files); bump when parsing changes
MANIFEST = "manifest.json"
_MANIFEST_MAX_BYTES = 64 * 1024  # a few names, shapes and a hash
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def content_hash(arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 of the arrays' little-endian bytes, one after the other."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


def entry_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}-v{CACHE_FORMAT}.npz"


def read_arrays(cache_dir: Path, key: str, names: Sequence[str]) -> tuple[np.ndarray, ...] | None:
    """The arrays cached under `key`, in the order of `names`, or None if absent or failing any check."""
    try:
        with zipfile.ZipFile(entry_path(cache_dir, key)) as archive:
            manifest = _read_manifest(archive, key, names)
            if manifest is None:
                return None
            arrays = []
            for name, (dtype, shape) in zip(names, manifest["layout"], strict=True):
                array = _read_array(archive, name, dtype, shape)
                if array is None:
                    return None
                arrays.append(array)
    except (OSError, EOFError, ValueError, TypeError, KeyError, RecursionError, zipfile.BadZipFile):
        return None  # whatever a damaged or foreign file raises
    return tuple(arrays) if content_hash(arrays) == manifest["sha256"] else None


def write_arrays(cache_dir: Path, key: str, names: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
    """Cache `arrays` under `key`, atomically; failures (a read-only or full disk) are ignored."""
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "arrays": [
            {"name": name, "dtype": array.dtype.str, "shape": list(array.shape)}
            for name, array in zip(names, arrays, strict=True)
        ],
        "sha256": content_hash(arrays),
    }

    def write(stream: BinaryIO) -> None:
        # ZipInfo: stored, not compressed, and dated 1980, so the same arrays give the same bytes
        with zipfile.ZipFile(stream, "w") as archive:
            archive.writestr(zipfile.ZipInfo(MANIFEST), json.dumps(manifest, indent=1))
            for name, array in zip(names, arrays, strict=True):
                with archive.open(zipfile.ZipInfo(f"{name}.npy"), "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(cache_dir)  # what a killed write left behind
        write_atomically(entry_path(cache_dir, key), write)
    except OSError:
        pass


def _read_manifest(archive: zipfile.ZipFile, key: str, names: Sequence[str]) -> dict | None:
    """The manifest with a "layout" of (dtype, shape) per name added, or None unless it is this key's."""
    info = archive.getinfo(MANIFEST)
    if info.file_size > _MANIFEST_MAX_BYTES:
        return None
    manifest = json.loads(archive.read(info))
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT or manifest.get("key") != key:
        return None
    entries = manifest.get("arrays")
    if not isinstance(entries, list) or [entry.get("name") for entry in entries if isinstance(entry, dict)] != list(
        names
    ):
        return None
    layout = []
    for entry in entries:
        dtype, shape = entry.get("dtype"), entry.get("shape")
        if not isinstance(dtype, str) or not isinstance(shape, list):
            return None
        if np.dtype(dtype).hasobject or not all(type(side) is int and side >= 0 for side in shape):
            return None
        layout.append((np.dtype(dtype), tuple(shape)))
    if not isinstance(manifest.get("sha256"), str):
        return None
    return manifest | {"layout": layout}


def _read_array(archive: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
    """Read `name`.npy if its header matches the manifest and the bytes stored; allocates only then."""
    info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:  # stored: its size is bounded by the file's own
        return None
    with archive.open(info) as member:
        read_header = _HEADER_READERS.get(np.lib.format.read_magic(member))
        if read_header is None:
            return None
        header_shape, fortran_order, header_dtype = read_header(member)
        if header_shape != shape or header_dtype != dtype or fortran_order:
            return None
        nbytes = dtype.itemsize * int(np.prod(shape, dtype=object))
        if member.tell() + nbytes != info.file_size:
            return None
        array = np.empty(shape, dtype=dtype)
        if nbytes and member.readinto(array.reshape(-1).view(np.uint8)) != nbytes:
            return None
    return array

"""Tests for the parsed-data cache (search/data/cache.py): used when intact, rebuilt when anything in it is off."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import search.data.digits as data_module
from search.data.digits import load_digits
from tests.test_data import N_TRAIN, assert_matches_rows, cache_entries, write_kaggle_pair


@pytest.fixture
def kaggle_dir(tmp_path: Path) -> Path:
    return tmp_path / "kaggle"


def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array, allow_pickle=False)
    return stream.getvalue()


def tamper(
    cache_dir: Path, part: str, change: Callable[[bytes], bytes], change_manifest: Callable[[dict], None] | None = None
) -> None:
    """Rewrite the stored .npy bytes of one cached array (`train_labels`, ...) as `change` says.

    Works on both layouts: one `KEY.PART.npy` file per array (format 1), or one zip entry holding
    `PART.npy` members and a manifest (format 2), so these tests show what format 1 got wrong.
    """
    entries = cache_entries(cache_dir)
    per_array = [path for path in entries if path.name.endswith(f".{part}.npy")]
    if per_array:
        per_array[0].write_bytes(change(per_array[0].read_bytes()))
        return
    (entry,) = entries
    with zipfile.ZipFile(entry) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[f"{part}.npy"] = change(members[f"{part}.npy"])
    if change_manifest is not None:
        manifest = json.loads(members["manifest.json"])
        change_manifest(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(entry, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def change_array(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[bytes], bytes]:
    return lambda data: npy_bytes(transform(np.load(io.BytesIO(data), allow_pickle=False)))


def test_second_load_comes_from_cache(kaggle_dir, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    train_rows, test_rows = write_kaggle_pair(kaggle_dir, gz=True)
    first = load_digits(kaggle_dir, cache_dir=cache_dir)
    assert len(cache_entries(cache_dir)) == 1
    assert not list(cache_dir.glob("*.tmp")) and not list(cache_dir.glob(".*"))

    def fail(*args, **kwargs):
        raise AssertionError("parsed again instead of using the cache")

    monkeypatch.setattr(data_module, "parse_train", fail)
    monkeypatch.setattr(data_module, "parse_test", fail)
    second = load_digits(kaggle_dir, cache_dir=cache_dir)
    assert second.data_hash == first.data_hash
    assert_matches_rows(second, train_rows, test_rows)
    assert second.train_images.dtype == np.uint8 and second.train_labels.dtype == np.int64
    second.train_images[0, 0, 0] = 7  # arrays read from the cache are ordinary writable arrays


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong_dtype"])
def test_corrupt_cache_entry_is_rebuilt(kaggle_dir, tmp_path, damage):
    cache_dir = tmp_path / "cache"
    train_rows, test_rows = write_kaggle_pair(kaggle_dir)
    load_digits(kaggle_dir, cache_dir=cache_dir)
    entry = next(path for path in cache_entries(cache_dir) if "train_images" in path.name or path.suffix == ".npz")
    good_bytes = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"not a numpy file at all")
    elif damage == "truncated":
        entry.write_bytes(good_bytes[: len(good_bytes) // 2])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        tamper(cache_dir, "train_images", lambda _: npy_bytes(np.zeros((N_TRAIN, 28, 28), dtype=np.float32)))

    data = load_digits(kaggle_dir, cache_dir=cache_dir)
    assert_matches_rows(data, train_rows, test_rows)
    assert entry.read_bytes() == good_bytes


@pytest.mark.parametrize(
    "part, transform",
    [
        ("train_labels", lambda labels: (labels + 1) % 10),
        ("train_images", np.zeros_like),
        ("test_images", lambda images: images[::-1].copy()),
    ],
    ids=["changed-labels", "zeroed-pixels", "reordered-test-images"],
)
def test_cache_with_edited_arrays_is_rebuilt(kaggle_dir, tmp_path, part, transform):
    # Same shapes and dtypes as the real arrays: only the content hash can tell.
    cache_dir = tmp_path / "cache"
    train_rows, test_rows = write_kaggle_pair(kaggle_dir)
    load_digits(kaggle_dir, cache_dir=cache_dir)
    good_bytes = [path.read_bytes() for path in cache_entries(cache_dir)]
    tamper(cache_dir, part, change_array(transform))

    assert_matches_rows(load_digits(kaggle_dir, cache_dir=cache_dir), train_rows, test_rows)
    assert [path.read_bytes() for path in cache_entries(cache_dir)] == good_bytes


@pytest.mark.parametrize("manifest_agrees", [False, True])
def test_cache_header_claiming_a_huge_shape_is_rebuilt_without_allocating_it(kaggle_dir, tmp_path, manifest_agrees):
    # 784 TB: reading it would raise MemoryError; only the bytes actually stored may be allocated.
    huge = (10**12, 28, 28)
    cache_dir = tmp_path / "cache"
    train_rows, test_rows = write_kaggle_pair(kaggle_dir)
    load_digits(kaggle_dir, cache_dir=cache_dir)

    def claim_huge(data: bytes) -> bytes:
        stream = io.BytesIO()
        np.lib.format.write_array_header_1_0(stream, {"descr": "|u1", "fortran_order": False, "shape": huge})
        return stream.getvalue() + data[-N_TRAIN * 784 :]  # the real pixels after the new header

    def manifest_claims_huge(manifest: dict) -> None:
        next(entry for entry in manifest["arrays"] if entry["name"] == "train_images")["shape"] = list(huge)

    tamper(cache_dir, "train_images", claim_huge, manifest_claims_huge if manifest_agrees else None)
    assert_matches_rows(load_digits(kaggle_dir, cache_dir=cache_dir), train_rows, test_rows)


def test_cache_entry_of_other_files_is_not_served_under_this_hash(tmp_path):
    cache_dir = tmp_path / "cache"
    write_kaggle_pair(tmp_path / "a", seed=1)
    load_digits(tmp_path / "a", cache_dir=cache_dir)
    a_entries = cache_entries(cache_dir)
    train_rows, test_rows = write_kaggle_pair(tmp_path / "b", seed=2)
    load_digits(tmp_path / "b", cache_dir=cache_dir)
    b_entries = [path for path in cache_entries(cache_dir) if path not in a_entries]
    for a_entry, b_entry in zip(a_entries, b_entries, strict=True):  # a's arrays filed under b's hash
        b_entry.write_bytes(a_entry.read_bytes())

    assert_matches_rows(load_digits(tmp_path / "b", cache_dir=cache_dir), train_rows, test_rows)


def test_cache_entry_without_a_manifest_is_rebuilt(kaggle_dir, tmp_path):
    # e.g. re-saved by hand with np.savez: the arrays alone are not trusted
    cache_dir = tmp_path / "cache"
    train_rows, test_rows = write_kaggle_pair(kaggle_dir)
    data = load_digits(kaggle_dir, cache_dir=cache_dir)
    (entry,) = cache_entries(cache_dir)
    np.savez(
        entry.with_suffix(""),
        train_images=np.zeros_like(data.train_images),
        train_labels=data.train_labels,
        test_images=data.test_images,
    )
    assert_matches_rows(load_digits(kaggle_dir, cache_dir=cache_dir), train_rows, test_rows)


def test_cache_entry_is_flushed_to_disk_before_it_is_renamed_into_place(kaggle_dir, tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda handle: (synced.append(handle), real_fsync(handle))[1])
    write_kaggle_pair(kaggle_dir)
    load_digits(kaggle_dir, cache_dir=tmp_path / "cache")
    assert len(synced) >= 2  # the entry, then the folder holding its new name


def test_temporaries_left_by_a_killed_cache_write_are_removed(kaggle_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    stale = cache_dir / ".kaggle-0123-v2.npz.k1ll3d.tmp"
    stale.write_bytes(b"half an entry")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    fresh = cache_dir / ".kaggle-4567-v2.npz.wr1t1ng.tmp"  # another process's write in progress
    fresh.write_bytes(b"being written")
    write_kaggle_pair(kaggle_dir)
    load_digits(kaggle_dir, cache_dir=cache_dir)
    assert not stale.exists() and fresh.exists()


def test_unwritable_cache_dir_just_skips_caching(kaggle_dir, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache directory's parent should be")
    train_rows, test_rows = write_kaggle_pair(kaggle_dir)
    for _ in range(2):
        assert_matches_rows(load_digits(kaggle_dir, cache_dir=blocker / "cache"), train_rows, test_rows)


def test_default_cache_dir_is_studies_cache(kaggle_dir, tmp_path, monkeypatch):
    write_kaggle_pair(kaggle_dir)
    monkeypatch.chdir(tmp_path)
    load_digits(kaggle_dir)
    assert len(cache_entries(tmp_path / "studies" / "cache")) == 1

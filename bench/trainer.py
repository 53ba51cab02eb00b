"""Training throughput, images/s: our trainer vs the notebook-style plain loop, same architecture, one run.

    .venv/bin/python bench/trainer.py                       # bn-cnn and vit-seed, 3 interleaved rounds
    .venv/bin/python bench/trainer.py --images 2048 --rounds 1 --models bn-cnn   # quick look
    .venv/bin/python bench/trainer.py --ablations            # also ours in fp32 and ours at batch 64

Both sides count training steps only (plain: per-image PIL augmentation + DataLoader + fp32 step at
batch 64; ours: batched on-device augmentation + step at the reference batch size, bf16 autocast where
the device runs it faster than fp32), after a warm-up. Each measurement runs in a fresh process, so our trainer's
process-wide malloc setting never reaches the plain loop. Rounds alternate plain and ours so
background load hits both; the median of each is printed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
from collections.abc import Callable
from dataclasses import replace

import torch
from plain_loop import DEFAULT_DATA_DIR, Split, build_reference, load_split, plain_images_per_second

from search.train.allocator import keep_freed_memory
from search.train.device import autocast_dtype, set_threads
from search.train.trainer import TrainingData, train

WARMUP_IMAGES = 512
VAL_IMAGES = 256  # validation is not timed, but it still runs once per train() call


def ours_images_per_second(
    name: str, split: Split, images: int, *, batch_size: int | None = None, fp32: bool = False
) -> float:
    """Training images/s of search.trainer.train on the first `images` training digits, after a warm-up epoch."""
    model, config = build_reference(name)
    if batch_size is not None:
        config = replace(config, batch_size=batch_size)

    def data(count: int) -> TrainingData:
        return TrainingData.from_numpy(
            split.train_images[:count],
            split.train_labels[:count],
            split.val_images[:VAL_IMAGES],
            split.val_labels[:VAL_IMAGES],
            None,
            "cpu",
        )

    keep_freed_memory()  # as the commands do for the process that trains
    precision = "fp32" if fp32 else "auto"
    train(model, data(WARMUP_IMAGES), config, epochs=1, precision=precision)
    return train(model, data(images), config, epochs=1, precision=precision).images_per_second


def plain_side(name: str, split: Split, images: int) -> float:
    model, _ = build_reference(name)
    return plain_images_per_second(model, split.train_images[:images], split.train_labels[:images])


def measure(
    name: str, split: Split, images: int, rounds: int, ablations: bool, threads: int | None
) -> dict[str, float]:
    """Median images/s of each variant over `rounds` interleaved rounds, each measurement in a fresh process."""
    variants: dict[str, tuple[Callable[..., float], dict]] = {
        "plain": (plain_side, {}),
        "ours": (ours_images_per_second, {}),
    }
    if ablations:
        variants["ours fp32"] = (ours_images_per_second, {"fp32": True})
        variants["ours bs64"] = (ours_images_per_second, {"batch_size": 64})
    samples: dict[str, list[float]] = {key: [] for key in variants}
    for round_index in range(rounds):
        for key, (side, options) in variants.items():
            samples[key].append(_in_fresh_process(threads, side, name, split, images, **options))
            print(f"  {name} round {round_index + 1}/{rounds} {key}: {samples[key][-1]:.0f} images/s", flush=True)
    return {key: statistics.median(values) for key, values in samples.items()}


def _in_fresh_process(threads: int | None, side: Callable[..., float], *args, **kwargs) -> float:
    """side(*args, **kwargs) in a new interpreter, so what one side sets process-wide (our trainer tunes
    glibc's malloc) never reaches the other: the plain loop runs as a notebook would."""
    with multiprocessing.get_context("spawn").Pool(1, initializer=set_threads, initargs=(threads,)) as pool:
        return pool.apply(side, args, kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA_DIR), help="folder with Kaggle train.csv(.gz) and test.csv(.gz)"
    )
    parser.add_argument("--models", nargs="+", default=["bn-cnn", "vit-seed"])
    parser.add_argument("--images", type=int, default=4096, help="training images timed per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ablations", action="store_true", help="also time ours in fp32 and ours at batch 64")
    args = parser.parse_args()

    set_threads(args.threads)
    split = load_split(args.data)
    device = torch.device("cpu")
    print(
        f"device cpu, {torch.get_num_threads()} threads, ours autocast {autocast_dtype(device)}; "
        f"{args.images} images x {args.rounds} rounds; load average before {_load_average()}"
    )
    results = {
        name: measure(name, split, args.images, args.rounds, args.ablations, args.threads) for name in args.models
    }

    extra = [key for key in next(iter(results.values())) if key not in ("plain", "ours")]
    header = f"{'model':<10} {'plain img/s':>12} {'ours img/s':>11} {'ratio':>6}" + "".join(
        f" {key + ' img/s':>16}" for key in extra
    )
    print("\n" + header)
    for name, figures in results.items():
        line = (
            f"{name:<10} {figures['plain']:>12.0f} {figures['ours']:>11.0f} {figures['ours'] / figures['plain']:>5.2f}x"
        )
        print(line + "".join(f" {figures[key]:>16.0f}" for key in extra))
    print(f"load average after: {_load_average()}")


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()

"""Which device to train on, how many CPU threads to use, and whether bf16 autocast pays off there."""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path

import torch

from search.errors import UserError

# CPU flags (as /proc/cpuinfo spells them) of native bf16 matrix units; without them oneDNN
# emulates bf16 on AVX-512 and runs slower than fp32.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# The flags alone don't settle it: an AMD EPYC with AVX-512 BF16 ran a 512² bf16 matmul 2.3x faster
# than fp32, an Intel Xeon with AVX-512 BF16 but no AMX 0.55x as fast (bn-cnn trained at 891 images/s
# in bf16 there against 1,033 in fp32). So bf16 must also win a timed matmul by this factor, which
# leaves room for autocast's casts.
BF16_PROBE_SIZE = 512
BF16_PROBE_REPEATS = 5
BF16_MIN_SPEEDUP = 1.25


def select_device(preference: str = "auto") -> torch.device:
    """The torch device for `preference`: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", preference):
        if not torch.cuda.is_available():
            raise ValueError(f"device {preference!r} requested but CUDA is not available; use --device cpu or auto")
        device = torch.device(preference)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {preference!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)"
            )
        return device
    raise ValueError(f"unknown device {preference!r}; expected auto, cpu, cuda or cuda:N")


def resolve_device(preference: str | torch.device, threads: int | None = None) -> torch.device:
    """select_device and set_threads for a command's --device/--threads; UserError naming the option."""
    set_threads(threads)
    if isinstance(preference, torch.device):
        return preference
    try:
        return select_device(preference)
    except ValueError as err:
        raise UserError(f"--device: {err}") from None


def set_threads(n: int | None) -> None:
    """Use `n` intra-op CPU threads (and as many inter-op threads, if torch still allows setting them); None leaves both."""
    if n is None:
        return
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # torch allows this once, before any inter-op work has started; then it stays as it was


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where the hardware runs it natively and faster (CUDA with bf16; CPUs with AVX-512 BF16 or AMX
    whose bf16 matmul measures faster than fp32), else None (fp32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        native = torch.backends.mkldnn.is_available() and _cpu_has_native_bf16()
        return torch.bfloat16 if native and _cpu_bf16_speedup() >= BF16_MIN_SPEEDUP else None
    return None


@functools.cache
def _cpu_bf16_speedup() -> float:
    """How many times faster a bf16 matmul runs than an fp32 one on this CPU, with the current threads (~20 ms, once)."""
    return _best_matmul_seconds(torch.float32) / _best_matmul_seconds(torch.bfloat16)


def _best_matmul_seconds(dtype: torch.dtype) -> float:
    a = torch.randn(BF16_PROBE_SIZE, BF16_PROBE_SIZE).to(dtype)
    a @ a  # first call pays oneDNN's kernel generation
    best = float("inf")
    for _ in range(BF16_PROBE_REPEATS):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return best


@functools.cache
def _cpu_has_native_bf16() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, so stay with fp32
        return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)

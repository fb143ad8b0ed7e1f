"""glibc's heap in CPU training: one malloc arena for every thread, and free heap memory given back to the system
when a run's resident memory grows (docs/benchmarks.md)."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

M_ARENA_MAX = -8  # mallopt's parameter number (glibc's malloc.h)


@cache
def _glibc():
    name = ctypes.util.find_library("c")
    if name is None or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def one_malloc_arena() -> bool:
    """glibc only: threads made from now on (the tokenizer's, torch's) allocate from the main heap instead of arenas
    of their own, whose freed memory stays resident apart: 0.05-0.1 GB less at the peak of a CPU training run
    (docs/benchmarks.md). Returns whether the C library took the setting."""
    libc = _glibc()
    return libc is not None and libc.mallopt(M_ARENA_MAX, 1) == 1


def resident_gb() -> float | None:
    """This process's resident memory now (VmRSS), in GB; None where there is no /proc (not Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def heap_gb() -> tuple[float, float] | None:
    """glibc only: the size of its heap and arenas and the part in use (mallinfo2), in GB."""
    libc = _glibc()
    if libc is None:
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.arena / 2**30, info.uordblks / 2**30


def release_free_heap() -> bool:
    """glibc only: give the free pages inside the C heap back to the system (malloc_trim). Returns whether it could."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1


@dataclass
class HeapTrim:
    """Bounds a CPU run's resident memory. A step's activations vary in size with its texts' lengths, and glibc's
    heap reuses the memory they free so poorly that resident memory kept growing, all of it free memory (a LoRA run
    on XQuAD-R: 2.5 to 4.4 GB in 14 steps; the robust study's relational arm: 6.0 to 18.8 GB in 80; see
    docs/benchmarks.md). Called after every step: the first trims what came before the run, the second sets the
    bound (resident memory then, with a step's working set, plus `margin_gb`), and a later step above the bound
    trims, a few times a run (each costs a step's page faults again)."""

    margin_gb: float = 2.0
    bound: float | None = None
    steps: int = 0
    trims: int = 0

    def __call__(self) -> None:
        if _glibc() is None:
            return
        self.steps += 1
        if self.steps == 2:
            self.bound = resident_gb() + self.margin_gb
        elif self.steps == 1 or resident_gb() > self.bound:
            self.trims += release_free_heap()

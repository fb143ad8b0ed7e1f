"""glibc's heap in CPU training: one malloc arena, and free heap memory given back."""

import pytest
import torch

from hf_hybrid.training import heap


def test_threads_share_one_malloc_arena_on_glibc():
    import platform
    import subprocess
    import sys

    code = ("import threading\nfrom hf_hybrid.training.heap import one_malloc_arena\nprint(one_malloc_arena())\n"
            "def work():\n    for _ in range(2000): bytearray(300_000)\n"
            "threads = [threading.Thread(target=work) for _ in range(4)]\n[t.start() for t in threads]\n"
            "[t.join() for t in threads]\nprint(open('/proc/self/maps').read().count('---p'))")
    runs = [subprocess.run([sys.executable, "-c", code.replace("print(one_malloc_arena())", line)],
                           capture_output=True, text=True, check=True).stdout.split()
            for line in ("print(one_malloc_arena())", "print(False)")]
    if platform.libc_ver()[0] != "glibc":
        assert runs[0][0] == "False"
        return
    assert runs[0][0] == "True"
    assert int(runs[0][1]) < int(runs[1][1])  # the threads' own arenas (each with a reserved, unmapped tail) are gone


def test_the_heap_trim_gives_free_heap_memory_back_and_bounds_a_run(monkeypatch):
    if heap._glibc() is None:
        pytest.skip("glibc only")
    blocks, kept = [], []
    for i in range(1000):  # blocks of many sizes below glibc's mmap threshold, each with a small one kept after it
        blocks.append(torch.ones(20_000 + 7 * i))
        kept.append(torch.ones(64))
    size, used = heap.heap_gb()
    del blocks  # 90 MB free inside the heap, resident
    assert heap.heap_gb()[1] < used - 0.05 and size >= used
    before = heap.resident_gb()
    assert heap.release_free_heap() and heap.resident_gb() < before - 0.05
    resident = iter([1.0, 1.2, 1.6, 1.4])  # GB after steps 2-5
    monkeypatch.setattr(heap, "resident_gb", lambda: next(resident))
    trimmed = []
    monkeypatch.setattr(heap, "release_free_heap", lambda: trimmed.append(True) or True)
    trim = heap.HeapTrim(margin_gb=0.5)
    for _ in range(5):
        trim()
    assert trim.bound == 1.5 and trim.trims == 2 == len(trimmed)  # step 1, then step 4 above 1.0 + 0.5

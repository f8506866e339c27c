"""CPU threads for a command that computes (train, analyze, map, a sweep cell).

torch and the BLAS behind NumPy start one OpenMP thread per core by default. Their threads
spin-wait between parallel regions, so on a machine where anything else runs (a second run, an
analysis, a browser) each process's threads fight for the same cores: measured on a 2-core machine
(``benchmarks/bench_threads.py``; figures in the README), two runs side by side at two threads each
took 3.5x as long as the same runs at one thread each, and one run beside a busy process took 5x
as long at two threads. One thread alone loses only about a quarter against two on an idle
machine. So every command defaults to one thread per process, and ``--threads N`` (or
``train.threads``) asks for more; 0 keeps the libraries' own default (one per core, unless
``OMP_NUM_THREADS`` says otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits

DEFAULT_THREADS = 1


@contextmanager
def use_threads(n: int | None = DEFAULT_THREADS) -> Iterator[int]:
    """Run the body with ``n`` torch threads and at most ``n`` BLAS / OpenMP threads for NumPy
    and SciPy; ``n`` = 0 (or None) leaves both as they are. Restores torch's count afterwards."""
    if not n:
        yield torch.get_num_threads()
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        torch.set_num_threads(before)

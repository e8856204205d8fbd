"""The fitter's thread policy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def num_threads(n: int) -> Iterator[int]:
    """Run the block on `n` intra-op threads; yields the previous count and restores it on exit.

    The fitter's landmark stages run thousands of tiny ops: on 2 cores, intra-op threading only adds
    synchronisation (and stalls badly when the cores are busy), so a fit runs on one thread
    (``with num_threads(1) as n_all``) and gives the photometric stages, whose renders and images
    are large, the caller's `n_all` back (``with num_threads(n_all)``).
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield prev
    finally:
        torch.set_num_threads(prev)

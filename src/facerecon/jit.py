"""numba's `njit` and `prange` when numba is installed, else no-op stand-ins (one home for the fallback).

Without numba, ``@njit(...)``-decorated kernels run as plain Python (correct, but only usable for
tiny inputs) and ``prange`` is ``range``; callers check `HAVE_NUMBA` to pick a torch path instead.
"""

from __future__ import annotations

try:
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False
    prange = range

    def njit(*args, **kwargs):
        """No-op decorator usable bare (``@njit``) or with options (``@njit(cache=True)``)."""
        if args and callable(args[0]):
            return args[0]
        return lambda f: f


__all__ = ["HAVE_NUMBA", "njit", "prange"]

"""Read-only memory maps that hold no file descriptor.

``numpy.memmap`` (and astropy's memory-mapped FITS data) keep a duplicate of the file's
descriptor open for as long as the array lives: a collection of 1,100 memory-mapped images
hits the common ``ulimit -n 1024``.  POSIX lets a mapping outlive its descriptor, so here the
file is mapped with ``mmap(2)`` and closed at once; the mapping is released (``munmap``) when
the last array viewing it is garbage-collected.  Where libc's ``mmap`` cannot be reached
(Windows), ``numpy.memmap`` is used instead.

The arrays are read-only and cannot be made writeable (their buffer is a read-only
memoryview); the mapping is private, so nothing can ever reach the file through them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import weakref
from pathlib import Path

import numpy as np

__all__ = ["map_readonly"]


def _libc():
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int64)
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()
_MAP_FAILED = ctypes.c_void_p(-1).value


def map_readonly(path: Path, offset: int, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only array of ``shape`` and ``dtype`` at byte ``offset`` of the file ``path``.

    The caller has checked that the file holds the bytes.  No descriptor stays open.
    """
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    if count == 0:
        return _read_only(np.empty(shape, dtype))
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    length = offset - start + count * dtype.itemsize
    if _LIBC is None:
        return _read_only(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape))
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _LIBC.mmap(None, length, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, start)
    finally:
        os.close(fd)
    if address in (None, _MAP_FAILED):
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot map {str(path)!r} into memory: {os.strerror(errno)}")
    buffer = (ctypes.c_char * length).from_address(address)
    weakref.finalize(buffer, _LIBC.munmap, address, length)
    view = memoryview(buffer).toreadonly()
    return np.frombuffer(view, dtype=dtype, count=count, offset=offset - start).reshape(shape)


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view

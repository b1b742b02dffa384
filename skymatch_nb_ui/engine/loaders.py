"""Where an image's pixels come from: in-memory arrays, or loaders that read them on demand.

The engine needs an image's pixels only in stage 2 (statistics) and for ``subtract``; stage 1
needs its shape and WCS only.  So an image may be given as a *loader*: any object with a
``shape`` (ny, nx) and two methods, ``data()`` (the 2-D pixels) and ``mask()`` (a boolean
array, True = good, or None).  A statistics task calls them when it runs and drops the arrays
when it is done, so a mosaic larger than memory can be matched, and a loader that pickles
(paths travel, arrays do not) lets a task run in another process or on a Dask worker.

`ArrayImage` is the loader of arrays already in memory (what the engine makes of plain
arrays); `RecordLoader` reads through an image record that knows where its pixels are (the
form in which the collection's file loaders travel to worker processes: this module imports
nothing heavy).

Examples
--------
>>> import numpy as np
>>> image = ArrayImage(np.zeros((2, 3), np.float32))
>>> image.shape, image.data().dtype.name, image.mask() is None
((2, 3), 'float32', True)
>>> is_loader(image), is_loader(np.zeros((2, 3)))
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

__all__ = ["ArrayImage", "ImageLoader", "RecordLoader", "is_loader", "per_second", "record_pixels_key"]


@runtime_checkable
class ImageLoader(Protocol):
    """What the engine asks of an image given as a loader.

    A loader may also have a ``pixels_key``: a hashable value, the same in every process, that
    names the pixels and mask it reads (the file loaders' is the file and its HDUs).  A run
    then keeps an image's pixels for its next read of it when the image is large
    (`reads`); without one, every read calls ``data()`` and ``mask()``.
    """

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx), known without reading the pixels."""

    def data(self) -> np.ndarray:
        """The pixels: a 2-D array of real numbers of ``shape`` (never changed by the engine)."""

    def mask(self) -> np.ndarray | None:
        """True marks a good pixel; None: every pixel is good."""


@dataclass(frozen=True, eq=False)
class ArrayImage:
    """An image whose pixels (and mask) are already in memory.

    Parameters
    ----------
    pixels : 2-D ndarray
        The image, kept by reference (it may be memory-mapped).
    good : 2-D bool ndarray, optional
        True marks a good pixel (None: all good).
    """

    pixels: np.ndarray
    good: np.ndarray | None = None

    #: Reading costs nothing: the engine may split this image's statistics into many tasks.
    in_memory: ClassVar[bool] = True

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return tuple(self.pixels.shape)

    def data(self) -> np.ndarray:
        """The pixels."""
        return self.pixels

    def mask(self) -> np.ndarray | None:
        """The good-pixel mask, or None."""
        return self.good


@dataclass(frozen=True, eq=False)
class RecordLoader:
    """An image read through a record with ``shape``, ``data()`` and ``mask(dqbits)``.

    Parameters
    ----------
    record : object
        E.g. a `skymatch_nb_ui.io.FitsImage`: its path and HDUs (WCS and headers not needed).
    dqbits : int, str or None
        Passed to ``record.mask``.
    exptime : float, optional
        The pixels are divided by it (counts to count rates, `per_second`).
    """

    record: object
    dqbits: object = 0
    exptime: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return tuple(self.record.shape)

    def data(self) -> np.ndarray:
        """The pixels, read now."""
        return per_second(self.record.data(), self.exptime)

    def mask(self) -> np.ndarray | None:
        """The good-pixel mask, read now, or None."""
        return self.record.mask(self.dqbits)

    @property
    def pixels_key(self):
        """Which pixels and mask this loader reads, in any process (`reads`).

        None when the record does not say.
        """
        return record_pixels_key(self.record, self.dqbits, self.exptime)


def record_pixels_key(record, dqbits, exptime):
    """A record's ``pixels_key`` with the loader's DQ bits and exposure time (or None)."""
    key = getattr(record, "pixels_key", None)
    return None if key is None else (key, dqbits, exptime)


def per_second(pixels: np.ndarray, exptime: float | None) -> np.ndarray:
    """``pixels / exptime`` (a new array; float32 stays float32), or ``pixels`` without one.

    Examples
    --------
    >>> per_second(np.array([[10.0, 20.0]], np.float32), 4.0)
    array([[2.5, 5. ]], dtype=float32)
    """
    if exptime is None:
        return pixels
    single = pixels.dtype.kind == "f" and pixels.dtype.itemsize == 4
    return np.divide(pixels, exptime, dtype=np.float32 if single else np.float64)


def is_loader(obj: object) -> bool:
    """Whether ``obj`` is a loader rather than an array (an array's ``data`` is no method)."""
    return (
        not isinstance(obj, np.ndarray)
        and callable(getattr(obj, "data", None))
        and callable(getattr(obj, "mask", None))
    )

"""Validation at the boundary: one rule and one message per kind of input.

Every public entry point (`skymatch`, `SkyMatcher`, `SkyMatchParams`, `StatParams`) checks its
inputs here, so that a bad value fails early with a message that names the parameter, the
rule, the value received and, where there is one, the way out.  Inside the engine the inputs
are trusted.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Iterable, Sequence

import numpy as np

from .frames import in_one_frame
from .geometry import CelestialWCS
from .loaders import ArrayImage, ImageLoader, is_loader

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # skymatch_nb_ui/


def caller_stacklevel() -> int:
    """The ``stacklevel`` for a warning of the calling function: the first line outside us.

    That is the user's call, however deep in the package it was made (`skymatch`,
    `SkyMatcher.run`, a collection's or a widget's solve).

    Examples
    --------
    >>> import warnings
    >>> warnings.warn("...", UserWarning, stacklevel=caller_stacklevel())  # doctest: +SKIP
    """
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE + os.sep):  # (a file's name is relative where its sys.path entry was)
        frame, level = frame.f_back, level + 1
    return level


# -- scalar parameters --------------------------------------------------------------------------
def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` as one of ``choices`` (case-insensitive; returned lower-case)."""
    options = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {options}; got {value!r}")
    if value.lower() not in choices:
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value.lower()


def check_bool(name: str, value: object) -> bool:
    """``value`` as a bool (numpy bools too; not 0/1 or strings)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def check_int(name: str, value: object, rule: str, *, minimum: int | None = None) -> int:
    """``value`` as an int (numpy integers too, not bools), at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {rule}; got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {rule}; got {value!r}")
    return int(value)


def check_float(
    name: str, value: object, rule: str, *, minimum: float | None = None, exclusive: bool = False
) -> float:
    """``value`` as a finite float above ``minimum`` (``exclusive``: strictly above)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {rule}; got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # e.g. 10**400: an int beyond the float64 range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{name} must be {rule}; got {_shown(value)} (not a finite float64)")
    if minimum is not None and (number <= minimum if exclusive else number < minimum):
        raise ValueError(f"{name} must be {rule}; got {_shown(value)}")
    return number


def _shown(value: object) -> str:
    """``repr(value)``, shortened in the middle when long (10**400 has 401 digits)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:12]}...{text[-6:]} ({len(text)} characters)"


def check_names(given: Iterable[str], valid: Sequence[str], *, what: str) -> None:
    """Raise TypeError for names not in ``valid``, suggesting the closest valid one."""
    unknown = [name for name in given if name not in valid]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), valid, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(
        f"unknown {what} {', '.join(hints)}; the valid names are {', '.join(valid)}"
    )


def few_of(values: Sequence[object], limit: int = 8) -> str:
    """``repr``-like text of a list, its first ``limit`` items and how many when longer.

    Examples
    --------
    >>> few_of(["x", "y"]), few_of(list(range(20)), 3)
    ("['x', 'y']", '[0, 1, 2, ...] (20 items)')
    """
    values = list(values)
    if len(values) <= limit:
        return repr(values)
    return f"[{', '.join(map(repr, values[:limit]))}, ...] ({len(values)} items)"


def and_more(items: Sequence[object], limit: int = 3) -> str:
    """``a, b, c`` or, past ``limit`` items, the first ones ``and N more`` (for messages).

    Examples
    --------
    >>> and_more(["a.fits", "b.fits"]), and_more([f"f{k}" for k in range(1500)])
    ('a.fits, b.fits', 'f0, f1, f2 and 1,497 more')
    """
    items = [str(item) for item in items]
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit:,} more"


def some_names(names: Sequence[str], wanted: Iterable[object] = (), *, limit: int = 8) -> str:
    """The images' names for an error message, never all of 10,000.

    The closest name to each of ``wanted`` first ("did you mean"), then the first ``limit``
    names and how many there are.

    Examples
    --------
    >>> names = [f"jw_{k:05d}_cal" for k in range(10000)]
    >>> some_names(names, ["jw_00042_cal.fits"], limit=2)  # a file name for an image name
    "did you mean 'jw_00042_cal'? the images are ['jw_00000_cal', 'jw_00001_cal', ...] (10000 images)"
    >>> some_names(["a", "b"])
    "the images are ['a', 'b']"
    """
    names = [str(n) for n in names]
    close = []
    for name in wanted:
        for match in difflib.get_close_matches(str(name), names, n=1):
            if match not in close:
                close.append(match)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    if len(names) <= limit:
        return f"{hint}the images are {names!r}"
    return f"{hint}the images are [{', '.join(map(repr, names[:limit]))}, ...] ({len(names)} images)"


def check_workers(workers: object) -> int:
    """Threads for the statistics: None -> one per CPU core, at most 4."""
    if workers is None:
        return max(1, min(os.cpu_count() or 1, 4))
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ValueError(f"workers must be None or a positive integer (threads); got {workers!r}")
    return int(workers)


# -- the data ----------------------------------------------------------------------------------
def check_images(images: object, masks: object = None) -> list[ImageLoader]:
    """One loader per image: arrays (checked now, with their masks) or loaders (checked on load).

    Arrays are wrapped, by reference, in `ArrayImage`; a loader's mask comes from the loader,
    so its entry in ``masks`` must be None.
    """
    if isinstance(images, np.ndarray) and images.ndim == 2:
        raise TypeError(
            "images must be a sequence of 2-D arrays (one per image); got a single 2-D array. "
            "Wrap it in a list: [image]"
        )
    try:
        images = list(images)
    except TypeError:
        raise TypeError(f"images must be a sequence of 2-D arrays; got {type(images).__name__}") from None
    if not images:
        raise ValueError("images must contain at least one 2-D array; got an empty sequence")
    masks = _mask_list(masks, len(images))
    loaders: list[ImageLoader] = []
    for k, (image, mask) in enumerate(zip(images, masks)):
        if is_loader(image) and mask is not None:
            raise ValueError(
                f"masks[{k}] must be None: images[{k}] is a loader ({image!r}), whose "
                "mask() gives its mask"
            )
        if isinstance(image, ArrayImage):  # in memory: checked now, trusted later
            image, mask = image.pixels, image.good
        elif is_loader(image):
            loaders.append(_checked_loader(image, k))
            continue
        data = _checked_array(image, f"images[{k}]")
        loaders.append(ArrayImage(*split_masked(data, _checked_mask(mask, data.shape, k))))
    return loaders


def split_masked(data: np.ndarray, good: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A `numpy.ma.MaskedArray`'s data, with its masked pixels made bad in the mask ``good``.

    numpy's mask marks *bad* values, ours (``good``) marks good ones: a pixel is good when it
    is good in both.  Plain arrays pass through unchanged.

    Examples
    --------
    >>> data, good = split_masked(np.ma.masked_greater([[1.0, 5.0, 2.0]], 4), None)
    >>> type(data).__name__, good.tolist()
    ('ndarray', [[True, False, True]])
    """
    if not isinstance(data, np.ma.MaskedArray):
        return data, good
    bad = np.ma.getmask(data)
    data = np.ma.getdata(data)
    if bad is np.ma.nomask or not bad.any():
        return data, good
    combined = ~np.broadcast_to(bad, data.shape)
    if good is not None:
        combined &= good
    return data, combined


def check_pixels(data: object, mask: object, shape: tuple[int, int], source: object):
    """What a loader returned: a real 2-D array of its shape and a bool mask (or None).

    A `numpy.ma.MaskedArray` of pixels is split: its mask joins the loader's (`split_masked`).
    """
    data = _checked_array(data, f"the pixels of {source!r}")
    if data.shape != shape:
        raise ValueError(f"{source!r} promised shape {shape} but its pixels have shape {data.shape}")
    if mask is not None:
        mask = np.asanyarray(mask)
        if mask.dtype != bool or mask.shape != shape:
            raise ValueError(
                f"the mask of {source!r} must be a boolean array of shape {shape}; got "
                f"dtype {mask.dtype}, shape {mask.shape}"
            )
    return split_masked(data, mask)


def check_wcs(wcs: object, n: int) -> list[CelestialWCS]:
    """One usable celestial WCS per image, all expressed in one celestial frame.

    WCS in different frames (e.g. ICRS and FK4 B1950, or galactic) are converted to ICRS
    (`frames.in_one_frame`).  A FITS WCS with an undefined reference point (NaN CRVAL or
    CRPIX) or a singular pixel-to-sky matrix is refused here, naming it.
    """
    if wcs is None or (not isinstance(wcs, Sequence) and not isinstance(wcs, np.ndarray)):
        raise TypeError(
            f"wcs must be a sequence with one celestial WCS per image; got {type(wcs).__name__}"
        )
    if len(wcs) != n:
        raise ValueError(f"wcs must have one entry per image: got {len(wcs)} WCS for {n} images")
    adapters = [CelestialWCS(w, name=f"wcs[{k}]") for k, w in enumerate(wcs)]
    for k, w in enumerate(wcs):
        _check_fits_wcs(w, f"wcs[{k}]")
    return in_one_frame(adapters)


#: What wcslib returns for a coordinate it cannot compute (e.g. from a NaN CRVAL).
WCSLIB_UNDEFINED = 9.87654321e107


def _check_fits_wcs(wcs: object, name: str) -> None:
    """Refuse an `astropy.wcs.WCS` whose reference point is undefined or whose matrix is singular.

    Either would otherwise pass: wcslib maps a NaN CRVAL to its "undefined" value
    9.87654321e+107 (a finite number), and a singular CD matrix maps the image onto a line.
    """
    if not type(wcs).__module__.startswith("astropy.wcs"):
        return
    from astropy.wcs import WCS

    if not isinstance(wcs, WCS):  # e.g. a SlicedLowLevelWCS: checked through its footprint
        return
    inner = getattr(wcs, "wcs", None)
    for key, values in (("CRVAL", getattr(inner, "crval", None)), ("CRPIX", getattr(inner, "crpix", None))):
        values = np.asarray(values, float) if values is not None else np.zeros(0)
        if not np.all(np.isfinite(values) & (np.abs(values) < 0.5 * WCSLIB_UNDEFINED)):
            raise ValueError(
                f"{name} has an undefined reference point: {key} = {values.tolist()} "
                f"({key}1/{key}2 must be finite numbers). Fix the header (or the WCS) of that "
                "image."
            )
    try:
        matrix = np.asarray(wcs.pixel_scale_matrix, float)
    except Exception as exc:  # wcslib's SingularMatrixError and kin
        raise ValueError(
            f"{name} cannot map pixels to the sky: {' '.join(str(exc).split())}. Fix its "
            "CDi_j (or PCi_j and CDELTi) keywords."
        ) from None
    scale = float(np.abs(matrix).max()) if matrix.size and np.all(np.isfinite(matrix)) else 0.0
    det = abs(float(np.linalg.det(matrix))) if scale > 0 else 0.0
    if not scale > 0 or det <= 1e-12 * scale**2:
        raise ValueError(
            f"{name} is singular: its pixel-to-sky matrix (CD, or PC times CDELT) "
            f"{np.round(matrix, 12).tolist()} has determinant {det:.3g} (zero to rounding), so it maps "
            "the image onto a line or a point and sky positions cannot be mapped back to pixels. Fix its "
            "CDi_j (or PCi_j and CDELTi) keywords."
        )


def _mask_list(masks: object, n: int) -> list:
    if masks is None:
        return [None] * n
    masks = list(masks)
    if len(masks) != n:
        raise ValueError(
            f"masks must have one entry per image (or be None): got {len(masks)} masks for "
            f"{n} images"
        )
    return masks


def _checked_array(image: object, name: str) -> np.ndarray:
    arr = image if isinstance(image, np.ndarray) else np.asanyarray(image)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers (float or integer); got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    _check_exact_in_float64(arr, name)
    return arr


def _check_exact_in_float64(arr: np.ndarray, name: str) -> None:
    """Refuse 64-bit integers that float64 cannot hold exactly (beyond +-2**53).

    The statistics are computed in float64: values near 2**63 would be rounded to multiples
    of 2048, and sky offsets smaller than that would silently vanish.
    """
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize < 8:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < -(2**53) or hi > 2**53:
        raise ValueError(
            f"{name} holds {arr.dtype} values from {lo} to {hi}, beyond +-2**53 "
            f"(9.007e15), where float64 (the precision of the statistics) cannot represent "
            "every integer: skies would be rounded by up to "
            f"{2.0 ** (max(abs(lo), abs(hi)).bit_length() - 54):g}. Subtract a common offset "
            "from every image first (e.g. (image - np.uint64(2**63)).view(np.int64) for uint64 "
            "data centred on 2**63), or convert to float64 if that rounding is acceptable"
        )


def _checked_mask(mask: object, shape: tuple[int, int], k: int) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asanyarray(mask)
    if mask.dtype != bool:
        raise TypeError(
            f"masks[{k}] must be a boolean array (True = good pixel); got dtype {mask.dtype}. "
            "For a data-quality array use astropy.nddata.bitfield_to_boolean_mask(dq, "
            "good_mask_value=True)"
        )
    if mask.shape != shape:
        raise ValueError(f"masks[{k}] must have the shape of images[{k}] {shape}; got {mask.shape}")
    return mask


def _checked_loader(loader: ImageLoader, k: int) -> ImageLoader:
    shape = getattr(loader, "shape", None)
    ok = (
        isinstance(shape, tuple)
        and len(shape) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in shape)
    )
    if not ok:
        raise ValueError(
            f"images[{k}] is a loader ({loader!r}) and must have a shape of two positive "
            f"integers (ny, nx); got {shape!r}"
        )
    return loader

"""The reference engine, ``stcal.skymatch``, run on the inputs of `skymatch`: a test oracle.

The parameters are those of `skymatch_nb_ui.SkyMatchParams` (validated by it); the images are
grouped into inputs exactly as the engine groups them (`engine.groups.group_inputs`), so the
two engines always see the same inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from contextlib import contextmanager

import numpy as np

from ..engine.groups import group_inputs
from ..engine.params import SkyMatchParams

__all__ = ["reference_skymatch"]

#: Our names of the statistics parameters that the reference spells differently.
_REFERENCE_NAMES = {"lsigma": "lsig", "usigma": "usig"}


def reference_skymatch(
    images: Sequence[np.ndarray],
    wcs: Sequence,
    *,
    masks: Sequence[np.ndarray] | None = None,
    groups: Sequence[Hashable] | None = None,
    **params,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the reference engine, ``stcal.skymatch``, on the inputs of `skymatch`.

    A test oracle: it builds the reference's ``SkyImage`` / ``SkyGroup`` / ``SkyStats``
    objects from arrays and WCSs, runs ``stcal.skymatch.skymatch`` without subtraction and
    collects the sky of every image.  The caller's arrays are never changed (stcal sees
    read-only views).  stcal's INFO logging is silenced; its warnings are kept.

    Parameters
    ----------
    images : sequence of 2-D ndarray
        The images.
    wcs : sequence
        One WCS per image: `astropy.wcs.WCS` (through ``all_pix2world`` /
        ``all_world2pix``) or ``gwcs.WCS`` (called, and ``invert``).
    masks : sequence of 2-D bool ndarray, optional
        True marks a good pixel (None: all good).
    groups : sequence of hashable, optional
        One label per image; images with the same label form one reference ``SkyGroup``
        (one sky).  None (or a None label): the image alone, as in `skymatch`.
    **params
        The parameters of `skymatch_nb_ui.SkyMatchParams` (``skymethod``, ``match_down``,
        ``skystat``, ``lower``, ``upper``, ``nclip``, ``lsigma``, ``usigma``, ``binwidth``,
        ``stepsize``), with their defaults.  ``lsigma`` / ``usigma`` are the reference's
        ``lsig`` / ``usig``.  The reference has no ``anchor`` (it is always ``'global'``)
        and this adapter never subtracts.  ``compare`` and ``robust`` are accepted and
        ignored: the reference always compares the levels of the two sides of each overlap
        (``compare="levels"``) and solves by plain least squares.

    Returns
    -------
    sky : ndarray of float64
        The reference's sky of each image; NaN where it could not determine one (the
        reference itself reports 0 there).
    valid : ndarray of bool
        The reference's ``is_sky_valid`` of each image.

    Raises
    ------
    ImportError
        When stcal is not installed.
    TypeError, ValueError
        For a bad parameter (as `SkyMatchParams`), ``anchor='component'``, ``subtract=True``,
        or inputs of mismatched lengths or shapes.

    Notes
    -----
    The reference's own defects (see ``REFERENCE.md``) are reproduced, not corrected: e.g.
    ``skymethod="global"`` raises TypeError when an image has no valid pixels.

    Examples
    --------
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
    >>> sky, valid = reference_skymatch(m.images, m.wcs, skymethod="match", skystat="mean")
    >>> sky.round(6).tolist(), bool(valid.all())
    ([0.0, 20.0, 5.0, 10.0, 5.0, 15.0], True)
    """
    try:
        from stcal.skymatch import SkyGroup, SkyImage, SkyStats
        from stcal.skymatch import skymatch as stcal_skymatch
    except ImportError as error:
        raise ImportError(
            "reference_skymatch runs the reference engine stcal.skymatch, a test-only "
            "dependency: pip install skymatch-nb-ui[test]"
        ) from error

    p = SkyMatchParams(**params)
    if p.anchor != "global":
        raise ValueError(
            f"the reference anchors the whole mosaic at once: anchor must be 'global'; got {p.anchor!r}"
        )
    if p.subtract:
        raise ValueError("reference_skymatch never subtracts: leave subtract=False")
    n = len(images)
    _same_length("wcs", wcs, n)
    if masks is not None:
        _same_length("masks", masks, n)
    grouping = group_inputs(groups, n)

    stats = SkyStats(**{_REFERENCE_NAMES.get(k, k): v for k, v in p.stat.as_dict().items()})
    with _quiet_info("stcal.skymatch"):
        sky_images = []
        for k in range(n):
            data, mask = _reference_pixels(images[k], None if masks is None else masks[k], k)
            fwd, inv = _reference_transforms(wcs[k], k)
            sky_images.append(
                SkyImage(data, mask, fwd, inv, skystat=stats, sky_id=k, stepsize=p.stepsize)
            )
        inputs = [
            sky_images[members[0]] if len(members) == 1
            else SkyGroup([sky_images[k] for k in members], sky_id=label)
            for label, members in zip(grouping.labels, grouping.members)
        ]
        stcal_skymatch(inputs, skymethod=p.skymethod, match_down=p.match_down, subtract=False)

    valid = np.array([im.is_sky_valid for im in sky_images], dtype=bool)
    sky = np.array([im.sky for im in sky_images], dtype=np.float64)
    sky[~valid] = np.nan
    return sky, valid


def _same_length(name: str, values, n: int) -> None:
    if len(values) != n:
        raise ValueError(f"{name} must have one entry per image ({n}); got {len(values)}")


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _reference_pixels(image, mask, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only views of image k and its boolean mask (all good when None)."""
    data = np.asarray(image)
    if data.ndim != 2:
        raise ValueError(f"images[{k}] must be a 2-D array; got shape {data.shape}")
    if mask is None:
        return _read_only(data), np.ones(data.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != data.shape:
        raise ValueError(
            f"masks[{k}] must have the shape of images[{k}] {data.shape}; got {mask.shape}"
        )
    return _read_only(data), _read_only(mask)


def _reference_transforms(w, k: int):
    """The reference's ``wcs_fwd`` / ``wcs_inv`` callables (0-based pixels, degrees)."""
    if hasattr(w, "all_pix2world"):

        def fwd(x, y, with_bounding_box=False):
            return w.all_pix2world(x, y, 0)

        def inv(ra, dec, with_bounding_box=False):
            return w.all_world2pix(ra, dec, 0)

    elif callable(w) and hasattr(w, "invert"):

        def fwd(x, y, with_bounding_box=False):
            return w(x, y, with_bounding_box=with_bounding_box)

        def inv(ra, dec, with_bounding_box=False):
            return w.invert(ra, dec, with_bounding_box=with_bounding_box)

    else:
        raise TypeError(
            f"wcs[{k}] must be an astropy.wcs.WCS or a gwcs.WCS; got {type(w).__name__}"
        )
    return fwd, inv


@contextmanager
def _quiet_info(logger_name: str):
    """Raise a logger's level to WARNING for the duration of the block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)

"""JWST level-2 images (``*_cal.fits``) as the JWST pipeline reads and writes them.

- **WCS**: the exact ``gwcs`` stored in the file's ASDF extension, read with ``stdatamodels``
  (``pip install skymatch-nb-ui[jwst]``).  Without ``stdatamodels`` the header's SIP
  approximation is used, with an `ApproximateWCSWarning`.
- **Exposure** (``group_id``), as the pipeline's ``ModelLibrary`` derives it: the
  association member's ``group_id``; else ``meta.group_id`` of the file; else
  ``jw<PROGRAM><OBSERVTN><VISIT>_<VISITGRP><SEQ_ID><ACT_ID>_<EXPOSURE>`` from the primary
  header; else none (the image is alone).  All detectors of one exposure share it.
- **DQ**: the skymatch step's default ``dqbits`` is ``"~DO_NOT_USE+NON_SCIENCE"``.
- **Results**, as the JWST ``SkyMatchStep`` records them so that ``outlier_detection`` and
  ``resample`` use them: ``meta.background.level``, ``.subtracted``, ``.method`` (FITS
  keywords ``BKGLEVEL``, ``BKGSUB``, ``BKGMETH`` in the primary header) and
  ``meta.cal_step.skymatch`` (``S_SKYMAT``: ``COMPLETE``, or ``SKIPPED`` without a valid
  sky).  With ``stdatamodels`` the copy is the model saved by ``stdatamodels`` itself.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..engine._validate import and_more
from ..engine.exceptions import SkyMatchWarning
from ..engine.packed import collector_paused, packed_or_copy
from ..engine.packed import is_gwcs as _is_gwcs

__all__ = [
    "DEFAULT_DQBITS",
    "GROUP_ID_KEYWORDS",
    "ApproximateWCSWarning",
    "adapt",
    "group_id_from_header",
    "have_datamodels",
    "write_copy",
]

#: The JWST skymatch step's default: only DO_NOT_USE and NON_SCIENCE pixels are bad.
DEFAULT_DQBITS = "~DO_NOT_USE+NON_SCIENCE"

#: Primary-header keywords of ``meta.observation`` that make up the pipeline's group_id.
GROUP_ID_KEYWORDS = ("PROGRAM", "OBSERVTN", "VISIT", "VISITGRP", "SEQ_ID", "ACT_ID", "EXPOSURE")

INSTALL_HINT = "pip install skymatch-nb-ui[jwst]"


class ApproximateWCSWarning(SkyMatchWarning):
    """A file's exact WCS could not be read; an approximation of it is used instead."""


def have_datamodels() -> bool:
    """Whether ``stdatamodels`` (the JWST data models) can be imported."""
    try:
        import stdatamodels.asdf_in_fits  # noqa: F401
    except ImportError:
        return False
    return True


def adapt(images: list, hdul) -> list:
    """The image of a JWST file with its exact gwcs (when it can be read) and group_id."""
    tree_meta = _asdf_meta(hdul) if have_datamodels() else None
    wcs = None if tree_meta is None else tree_meta.get("wcs")
    group_id = (tree_meta or {}).get("group_id") or group_id_from_header(hdul[0].header)
    adapted = []
    for image in images:
        exact = wcs is not None and hdul[image.ext].header.get("EXTNAME") == "SCI"
        if exact:
            _check_imaging(wcs, image.path)
        adapted.append(replace(
            image, kind="jwst", wcs=wcs if exact else image.wcs,
            exposure_id=str(group_id) if group_id else None,
        ))
    return adapted


def _asdf_meta(hdul) -> dict | None:
    """``meta`` of the file's ASDF extension (its gwcs fully loaded), None without one."""
    if "ASDF" not in hdul:
        return None
    from astropy.io import fits
    from stdatamodels import asdf_in_fits

    # stdatamodels attaches the file's arrays to the tree: unscaled memory maps cost nothing
    with fits.open(hdul.filename(), mode="denywrite", memmap=True, lazy_load_hdus=True,
                   do_not_scale_image_data=True) as raw, collector_paused(), \
            asdf_in_fits.open(raw) as af:
        meta = af.tree.get("meta", {})
        return {"wcs": packed_or_copy(meta.get("wcs")), "group_id": meta.get("group_id")}


def _check_imaging(wcs, path: Path) -> None:
    from ..engine.geometry import CelestialWCS

    try:
        CelestialWCS(wcs, name=f"the gwcs of {str(path)!r}")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{error} (is it an imaging exposure?)") from None


def group_id_from_header(primary_header) -> str | None:
    """The pipeline's group_id from the ``meta.observation`` keywords; None if one is missing.

    Examples
    --------
    >>> from astropy.io import fits
    >>> header = fits.Header(dict(PROGRAM="01234", OBSERVTN="001", VISIT="001",
    ...                           VISITGRP="02", SEQ_ID="1", ACT_ID="01", EXPOSURE="00001"))
    >>> group_id_from_header(header)
    'jw01234001001_02101_00001'
    """
    values = [primary_header.get(key) for key in GROUP_ID_KEYWORDS]
    if any(value is None or str(value).strip() == "" for value in values):
        return None
    program, observation, visit, visit_group, sequence, activity, exposure = (
        str(value).strip() for value in values
    )
    return f"jw{program}{observation}{visit}_{visit_group}{sequence}{activity}_{exposure}"


def approximate(images: list) -> list:
    """The JWST images whose WCS is not the file's gwcs (the header's SIP approximation)."""
    return [image for image in images if image.kind == "jwst" and not _is_gwcs(image.wcs)]


def approximation_warning(images: list) -> str:
    """The message of `ApproximateWCSWarning` for these images."""
    names = and_more([image.path.name for image in images])
    reason = (f"stdatamodels is not installed ({INSTALL_HINT})" if not have_datamodels()
              else "the files have no ASDF extension")
    return (
        f"the exact gwcs of {len(images)} JWST image(s) ({names}) could not be read "
        f"because {reason}: their header's SIP approximation is used instead (usually good "
        "to a fraction of a pixel)"
    )


def previously_subtracted(image) -> bool:
    """Whether the file says its background was already subtracted (BKGSUB = T)."""
    return bool(image.primary_header.get("BKGSUB", False))


def write_copy(image, dest, *, sky: float, valid: bool, method: str, subtract: bool,
               overwrite: bool = False, plane=None) -> Path:
    """Write a copy of a JWST file through ``stdatamodels``, as the JWST SkyMatchStep leaves it.

    The model is opened from the source file, given ``meta.background`` (``level``,
    ``subtracted``, ``method``) and ``meta.cal_step.skymatch`` (``COMPLETE``; ``SKIPPED``,
    with ``meta.background`` untouched, when the sky is not valid), its data optionally
    sky-subtracted, and saved by ``stdatamodels`` (which also writes the FITS keywords
    ``BKGLEVEL``, ``BKGSUB``, ``BKGMETH``, ``S_SKYMAT``).  When the source's background was
    already subtracted, ``level`` is the total: the earlier level plus this sky.  Atomic and
    refusing to overwrite, as `skymatch_nb_ui.io.write_fits_file`.

    With ``plane`` (the sky plane's slope_x, slope_y per pixel; ``sky`` its level at the
    image's centre) the plane is subtracted, ``level`` is the plane's value at the centre,
    ``method`` says ``"<method>+plane"`` (the schema allows any string) and the primary
    header gets the plane keywords of `skymatch_nb_ui.io.PLANE_COMMENTS`.

    Raises
    ------
    ValueError
        When the source's background was already subtracted and ``subtract`` is False (its
        ``level`` could not describe the data), or ``dest`` is the source.

    Examples
    --------
    >>> write_copy(image, "out/jw01234001001_02101_00001_nrcb1_cal.fits", sky=0.31,
    ...            valid=True, method="match", subtract=True)  # doctest: +SKIP
    """
    from stdatamodels.jwst import datamodels

    from ._fits import _same_file, atomic_path, output_stream, plane_method, sky_array

    dest = Path(dest)
    if _same_file(image.path, dest):
        raise ValueError(f"refusing to write over the source file {str(image.path)!r}; "
                         "choose another destination (e.g. another directory)")
    check_copy(image, subtract)
    with datamodels.open(image.path) as model:
        if valid:
            background = model.meta.background
            earlier = float(background.level or 0.0) if background.subtracted else 0.0
            background.level = earlier + float(sky)
            background.subtracted = bool(subtract or background.subtracted)
            background.method = plane_method(method, plane)
            if subtract:
                model.data = (model.data - sky_array(sky, plane, model.data.shape, model.data.dtype)
                              ).astype(model.data.dtype)
            model.meta.cal_step.skymatch = "COMPLETE"
        else:
            model.meta.cal_step.skymatch = "SKIPPED"
        model.meta.filename = dest.name
        if plane is None:
            with atomic_path(dest, overwrite=overwrite) as tmp, output_stream(tmp, dest) as stream:
                model.to_fits(stream)  # to a stream: the model keeps the file name set above
        else:
            _save_with_plane(model, dest, plane, valid, overwrite)
    return dest


def check_copy(image, subtract: bool) -> None:
    """Refuse, before anything is written, a copy whose background record would be wrong."""
    if previously_subtracted(image) and not subtract:
        raise ValueError(
            f"{str(image.path)!r} already has its background subtracted (BKGSUB = T, "
            f"BKGLEVEL = {image.primary_header.get('BKGLEVEL')}); write it with subtract=True "
            "(the levels add up) or start from the file before that subtraction"
        )


def _save_with_plane(model, dest, plane, valid: bool, overwrite: bool) -> None:
    """Save ``model`` with the plane keywords added to its primary header (no schema has them)."""
    import io as _io

    from astropy.io import fits

    from ._fits import atomic_path, set_plane_keywords, write_hdus

    buffer = _io.BytesIO()
    model.to_fits(buffer)
    buffer.seek(0)
    with fits.open(buffer) as hdul:
        set_plane_keywords(hdul[0].header, plane, model.data.shape, valid)
        with atomic_path(dest, overwrite=overwrite) as tmp:
            write_hdus(hdul, tmp, dest)

"""HST files (``*_flt.fits``, ``*_flc.fits``): one image per chip, one exposure per file.

ACS/WFC and WFC3/UVIS files hold two chips (``SCI,1`` and ``SCI,2``, each with its ERR and
DQ).  Their WCS is SIP plus lookup-table corrections stored in extra extensions (``D2IMARR``
for the detector-to-image correction, ``WCSDVARR`` for the non-polynomial distortion,
``CPDIS``/``DP`` keywords): `astropy.wcs.WCS` reads them when given the file, which
`open_fits_images` does for every chip.

AstroDrizzle computes one sky per exposure (all chips together) and records it as
``MDRIZSKY`` in each SCI header; drizzling subtracts that value from the chip's data.  The
chips of one file therefore share one exposure identifier (the file's ROOTNAME), which the
``"exposure"`` grouping (the default for HST) uses, and copies get ``MDRIZSKY``.

AstroDrizzle also uses the sky for its noise model: cosmic-ray rejection (``driz_cr``) and
the median add the sky it believes subtracted back into each pixel's Poisson noise.  To
drizzle with the skies found here, turn its own sky step off and name the keyword:

- copies that keep their sky (``subtract=False``): ``skysub=False, skyuser="MDRIZSKY"``;
  AstroDrizzle subtracts ``MDRIZSKY`` and counts its noise.  With ``skysub=False`` alone it
  subtracts nothing: the sky stays in the drizzled image.
- subtracted copies (``MDRIZSKY = 0``, the sky in ``BKGLEVEL``): ``skysub=False,
  skyuser="BKGLEVEL"``; AstroDrizzle subtracts nothing more, counts the sky's noise and
  records it as ``MDRIZSKY``.  Without ``skyuser`` it takes their sky for 0, and its
  cosmic-ray rejection sees too little noise on the sky.

(drizzlepac 3.11: ``bench/study_drizzlepac_sky.py`` drizzles each such copy and shows what
is left of the sky.)
"""

from __future__ import annotations

from dataclasses import replace

__all__ = ["MDRIZSKY_COMMENT", "adapt", "set_drizzle_sky"]

MDRIZSKY_COMMENT = "Sky value left for drizzling to subtract"


def adapt(images: list, hdul) -> list:
    """The chips of one HST file, marked ``kind="hst"`` with the file's exposure (ROOTNAME)."""
    rootname = str(hdul[0].header.get("ROOTNAME", "") or "").strip()
    if not rootname:
        rootname = images[0].path.name.split("_")[0] if images else ""
    return [replace(image, kind="hst", exposure_id=rootname or None) for image in images]


def set_drizzle_sky(header, *, sky: float, valid: bool, subtracted: bool) -> None:
    """Record in a chip's header the sky drizzling is still to subtract (``MDRIZSKY``).

    Drizzling subtracts ``MDRIZSKY`` from the chip's data, so it is the sky when the data
    still hold it and 0 once it has been subtracted from them.  An invalid sky leaves the
    keyword as it was.
    """
    if valid:
        header["MDRIZSKY"] = (0.0 if subtracted else float(sky), MDRIZSKY_COMMENT)

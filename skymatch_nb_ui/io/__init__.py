"""Images from files, and copies of those files with the sky recorded and subtracted.

Input kinds (`open_images` tells them apart by their first bytes):

- **FITS** files: every science extension (``SCI``, each ``EXTVER``) is an image; without
  ``SCI``, every 2-D image with a celestial WCS that looks elsewhere than those before it (a
  mosaic camera's CCDs; its companions, a mask or a preview on the same sky, are not).  WCS
  from the header with every distortion astropy reads (SIP, TPV, lookup tables).
- **JWST** level-2 ``*_cal.fits`` (`jwst`): the exact gwcs of the ASDF extension (with
  ``stdatamodels``: ``pip install skymatch-nb-ui[jwst]``), kept packed (`PackedWCS`: ~14 KB a
  detector instead of ~380 KB of objects), the pipeline's ``group_id``, the step's DQ
  default; copies written as the JWST SkyMatchStep leaves its models.
- **HST** ``*_flt.fits`` / ``*_flc.fits`` (`hst`): both chips, lookup-table distortions,
  one exposure per file; copies get ``MDRIZSKY`` in every chip.
- **Roman** level-2 ASDF files (`roman`, with ``roman_datamodels``: ``pip install
  skymatch-nb-ui[roman]``); copies written as romancal's skymatch leaves its models.
- **Associations** ``*_asn.json`` (JWST or Roman): their science members, with the
  members' ``group_id``.

Pixels are read lazily, per call, and no file stays open between calls.  Every file is
written atomically through a recognisable temporary name (``.tmp-skymatch-...``) that
`remove_leftovers` can clear after a killed run.
"""

from ..engine.packed import PackedWCS
from . import hst, jwst, roman
from ._fits import (
    BKG_COMMENTS,
    COUNT_UNITS,
    JWST_DQ_FLAGS,
    PLANE_COMMENTS,
    ROMAN_DQ_FLAGS,
    FitsImage,
    MixedUnitsWarning,
    atomic_path,
    check_dqbits,
    check_masks,
    check_pixel_areas,
    check_rates,
    check_units,
    copy_destinations,
    count_rates,
    find_fits,
    open_fits_image,
    open_fits_images,
    parse_dqbits,
    with_mask_files,
    write_array_fits,
    write_fits_copy,
    write_fits_file,
)
from ._open import (
    READ_FORK_FROM,
    READ_POOL_FROM,
    check_copy,
    input_kind,
    open_images,
    read_association,
    write_copy,
    written_by_library,
)
from ._temp import probe_writable, remove_leftovers
from .jwst import ApproximateWCSWarning
from .roman import RomanImage, open_roman_image

__all__ = [
    "BKG_COMMENTS",
    "COUNT_UNITS",
    "JWST_DQ_FLAGS",
    "PLANE_COMMENTS",
    "READ_FORK_FROM",
    "READ_POOL_FROM",
    "ROMAN_DQ_FLAGS",
    "ApproximateWCSWarning",
    "FitsImage",
    "MixedUnitsWarning",
    "PackedWCS",
    "RomanImage",
    "atomic_path",
    "check_copy",
    "check_dqbits",
    "check_masks",
    "check_pixel_areas",
    "check_rates",
    "check_units",
    "copy_destinations",
    "count_rates",
    "find_fits",
    "hst",
    "input_kind",
    "jwst",
    "open_fits_image",
    "open_fits_images",
    "open_images",
    "open_roman_image",
    "parse_dqbits",
    "probe_writable",
    "read_association",
    "remove_leftovers",
    "roman",
    "with_mask_files",
    "write_array_fits",
    "write_copy",
    "write_fits_copy",
    "write_fits_file",
    "written_by_library",
]

"""FITS in and out: finding files, the science (chips) and DQ extensions, keywords, copies.

Opening a file reads headers only: `open_fits_images` returns one cheap `FitsImage` per
science extension (chip) and holds no pixels and no open file.  `FitsImage.data` and
`FitsImage.mask` map the file read-only each time they are called (without keeping a file
descriptor, see ``_mapping``), so pixels are read lazily, per task, and a collection of
thousands of files stays under the usual limit of open files.  JWST and HST files get their
instrument's WCS and exposure identifiers (modules ``jwst`` and ``hst``).

`write_fits_file` writes a whole-file copy with the sky of every chip recorded (and
optionally subtracted); the source file is never opened for writing, and the copy appears
atomically.

>>> import tempfile, pathlib
>>> from astropy.io import fits
>>> from skymatch_nb_ui.testing import make_mosaic
>>> m = make_mosaic((1, 2), sky=[100, 120])
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> for name, image, w in zip(m.names, m.images, m.wcs):
...     fits.PrimaryHDU(image, w.to_header()).writeto(tmp / f"{name}.fits")
>>> images = [open_fits_image(p) for p in find_fits(tmp / "*.fits")]
>>> images[1].shape, float(images[1].data()[0, 0])
((100, 100), 120.0)
>>> out = write_fits_copy(images[1], tmp / "sub.fits", sky=120.0, valid=True,
...                       method="match", subtract=True)
>>> fits.getheader(out)["BKGLEVEL"], float(fits.getdata(out)[0, 0])
(120.0, 0.0)
"""

from __future__ import annotations

import glob
import gzip
import numbers
import os
import shutil
import threading
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.nddata import bitfield_to_boolean_mask
from astropy.nddata.bitmask import extend_bit_flag_map
from astropy.wcs import WCS, FITSFixedWarning

from ..engine import _execute
from ..engine._validate import and_more, caller_stacklevel
from ..engine.exceptions import SkyMatchWarning
from ..engine.geometry import lonlat_to_xyz
from ._mapping import map_readonly
from ._temp import temp_prefix

__all__ = [
    "COUNT_UNITS",
    "JWST_DQ_FLAGS",
    "ROMAN_DQ_FLAGS",
    "FitsImage",
    "MixedUnitsWarning",
    "atomic_path",
    "check_masks",
    "check_pixel_areas",
    "check_rates",
    "check_units",
    "copy_destinations",
    "count_rates",
    "find_fits",
    "open_fits_image",
    "open_fits_images",
    "parse_dqbits",
    "with_mask_files",
    "write_array_fits",
    "write_fits_copy",
    "write_fits_file",
]



def _flag_map(name: str, names: str, skip: tuple[int, ...] = ()):
    bits = [bit for bit in range(32) if bit not in skip]
    return extend_bit_flag_map(name, **{flag: 2**bit for bit, flag in zip(bits, names.split())})


#: Mnemonic names of the JWST pixel DQ flags (as ``stdatamodels.jwst.datamodels.dqflags``),
#: usable in ``dqbits`` strings such as ``"OUTLIER,SATURATED"`` or ``"~DO_NOT_USE"``.
JWST_DQ_FLAGS = _flag_map(
    "JWSTPixelFlags",
    "DO_NOT_USE SATURATED JUMP_DET DROPOUT OUTLIER PERSISTENCE AD_FLOOR CHARGELOSS RESERVED "
    "NON_SCIENCE DEAD HOT WARM LOW_QE RC TELEGRAPH NONLINEAR BAD_REF_PIXEL NO_FLAT_FIELD "
    "NO_GAIN_VALUE NO_LIN_CORR NO_SAT_CHECK UNRELIABLE_BIAS UNRELIABLE_DARK UNRELIABLE_SLOPE "
    "UNRELIABLE_FLAT OPEN ADJ_OPEN FLUX_ESTIMATED MSA_FAILED_OPEN OTHER_BAD_PIXEL REFERENCE_PIXEL",
)

#: The Roman WFI pixel DQ flags (as ``roman_datamodels.dqflags.pixel``; bit 14 is unused).
ROMAN_DQ_FLAGS = _flag_map(
    "RomanPixelFlags",
    "DO_NOT_USE SATURATED JUMP_DET DROPOUT GW_AFFECTED_DATA PERSISTENCE AD_FLOOR OUTLIER "
    "UNRELIABLE_ERROR NON_SCIENCE DEAD HOT WARM LOW_QE TELEGRAPH NONLINEAR BAD_REF_PIXEL "
    "NO_FLAT_FIELD NO_GAIN_VALUE NO_LIN_CORR NO_SAT_CHECK UNRELIABLE_BIAS UNRELIABLE_DARK "
    "UNRELIABLE_SLOPE UNRELIABLE_FLAT RESERVED_5 RESERVED_6 UNRELIABLE_RESET RESERVED_7 "
    "OTHER_BAD_PIXEL REFERENCE_PIXEL",
    skip=(14,),
)

#: The header keywords `write_fits_copy` sets, with the JWST pipeline's comments.
BKG_COMMENTS = {
    "BKGLEVEL": "Total background level",
    "BKGSUB": "Background was subtracted",
    "BKGMETH": "Background computation method",
}

#: The keywords of a sky plane (``skymodel="plane"``), with their comments: the background at
#: 1-based FITS pixel (x, y) is ``BKGLEVEL + BKGSLPX * (x - BKGXREF) + BKGSLPY * (y - BKGYREF)``
#: (BKGLEVEL is the plane at the image's centre).  A constant sky writes ``BKGMODEL =
#: 'constant'`` and no slopes.
PLANE_COMMENTS = {
    "BKGMODEL": "Sky model: constant or plane",
    "BKGSLPX": "Sky plane slope along x [data units / pixel]",
    "BKGSLPY": "Sky plane slope along y [data units / pixel]",
    "BKGXREF": "Sky plane reference x, 1-based (BKGLEVEL there)",
    "BKGYREF": "Sky plane reference y, 1-based (BKGLEVEL there)",
}


def plane_method(method: str, plane) -> str:
    """The method recorded for a sky: ``"match+plane"`` for a plane, else ``method``."""
    return f"{method}+plane" if plane is not None else str(method)


def sky_array(sky: float, plane, shape, dtype) -> np.ndarray | float:
    """What to subtract from data of ``shape``: the constant, or the plane's values."""
    if plane is None:
        return np.asarray(sky, dtype)
    from ..engine.planes import plane_values

    return plane_values(sky, plane[0], plane[1], shape).astype(dtype, copy=False)


def set_plane_keywords(header, plane, shape, valid: bool) -> None:
    """``BKGMODEL`` and, for a valid plane, its slopes and reference pixel (`PLANE_COMMENTS`)."""
    header["BKGMODEL"] = ("plane" if plane is not None else "constant", PLANE_COMMENTS["BKGMODEL"])
    keys = ("BKGSLPX", "BKGSLPY", "BKGXREF", "BKGYREF")
    if plane is None or not valid:
        for key in keys:
            header.remove(key, ignore_missing=True, remove_all=True)
        return
    ny, nx = shape
    values = (float(plane[0]), float(plane[1]), (nx + 1) / 2.0, (ny + 1) / 2.0)
    for key, value in zip(keys, values):
        header[key] = (value, PLANE_COMMENTS[key])

_GLOB_CHARS = frozenset("*?[")
# what astropy raises for broken files and headers
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, IndexError, TypeError, AttributeError,
                zlib.error, fits.VerifyError)
_OPEN = dict(mode="denywrite", memmap=True, lazy_load_hdus=True)

# keyword(s) of each metadata column, tried in order (science header first, then primary)
_META_KEYWORDS = {
    "bunit": ("BUNIT",),
    "exptime": ("EXPTIME", "XPOSURE", "EFFEXPTM"),
    "filter": ("FILTER", "FILTNAM1", "FILTER1"),
    "detector": ("DETECTOR", "CCDNAME", "CHIPID"),
    "instrument": ("INSTRUME",),
    "date_obs": ("DATE-OBS", "DATE-BEG"),
}
_EXPOSURE_KEYWORDS = ("EXP_ID", "EXPID", "EXPNUM", "ROOTNAME", "OBS_ID", "EXPOSURE")


class MixedUnitsWarning(SkyMatchWarning):
    """The images do not all have the same BUNIT: their sky levels are not comparable."""


# -- finding files ---------------------------------------------------------------------------
def find_fits(paths, *, what: str = "FITS files") -> list[Path]:
    """The files named by ``paths``, with glob patterns expanded.

    Parameters
    ----------
    paths : str, os.PathLike or sequence of them
        File names or glob patterns (``*``, ``?``, ``[...]``; ``**`` descends directories).
        A pattern's matches are sorted; directories it matches are skipped.  A name that
        exists is taken literally even if it contains pattern characters.

    what : str
        What the files are, for the message when none is given.

    Returns
    -------
    list of Path
        In the order given, duplicates (the same file named twice) removed.

    Raises
    ------
    FileNotFoundError
        For a name that does not exist or a pattern that matches no file.
    ValueError
        When nothing is named at all, or a name is a directory.
    TypeError
        For anything but names.

    Examples
    --------
    >>> find_fits("data/*_cal.fits")  # doctest: +SKIP
    [PosixPath('data/a_cal.fits'), PosixPath('data/b_cal.fits')]
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    elif not isinstance(paths, (Sequence, Iterator)) or isinstance(paths, bytes):
        raise TypeError(f"paths must be a file name, a glob pattern or a sequence of them; got {paths!r}")
    paths = list(paths)
    for item in paths:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"paths must hold file names or glob patterns (str or Path); got {item!r}")
    found = [path for item in paths for path in _expand(os.fspath(item))]
    if not found:
        raise ValueError(f"no {what} given: pass file names or glob patterns such as 'data/*.fits'")
    seen: set[str] = set()
    unique = []
    for path in found:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


#: The endings of input files, longest first (`_pattern_for`).
_INPUT_ENDINGS = ("_asn.json", ".fits.gz", ".fits.fz", ".fits.bz2", ".fits", ".fit", ".fts",
                  ".asdf")


def _pattern_for(folder: Path) -> str:
    """A pattern naming the input files of ``folder``: its most common ending, and how many."""
    counts: dict[str, int] = {}
    for entry in folder.iterdir():
        ending = next((e for e in _INPUT_ENDINGS if entry.name.lower().endswith(e)), None)
        if ending is not None and entry.is_file():
            counts[ending] = counts.get(ending, 0) + 1
    if not counts:
        return f"'{folder / '*.fits'}' (it holds no FITS, ASDF or association file)"
    ending = max(counts, key=lambda e: (counts[e], -_INPUT_ENDINGS.index(e)))
    return f"'{folder / ('*' + ending)}' ({counts[ending]:,} such files there)"


def _expand(name: str) -> list[Path]:
    path = Path(name)
    if path.is_dir():
        raise ValueError(f"{name!r} is a directory; name its files, e.g. {_pattern_for(path)}")
    if path.exists():
        return [path]
    if not _GLOB_CHARS & set(name):
        raise FileNotFoundError(f"no such file: {name!r}")
    matches = [Path(p) for p in sorted(glob.glob(name, recursive=True)) if not os.path.isdir(p)]
    if not matches:
        raise FileNotFoundError(f"the pattern {name!r} matches no file")
    return matches


# -- one image -------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FitsImage:
    """One image (chip) of a FITS file: where it is and what its headers say, not its pixels.

    Build them with `open_fits_images` (every chip of a file) or `open_fits_image` (one).
    The pixels are read (mapped read-only) by `data` and `mask`, each time they are called.

    Attributes
    ----------
    path : Path
        The file.
    ext : int
        Index of the science HDU.
    dq_ext : int or None
        Index of the DQ HDU, None when the file has none (or DQ was disabled).
    weight_ext : int or None
        Without a DQ HDU, the index of the drizzle weight map (``WHT``, of the same EXTVER and
        shape) that masks the pixels of weight 0, where a drizzled image (AstroDrizzle's
        ``_drz``/``_drc``, the JWST pipeline's ``_i2d``) has no data; None otherwise.
    mask_file, mask_ext : Path and int, or None
        A mask in another file (`with_mask_files`: DECam's ``_ood`` flags, SWarp's
        ``.weight.fits``), its HDU for this image; combined with the file's own.
    shape : (int, int)
        (ny, nx), from the header.
    wcs : astropy.wcs.WCS or PackedWCS
        The celestial WCS of the science HDU, distortions (SIP, lookup tables) included; for
        JWST files the exact gwcs of the file's ASDF extension (when ``stdatamodels`` is
        installed), packed (`~skymatch_nb_ui.engine.packed.PackedWCS`: ~14 KB instead of
        ~380 KB of Python objects for a NIRCam detector); it behaves as the gwcs, and
        ``wcs.unpack()`` gives a ``gwcs.WCS`` of one's own.
    header, primary_header : astropy.io.fits.Header
        The science and primary headers (the same for an image in the primary HDU): new
        copies, parsed from `header_text` and `primary_text` at each access, so that changing
        them changes neither the record nor the file.
    header_text, primary_text : str
        The headers' cards (80 characters each, no END), as astropy reads and writes them:
        records keep their headers as text, about 80 bytes a card against ~470 parsed (at
        10,000 files, 210 MB less for headers of 24 cards, ~1.5 GB less for JWST's ~400).
        ``primary_text`` is None when the science HDU is the primary.
    kind : str
        ``"jwst"``, ``"hst"`` or ``"fits"`` (any other file): which instrument's conventions
        apply to grouping, DQ defaults and written keywords.
    exposure_id : str or None
        The exposure this image belongs to, by the instrument's pipeline rules (JWST: the
        association's or the pipeline's ``group_id``; HST: the exposure's rootname); None:
        from the headers (see `meta`).

    Examples
    --------
    >>> image = open_fits_image("jw_nrca1_cal.fits")  # doctest: +SKIP
    >>> image.ext, image.dq_ext, image.shape, image.meta["detector"]  # doctest: +SKIP
    (1, 3, (2048, 2048), 'NRCA1')
    """

    path: Path
    ext: int
    dq_ext: int | None
    shape: tuple[int, int]
    wcs: object
    header_text: str = field(repr=False)
    primary_text: str | None = field(default=None, repr=False)
    kind: str = "fits"
    exposure_id: str | None = None
    weight_ext: int | None = None
    mask_file: Path | None = None
    mask_ext: int | None = None
    #: HDU index -> (byte offset, dtype, shape) of its data, found at open for unscaled
    #: images: their pixels are then mapped without parsing the headers again ("mask": of
    #: ``mask_ext`` in ``mask_file``).
    layout: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def pixels_key(self) -> tuple:
        """Which pixels and mask this image reads (the file and its HDUs), in any process."""
        mask_file = None if self.mask_file is None else str(self.mask_file)
        return ("fits", str(self.path), self.ext, self.dq_ext, self.weight_ext, mask_file,
                self.mask_ext)

    def __repr__(self) -> str:
        dq = "" if self.dq_ext is None else f", dq_ext={self.dq_ext}"
        if self.weight_ext is not None:
            dq += f", weight_ext={self.weight_ext}"
        return f"FitsImage({str(self.path)!r}, ext={self.ext}{dq}, shape={self.shape})"

    @property
    def header(self) -> fits.Header:
        """The science header: a new copy, parsed from `header_text`."""
        return fits.Header.fromstring(self.header_text)

    @property
    def primary_header(self) -> fits.Header:
        """The primary header: a new copy (the science header's when that is the primary)."""
        return self.header if self.primary_text is None else fits.Header.fromstring(self.primary_text)

    def _headers(self) -> tuple[fits.Header, fits.Header]:
        """(science, primary), each parsed once; the same object when they are one HDU's."""
        science = self.header
        return science, science if self.primary_text is None else self.primary_header

    @property
    def label(self) -> str:
        """The science extension: ``"NAME,VER"`` (``"SCI,2"``), ``"NAME"``, or its index.

        ``"NAME"`` alone when its header has no EXTVER (a mosaic camera's ``"S29"``).
        """
        header = self.header
        name, version = header.get("EXTNAME"), header.get("EXTVER")
        if not name:
            return str(self.ext)
        return str(name).strip() if version is None else f"{str(name).strip()},{version}"

    @property
    def default_dqbits(self):
        """The DQ flags the instrument's sky step ignores by default (see `mask`)."""
        return "~DO_NOT_USE+NON_SCIENCE" if self.kind == "jwst" else 0

    def data(self) -> np.ndarray:
        """The science pixels: a read-only array mapped from the file (no file stays open).

        Scaled integer data (BSCALE/BZERO/BLANK) and compressed data (``.fits.gz``, fpack's
        tile-compressed ``.fits.fz``) cannot be mapped: they are decoded whole (and while a
        run lasts, the last few hundred MB of them kept for its next reads: `keeping_decoded`).
        """
        return _read_pixels(self.path, self.ext, self.layout.get(self.ext))

    def mask(self, dqbits=0) -> np.ndarray | None:
        """Good-pixel mask (True = good) from the DQ extension; None when there is none.

        Parameters
        ----------
        dqbits : int, str or None
            DQ flags to *ignore* (treat as good); any other flag marks a pixel bad.  An
            integer sum of flags, or a string in astropy's ``bitfield_to_boolean_mask``
            syntax: ``"4,16"``, ``"4+16"``, JWST names such as ``"JUMP_DET,OUTLIER"`` (see
            `JWST_DQ_FLAGS`), and ``"~..."`` for "ignore all but these" (the JWST pipeline's
            ``"~DO_NOT_USE+NON_SCIENCE"``).  Default 0: any flag is bad; None: ignore all;
            ``"auto"``: the instrument's default (`default_dqbits`).
        """
        if isinstance(dqbits, str) and dqbits == "auto":
            dqbits = self.default_dqbits
        bits = parse_dqbits(dqbits)
        own = self._own_mask(bits)
        if self.mask_file is None:
            return own
        other = _good_of(_read_pixels(self.mask_file, self.mask_ext, self.layout.get("mask")))
        return other if own is None else np.logical_and(own, other, out=other)

    def _own_mask(self, bits) -> np.ndarray | None:
        """The mask of the file's own DQ (or drizzle weights), None without them."""
        if self.dq_ext is None and self.weight_ext is not None:  # a drizzled image
            weight = _read_pixels(self.path, self.weight_ext, self.layout.get(self.weight_ext))
            return np.greater(weight, 0)  # (NaN: no data either)
        if self.dq_ext is None:
            return None
        dq = _read_pixels(self.path, self.dq_ext, self.layout.get(self.dq_ext))
        return bitfield_to_boolean_mask(
            dq, ignore_flags=bits, good_mask_value=True, dtype=bool
        )

    def keyword(self, name: str):
        """A header value: from the science header, else the primary header.

        Raises
        ------
        KeyError
            Naming the keyword and the file, when neither header has it.
        """
        for header in self._headers():
            if name in header:
                return header[name]
        raise KeyError(
            f"keyword {name!r} is in neither the science header (HDU {self.ext}) nor the "
            f"primary header of {str(self.path)!r}"
        )

    @property
    def meta(self) -> dict:
        """Selected metadata, None where the headers do not say (a new dict at each access).

        ``bunit`` (BUNIT), ``exptime`` (EXPTIME, XPOSURE or EFFEXPTM), ``filter`` (FILTER,
        FILTNAM1 or FILTER1), ``detector`` (DETECTOR, CCDNAME or CHIPID), ``instrument``
        (INSTRUME), ``date_obs`` (DATE-OBS or DATE-BEG) and ``exposure``: an identifier shared
        by all detectors of one exposure.  It is `exposure_id` when the instrument rules gave
        one; else, with OBS_ID and EXPOSURE both present, ``"<OBS_ID>_<EXPOSURE>"``;
        otherwise the first of EXP_ID, EXPID, EXPNUM, ROOTNAME, OBS_ID, EXPOSURE.  Each
        keyword is looked up in the science header, then the primary.
        """
        return dict(self._meta)

    @cached_property
    def _meta(self) -> dict:
        # the headers parsed once per record (opening a collection asks 2-3 times per image,
        # and a JWST file's ~400 cards take ~1 ms to parse)
        headers = self._headers()
        meta = {key: _first(headers, names) for key, names in _META_KEYWORDS.items()}
        if meta["exptime"] is not None:
            try:
                meta["exptime"] = float(meta["exptime"])
            except (TypeError, ValueError):
                pass
        for key in ("bunit", "filter", "detector", "instrument", "date_obs"):
            if meta[key] is not None:
                meta[key] = str(meta[key]).strip()
        obs_id, exposure = _first(headers, ("OBS_ID",)), _first(headers, ("EXPOSURE",))
        if self.exposure_id is not None:
            meta["exposure"] = self.exposure_id
        elif obs_id is not None and exposure is not None:
            meta["exposure"] = f"{str(obs_id).strip()}_{str(exposure).strip()}"
        else:
            found = _first(headers, _EXPOSURE_KEYWORDS)
            meta["exposure"] = None if found is None else str(found).strip()
        return meta


def _first(headers, names):
    """The first of ``names`` with a value, in the science header then the primary."""
    for name in names:
        for header in headers:
            value = header.get(name)
            if value is not None and not isinstance(value, fits.card.Undefined):
                return value
    return None


def open_fits_image(path, *, ext=None, dq_ext: str | None = "DQ") -> FitsImage:
    """Find the science (and DQ) extension of a FITS file and read its headers and WCS.

    No pixels are read and the file is closed on return.  For every chip of a multi-chip
    file, use `open_fits_images`.

    Parameters
    ----------
    path : str or Path
        The file.
    ext : int, str or (str, int), optional
        The science HDU: an index, a name (``"SCI"``) or (name, version).  Default: the
        first HDU named SCI, else the first image HDU with 2-D data and a celestial WCS.
    dq_ext : str or None
        Name of the DQ HDU (the one with the science HDU's EXTVER).  A file without it has no
        mask, unless it is a drizzled image with a weight map (``WHT``): its pixels of weight
        0 are then masked.  None: ignore DQ (and weights).

    Returns
    -------
    FitsImage

    Raises
    ------
    ValueError
        Naming the file (and extension): unreadable file, extension not found, not an image,
        not 2-D, no celestial WCS, a DQ of another shape than the science data.
    OSError
        Naming the file, when its data are cut short (a truncated file).
    FileNotFoundError
        When the file does not exist.

    Examples
    --------
    >>> image = open_fits_image("j8xi01_flt.fits", ext=("SCI", 2))  # doctest: +SKIP
    >>> image.ext, image.dq_ext  # doctest: +SKIP
    (4, 6)
    """
    return _open(path, ext, dq_ext, every_chip=False)[0]


def open_fits_images(path, *, ext=None, dq_ext: str | None = "DQ") -> list[FitsImage]:
    """Every science extension (chip) of a FITS file, with its DQ, headers and WCS.

    An HST ACS/WFC or WFC3/UVIS file gives two images (``SCI,1`` and ``SCI,2``), a JWST
    ``_cal`` file one.  Without ``SCI`` HDUs, every 2-D image with a celestial WCS that looks
    elsewhere than the images before it (`_detectors`: a mosaic camera's CCDs, one HDU each,
    as DECam's files hold them).  Parameters, errors and laziness as `open_fits_image`; with
    ``ext`` only that extension is returned.

    Examples
    --------
    >>> [image.label for image in open_fits_images("j8xi01abq_flc.fits")]  # doctest: +SKIP
    ['SCI,1', 'SCI,2']
    """
    return _open(path, ext, dq_ext, every_chip=ext is None)


def _good_of(values: np.ndarray) -> np.ndarray:
    """Good pixels (True) of a mask file's values: integer flags, or float weights."""
    if values.dtype.kind == "f":
        return np.greater(values, 0)  # weights: 0 or NaN, no data
    return np.equal(values, 0)  # flags: any is bad


def _mask_finder(masks):
    """A function of an input file's path giving its mask file (`with_mask_files`), or None."""
    check_masks(masks)
    if callable(masks):
        return lambda path: None if (found := masks(Path(path))) is None else Path(found)
    if isinstance(masks, Mapping):
        by_path = {os.path.realpath(k): Path(v) for k, v in masks.items() if v is not None}
        return lambda path: by_path.get(os.path.realpath(path))
    old, new = masks

    def replaced(path):
        name = Path(path).name
        if old not in name:
            raise ValueError(
                f"masks={masks!r}: the name {name!r} has no {old!r} to replace by {new!r}; "
                "name its mask with a function or a mapping (masks={input: mask})"
            )
        return Path(path).with_name(name.replace(old, new, 1))

    return replaced


def check_masks(masks) -> None:
    """Refuse a ``masks`` (`with_mask_files`) that names no mask file, before files are read."""
    if masks is None or callable(masks) or isinstance(masks, Mapping):
        return
    if isinstance(masks, (tuple, list)) and len(masks) == 2 and all(
            isinstance(m, str) for m in masks) and masks[0] and masks[0] != masks[1]:
        return
    raise TypeError(
        f"masks must be a function of an input file's path, a mapping {{input file: mask "
        f"file}} or a pair of different strings (old, new) replaced in the input's name, e.g. "
        f"('_ooi_', '_ood_'); got {masks!r}"
    )


def with_mask_files(images: Sequence, masks) -> list:
    """``images`` (records of `open_fits_images`) with the masks of other files added.

    Parameters
    ----------
    images : sequence of FitsImage
        Other records (Roman's) are refused when ``masks`` names a file for them.
    masks : callable, mapping or (str, str)
        An input file's mask file: a function of its path (returning None for none), a
        mapping {input file: mask file}, or a pair ``(old, new)`` replaced in its name
        (``("_ooi_", "_ood_")``: DECam's flags beside its images; ``(".fits",
        ".weight.fits")``: SWarp's weights).  The mask of an image is the mask file's HDU of
        the same EXTNAME and EXTVER, else of the same index, else its only image; of the
        image's shape.  Integer values are flags (0 good, any other bad: ``dqbits`` applies
        to the file's own DQ only), float values weights (0 or NaN bad).  It is combined with
        the image's own mask (DQ, or drizzle weights).

    Returns
    -------
    list
        New records; the mask files' headers checked, their pixels not read.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the image and its mask file: a mask file missing, without a matching image
        HDU, or of another shape.

    Examples
    --------
    >>> chips = with_mask_files(open_fits_images("c4d_ooi_g.fits.fz"),
    ...                         ("_ooi_", "_ood_"))  # doctest: +SKIP
    """
    mask_of = _mask_finder(masks)
    by_file: dict[str, list[int]] = {}
    for k, image in enumerate(images):
        by_file.setdefault(os.path.realpath(image.path), []).append(k)
    out = list(images)
    for members in by_file.values():  # each mask file read once, for every image of its input
        path = images[members[0]].path
        mask = mask_of(path)
        if mask is None:
            continue
        if not all(isinstance(images[k], FitsImage) for k in members):
            raise ValueError(f"masks= names {str(mask)!r} for {str(path)!r}, which is not a "
                             "FITS file: masks in other files apply to FITS images only")
        if not mask.is_file():
            raise FileNotFoundError(f"the mask file of {str(path)!r}, {str(mask)!r}, does not "
                                    "exist")
        with _reading(mask), fits.open(mask, **_OPEN) as hdul:
            for k in members:
                index = _mask_index(hdul, images[k], mask)
                _check_complete(hdul, index, mask)
                layout = _data_layout(hdul, index)
                layouts = {key: v for key, v in images[k].layout.items() if key != "mask"}
                if layout is not None:
                    layouts["mask"] = layout
                out[k] = replace(images[k], mask_file=mask, mask_ext=index, layout=layouts)
    return out


def _mask_index(hdul, image: FitsImage, mask: Path) -> int:
    """The HDU of a mask file that holds ``image``'s mask (`with_mask_files`)."""
    header = image.header
    name, version = header.get("EXTNAME"), header.get("EXTVER", 1)
    images = [k for k, hdu in enumerate(hdul) if _is_image(hdu) and hdu.header.get("NAXIS") == 2]
    index = None
    if name:
        index = next((k for k in images if hdul[k].name == str(name).strip().upper()
                      and hdul[k].header.get("EXTVER", 1) == version), None)
    if index is None and image.ext in images:
        index = image.ext
    if index is None and len(images) == 1:
        index = images[0]
    where = f"the mask of {str(image.path)!r} [{image.label}] in {str(mask)!r}"
    if index is None:
        raise ValueError(f"{where}: no 2-D image HDU named {image.label!r}, at index "
                         f"{image.ext} or alone; its HDUs are {_hdu_list(hdul)}")
    shape = _dims(hdul[index].header)
    if shape != tuple(image.shape):
        raise ValueError(f"{where} (HDU {index}) has shape {shape}, unlike the image's "
                         f"{tuple(image.shape)}")
    return index


def _open(path, ext, dq_ext, *, every_chip: bool) -> list[FitsImage]:
    path = Path(path)
    _check_ext(ext)
    if dq_ext is not None and not isinstance(dq_ext, str):
        raise TypeError(f"dq_ext must be an extension name (str) or None; got {dq_ext!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    with _reading(path), fits.open(path, **_OPEN) as hdul:
        found: dict = {}  # HDU index -> its WCS, when the search for a science HDU made it
        _check_whole(hdul, path, after=False)
        indices = _science_indices(hdul, ext, path, every_chip, found)
        images = [_open_chip(hdul, index, dq_ext, path, found.get(index)) for index in indices]
        _check_whole(hdul, path, after=True)
        return _instrument(images, hdul)


@contextmanager
def _reading(path: Path):
    """While the headers and WCS of ``path`` are read: warnings as `_quiet`.

    astropy's fixes of WCS cards are silenced, and an error is raised naming the file
    (corrupt files fail in many ways).
    """
    try:
        with _quiet():
            warnings.simplefilter("ignore", FITSFixedWarning)
            yield
    except _READ_ERRORS as error:
        if isinstance(error, (ValueError, OSError)) and str(path) in str(error):
            raise
        kind = OSError if isinstance(error, (OSError, EOFError, zlib.error)) else ValueError
        packed = _packed_file(path)
        hint = (f" (the file is {packed}-compressed: a stream cut short or damaged, e.g. by an "
                "interrupted download, reads so; download or write the file again)" if packed else "")
        raise kind(f"cannot read FITS file {str(path)!r}: {error}{hint}") from error


#: The first bytes of the compressed files astropy reads (`_packed_file`).
_PACKED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"PK\x03\x04": "zip", b"\xfd7zXZ\x00": "lzma"}


def _packed_file(path: Path) -> str | None:
    """How the whole file is compressed (``"gzip"`` ...), from its first bytes; else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return None
    return next((kind for magic, kind in _PACKED_MAGIC.items() if head.startswith(magic)), None)


def _open_chip(hdul, index: int, dq_ext, path: Path, wcs=None) -> FitsImage:
    hdu = hdul[index]
    shape = _image_shape(hdu, index, path)
    _check_complete(hdul, index, path)
    wcs = _celestial_wcs(hdu.header, hdul, index, path, wcs)
    wcs.pixel_shape = shape[::-1]
    dq_index = _dq_index(hdul, hdu.header, dq_ext, shape, path)
    weight_index = None if dq_index is not None or dq_ext is None else _weight_index(
        hdul, hdu.header, shape)
    for k in (dq_index, weight_index):
        if k is not None:
            _check_complete(hdul, k, path)
    layout = {k: _data_layout(hdul, k) for k in (index, dq_index, weight_index) if k is not None}
    primary = None if index == 0 else _text(hdul[0].header)
    return FitsImage(path, index, dq_index, shape, wcs, _text(hdu.header), primary,
                     layout={k: v for k, v in layout.items() if v is not None},
                     weight_ext=weight_index)


def _weight_index(hdul, header, shape) -> int | None:
    """The drizzle weight map (``WHT``) of a science HDU: same EXTVER, an image of its shape."""
    try:
        index = hdul.index_of(("WHT", header.get("EXTVER", 1)))
    except KeyError:
        return None
    weight = hdul[index]
    if not _is_image(weight) or _dims(weight.header) != tuple(shape):
        return None
    return index


def _text(header) -> str:
    """A header's cards as text, without END and padding (`FitsImage.header_text`).

    As astropy writes them: a card it can fix (e.g. a lower-case keyword) is fixed, quietly
    (the science header's cards were verified by the WCS already; the primary's were not).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        return header.tostring(endcard=False, padding=False)


def _instrument(images: list[FitsImage], hdul) -> list[FitsImage]:
    """Apply the conventions of the instrument that wrote the file (JWST, HST), if any."""
    telescope = str(hdul[0].header.get("TELESCOP", "")).strip().upper()
    if telescope == "JWST":
        from . import jwst

        return jwst.adapt(images, hdul)
    if telescope == "HST":
        from . import hst

        return hst.adapt(images, hdul)
    return images


@contextmanager
def _quiet():
    """Warnings caught; astropy's truncation warning silenced (`_check_complete` raises)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "File may have been truncated")
        yield


def _check_complete(hdul, index: int, path: Path) -> None:
    """Refuse an HDU whose data run past the end of the file (a truncated download).

    A tile-compressed image (fpack's ``.fz``) is checked by the size of its compressed table;
    a compressed file (``.fits.gz``) is not checked here: its decompression finds a short
    stream (`_read_pixels`).
    """
    hdu = hdul[index]
    kind = compression(hdul, index)
    if kind == "tiles":
        table = _tile_table_header(hdu)
        if table is None:
            return
        needed = int(table["NAXIS1"]) * int(table["NAXIS2"]) + int(table.get("PCOUNT", 0))
    elif kind is None and _is_image(hdu):
        needed = abs(int(hdu.header["BITPIX"])) // 8 * int(np.prod(_dims(hdu.header)))
    else:
        return
    start = _offsets(hdul, index)[1]
    size = os.path.getsize(path)
    if start + needed > size:
        raise _truncated(path, f"HDU {index} ({hdu.name or 'unnamed'})", needed, start, size)


def _truncated(path: Path, hdu: str, needed: int, start: int, size: int) -> OSError:
    """The error for ``hdu``'s data (``needed`` bytes from ``start``) past a file's end."""
    return OSError(
        f"{str(path)!r} is truncated: {hdu} needs {needed} bytes of data from byte {start}, "
        f"but the file ends after {max(size - start, 0)} of them. Download or write the file "
        "again"
    )


def _check_whole(hdul, path: Path, *, after: bool) -> None:
    """Refuse a file whose last HDU as read is cut short: its stream or the file ends early.

    astropy reads the HDUs of a file cut short up to the cut and quietly lists only those: an
    HDU after the cut (a DQ; for a gzip stream, even the science HDU) would just be missing.
    Before the images are found (``after=False``) a gzip stream is checked, after them
    (``after=True``; their own data by `_check_complete`, which says more) a plain file:

    - A gzip stream's last four bytes say how long it is uncompressed (modulo 2**32): the end
      of the last HDU read, if the file is whole.
    - A plain file ends where its last HDU's data end, padded to 2880 bytes (or, tolerated,
      unpadded): a file that ends inside those data, or inside the padding, was cut.
    """
    packed = compression(hdul, 0)
    if (packed == "gzip") == after or packed not in (None, "gzip"):
        return
    last = len(hdul) - 1  # (every header read)
    _, start, span = _offsets(hdul, last)
    name = f"HDU {last} ({hdul[last].name or 'unnamed'})"
    if packed == "gzip":
        end = start + span
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            size = int.from_bytes(f.read(4), "little")
        if end % 2**32 != size:
            raise OSError(
                f"{str(path)!r} is cut short or damaged: its HDUs as read end with {name} at "
                f"byte {end} uncompressed, but the gzip stream's trailer does not give that "
                "length. Download or write the file again"
            )
        return
    header = _tile_table_header(hdul[last]) or hdul[last].header
    if header.get("GROUPS"):  # (random groups: not images we read)
        return
    dims = [int(header.get(f"NAXIS{k}", 0)) for k in range(1, int(header.get("NAXIS", 0)) + 1)]
    data = 0 if not dims else abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (
        int(header.get("PCOUNT", 0)) + int(np.prod(dims)))
    end, padded, size = start + data, start + span, os.path.getsize(path)
    if size < end or end < size < padded:
        raise OSError(
            f"{str(path)!r} is cut short: its HDUs as read end with {name}, whose data end at "
            f"byte {end} (padded: {padded}), but the file ends at byte {size}; whatever "
            "followed is missing. Download or write the file again"
        )


def compression(hdul, index: int) -> str | None:
    """How an HDU's data are stored, if not as they are: None, ``"tiles"`` or the file's.

    ``"tiles"``: a tile-compressed image (`astropy.io.fits.CompImageHDU`, fpack's ``.fz``
    files; or its table, when the file was opened with ``disable_image_compression``);
    ``"gzip"``, ``"bzip2"``, ``"zip"`` or ``"lzma"``: the whole file is compressed
    (``.fits.gz``; said first, whatever its HDUs are).  Such data cannot be mapped from the
    file: `_read_pixels` decompresses them.
    """
    packed = _file_compression(hdul)
    if packed:
        return packed
    if _tile_table_header(hdul[index]) is not None or isinstance(hdul[index], fits.CompImageHDU):
        return "tiles"
    return None


def _tile_table_header(hdu) -> fits.Header | None:
    """The header of the table that holds a tile-compressed image, else None."""
    if isinstance(hdu, fits.CompImageHDU):
        table = getattr(hdu, "_bintable", None)  # (astropy keeps the table it decompresses)
        return None if table is None else table.header
    if isinstance(hdu, fits.BinTableHDU) and hdu.header.get("ZIMAGE") is True:
        return hdu.header
    return None


def _offsets(hdul, index: int) -> tuple[int, int, int]:
    """(header start, data start, data span) of an HDU in its (uncompressed) file.

    What ``hdul.fileinfo(index)`` says, without its check of every HDU of the file for a
    resize: that reads every header, and a tile-compressed image's costs ~1 ms to convert
    (a 60-CCD camera file: 75 ms a call).
    """
    hdu = hdul[index]
    try:
        return int(hdu._header_offset), int(hdu._data_offset), int(hdu._data_size)
    except (AttributeError, TypeError):  # (another astropy: its public way)
        info = hdul.fileinfo(index)
        return int(info["hdrLoc"]), int(info["datLoc"]), int(info["datSpan"])


def _file_compression(hdul) -> str | None:
    """How the whole file of ``hdul`` is compressed ("gzip", ...), or None."""
    file = getattr(hdul, "_file", None)
    if file is None or not hasattr(file, "compression"):
        file = hdul.fileinfo(0).get("file")
    return getattr(file, "compression", None) or None


def _dims(header) -> tuple[int, ...]:
    return tuple(int(header[f"NAXIS{k}"]) for k in range(int(header.get("NAXIS", 0)), 0, -1))


def _check_ext(ext) -> None:
    ok = (
        ext is None
        or isinstance(ext, str)
        or (isinstance(ext, numbers.Integral) and not isinstance(ext, bool))
        or (
            isinstance(ext, tuple) and len(ext) == 2 and isinstance(ext[0], str)
            and isinstance(ext[1], numbers.Integral) and not isinstance(ext[1], bool)
        )
    )
    if not ok:
        raise TypeError(
            f"ext must be an HDU index (int), a name ('SCI') or (name, version) such as "
            f"('SCI', 2); got {ext!r}"
        )


def _science_indices(hdul, ext, path: Path, every_chip: bool, found: dict) -> list[int]:
    if ext is not None:
        try:
            index = hdul.index_of(ext) if not isinstance(ext, numbers.Integral) else int(ext)
            hdul[index]
        except (KeyError, IndexError):
            raise ValueError(
                f"extension {ext!r} not found in {str(path)!r}; its HDUs are {_hdu_list(hdul)}"
            ) from None
        return [index if index >= 0 else len(hdul) + index]
    chips = [index for index, hdu in enumerate(hdul) if hdu.name == "SCI"]
    if chips:
        return chips if every_chip else chips[:1]
    skipped, images = [], []
    for index, hdu in enumerate(hdul):
        if _is_image(hdu) and hdu.header.get("NAXIS") == 2:
            wcs = _wcs_or_none(hdu.header, hdul)
            if wcs is not None and wcs.has_celestial:
                found[index] = wcs  # a WCS costs milliseconds to make: make it once
                images.append(index)
                if not every_chip:
                    break
            else:
                skipped.append(index)
    if images:
        return _detectors(hdul, images, found)
    hint = f" (HDU {skipped} are 2-D images without a celestial WCS)" if skipped else ""
    raise ValueError(
        f"no 2-D image HDU with a celestial WCS in {str(path)!r}{hint}; its HDUs are "
        f"{_hdu_list(hdul)}. Pass ext= to choose one"
    )


def _detectors(hdul, images: list[int], found: dict) -> list[int]:
    """Of a file's 2-D images with a celestial WCS (none named SCI), those of other detectors.

    A mosaic camera's file (DECam, MegaCam, KPNO Mosaic: one HDU per CCD, named after it)
    holds one image per detector, each where its detector looked; other files put beside
    an image its companions, on the same pixels (a mask, a variance, an exposure map: the
    Rubin pipeline's ``IMAGE``, ``MASK``, ``VARIANCE``) or at the same place (a binned
    preview).  An image whose centre falls within a pixel of an image before it is such a
    companion, and is left out; every other one is read.
    """
    kept: list[tuple[int, np.ndarray | None, float]] = []  # (HDU, centre's unit vector, pixel)
    for index in images:
        ny, nx = _dims(hdul[index].header)
        x, y = (nx - 1) / 2, (ny - 1) / 2
        lon, lat = found[index].celestial.all_pix2world([x, x + 1], [y, y], 0)
        if not np.all(np.isfinite([lon, lat])):  # (a centre off the projection: keep the first)
            if not kept:
                kept.append((index, None, 0.0))
            continue
        centre, beside = lonlat_to_xyz(np.asarray(lon, float), np.asarray(lat, float))
        pixel = _angle(centre, beside)
        if any(there is not None and _angle(centre, there) <= max(pixel, size)
               for _, there, size in kept):
            continue
        kept.append((index, centre, pixel))
    return [index for index, _, _ in kept]


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """The angle between two unit vectors, radians (exact for small ones)."""
    return 2.0 * float(np.arcsin(min(np.linalg.norm(a - b) / 2.0, 1.0)))


def _wcs_or_none(header, hdul) -> WCS | None:
    try:
        return WCS(header, fobj=hdul)
    except Exception:  # a broken WCS is no celestial WCS
        return None


def _is_image(hdu) -> bool:
    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) and hdu.header.get("NAXIS", 0) > 0


def _hdu_list(hdul) -> str:
    parts = []
    for index, hdu in enumerate(hdul):
        kind = type(hdu).__name__
        dims = "x".join(str(hdu.header.get(f"NAXIS{k}")) for k in range(1, hdu.header.get("NAXIS", 0) + 1))
        parts.append(f"{index} {hdu.name or '-'} ({kind}{', ' + dims if dims else ''})")
    return "[" + "; ".join(parts) + "]"


def _image_shape(hdu, index: int, path: Path) -> tuple[int, int]:
    where = f"HDU {index} ({hdu.name or 'unnamed'}) of {str(path)!r}"
    if not _is_image(hdu):
        raise ValueError(f"{where} is not an image HDU ({type(hdu).__name__}); pass ext= to choose one")
    naxis = hdu.header["NAXIS"]
    if naxis != 2:
        dims = tuple(hdu.header.get(f"NAXIS{k}") for k in range(naxis, 0, -1))
        raise ValueError(f"{where} must hold 2-D data; it has shape {dims}")
    return int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"])


def _celestial_wcs(header, hdul, index: int, path: Path, wcs: WCS | None = None) -> WCS:
    where = f"HDU {index} ({header.get('EXTNAME', 'unnamed')}) of {str(path)!r}"
    try:
        wcs = WCS(header, fobj=hdul) if wcs is None else wcs
    except Exception as error:  # astropy raises many kinds for broken WCS keywords
        raise ValueError(f"cannot read the WCS of {where}: {error}") from error
    if not wcs.has_celestial:
        raise ValueError(f"{where} has no celestial WCS (no RA/Dec axes in its header)")
    if wcs.naxis != 2:
        wcs = wcs.celestial
    return wcs


@dataclass(frozen=True)
class _HeaderWCS:
    """In a record sent between processes, its astropy WCS: to be made again from the header.

    An `astropy.wcs.WCS` pickles through a FITS header that wcslib and astropy write anew, and
    SIP coefficients and reference values come back changed in their last bits; a gwcs
    pickles its models' parameters as they are.  ``file``: the WCS read lookup tables
    (``D2IMARR``, ``WCSDVARR``) from the file, which it must read again.
    """

    file: bool


def portable(image):
    """``image`` as another process sends it here: its astropy WCS left out (`settled`).

    Any record (`FitsImage`, `skymatch_nb_ui.io.roman.RomanImage`); only a `FitsImage` with
    an `astropy.wcs.WCS` changes.
    """
    if not isinstance(image, FitsImage) or not isinstance(image.wcs, WCS):
        return image
    tables = any(getattr(image.wcs, name, None) is not None
                 for name in ("cpdis1", "cpdis2", "det2im1", "det2im2"))
    return replace(image, wcs=_HeaderWCS(file=tables))


def settled(image):
    """A record sent by another process (`portable`) with its astropy WCS made again here.

    As `open_fits_images` made it: from the science header's cards (`FitsImage.header_text`,
    the cards it was made from), with the file for lookup tables: the same values, bit for
    bit.
    """
    if not isinstance(image, FitsImage) or not isinstance(image.wcs, _HeaderWCS):
        return image
    with _reading(image.path):  # (the file may have changed since the worker read it)
        if image.wcs.file:
            with fits.open(image.path, **_OPEN) as hdul:
                wcs = _celestial_wcs(image.header, hdul, image.ext, image.path)
        else:
            wcs = _celestial_wcs(image.header, None, image.ext, image.path)
    wcs.pixel_shape = image.shape[::-1]
    return replace(image, wcs=wcs)


def _dq_index(hdul, header, dq_ext, shape, path: Path) -> int | None:
    if dq_ext is None:
        return None
    try:
        index = hdul.index_of((dq_ext, header.get("EXTVER", 1)))
    except KeyError:
        return None
    dq = hdul[index]
    where = f"the DQ extension {dq_ext!r} (HDU {index}) of {str(path)!r}"
    if not _is_image(dq) or dq.header["BITPIX"] < 0:
        raise ValueError(f"{where} must be an image of integer flags; got {type(dq).__name__} "
                         f"with BITPIX={dq.header.get('BITPIX')}")
    naxis = dq.header["NAXIS"]
    dq_shape = tuple(int(dq.header[f"NAXIS{k}"]) for k in range(naxis, 0, -1))
    if dq_shape != shape:
        raise ValueError(f"{where} has shape {dq_shape}, unlike the science data's {shape}")
    return index


def _data_layout(hdul, index: int) -> tuple[int, str, tuple[int, ...]] | None:
    """``(offset, dtype, shape)`` of an HDU's data if they can be mapped as they are.

    FITS's unsigned integers (`_unsigned`: JWST's DQ arrays) have the dtype ``">u2"``,
    ``">u4"`` or ``">u8"``: `_read_pixels` maps them and adds the offset.
    """
    hdu = hdul[index]
    kind = compression(hdul, index)
    if kind == "tiles":  # the compressed table's bytes, header and data: read alone
        header, start, span = _offsets(hdul, index)
        return header, TILES, (start - header + span,)
    if not _is_image(hdu) or kind is not None:
        return None
    dtype = _unsigned(hdu.header) if _scaled(hdu.header) else _BITPIX_DTYPES[int(hdu.header["BITPIX"])]
    if dtype is None:
        return None
    return _offsets(hdul, index)[1], dtype, _dims(hdu.header)


#: The unsigned integers of FITS: signed data with ``BZERO = 2**(BITPIX - 1)``.
_UNSIGNED = {16: ">u2", 32: ">u4", 64: ">u8"}


def _unsigned(header) -> str | None:
    """The unsigned dtype of data stored by FITS's convention for them, else None.

    The JWST pipeline writes its DQ arrays (uint32) so: ``BITPIX = 32``, ``BZERO =
    2147483648``.  Other scaled data (a ``BSCALE``, another ``BZERO``, a ``BLANK``) are left
    to astropy.
    """
    bitpix = int(header.get("BITPIX", 0))
    if bitpix not in _UNSIGNED or "BLANK" in header:
        return None
    if header.get("BSCALE", 1) != 1 or header.get("BZERO") != 2 ** (bitpix - 1):
        return None
    return _UNSIGNED[bitpix]


def _read_pixels(path: Path, index: int, layout=None) -> np.ndarray:
    """An HDU's pixels, read-only: mapped from the file unless the data are scaled or compressed.

    Scaled (``BSCALE``/``BZERO``/``BLANK``) or compressed data (`compression`) are decoded
    into memory by astropy, and during a run kept for the next reads (`keeping_decoded`).
    FITS's unsigned integers are mapped and offset into a new array (as astropy would read
    them, without opening the file through astropy again).

    With its ``layout`` (`_data_layout`, found when the file was opened) the data are mapped
    at once, after a check that the file still holds them; else the headers are read again.
    """
    if layout is not None and layout[1] == TILES:
        return _read_tiles(path, index, layout)
    if layout is not None:
        offset, dtype, shape = layout
        needed = np.dtype(dtype).itemsize * int(np.prod(shape))
        try:
            size = os.path.getsize(path)
        except OSError as error:
            raise OSError(f"cannot read HDU {index} of {str(path)!r}: {error}") from error
        if offset + needed > size:
            raise _truncated(path, f"HDU {index}", needed, offset, size)
        if dtype in _UNSIGNED.values():  # stored signed: flipping the top bit adds BZERO
            stored = map_readonly(path, offset, dtype, shape)
            top = np.array(1 << (8 * stored.dtype.itemsize - 1), stored.dtype.newbyteorder("="))
            data = np.bitwise_xor(stored, top)
            data.flags.writeable = False
            return data
        return map_readonly(path, offset, dtype, shape)
    try:
        key = _decoded_key(path, index)
        kept = _kept_decoded(key)
        if kept is not None:
            return kept
        with _quiet(), fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True) as hdul:
            hdu = hdul[index]
            _check_complete(hdul, index, path)
            decoded = _scaled(hdu.header) or not _is_image(hdu) or compression(hdul, index) is not None
            if decoded:  # astropy decompresses, applies BSCALE/BZERO/BLANK: in memory
                data = np.asarray(hdu.data)
            else:
                dtype = np.dtype(_BITPIX_DTYPES[int(hdu.header["BITPIX"])])
                offset, shape = _offsets(hdul, index)[1], _dims(hdu.header)
    except (EOFError, zlib.error) as error:  # a compressed stream cut short or damaged
        raise OSError(
            f"{str(path)!r} is truncated or damaged: decompressing HDU {index} failed ({error}). "
            "Download or write the file again"
        ) from error
    except (OSError, ValueError, TypeError, IndexError, KeyError) as error:
        if str(path) in str(error):
            raise
        raise OSError(f"cannot read HDU {index} of {str(path)!r}: {error}") from error
    if not decoded:
        return map_readonly(path, offset, dtype, shape)
    data.flags.writeable = False
    _keep_decoded(key, data)
    return data


#: The "dtype" of a tile-compressed image's layout (`_data_layout`): (header offset, TILES,
#: (bytes of its header and data,)).
TILES = "tiles"


def _read_tiles(path: Path, index: int, layout) -> np.ndarray:
    """A tile-compressed image's pixels, its table read alone from its offset, decompressed.

    Opening the file and walking to the HDU would read every header before it (a 60-CCD
    camera file: 87 against 5.5 ms for its 45th CCD).  Kept as `_read_pixels` keeps them.
    """
    offset, _, (length,) = layout
    try:
        key = _decoded_key(path, index)
        kept = _kept_decoded(key)
        if kept is not None:
            return kept
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.read(length)
        if len(raw) < length:
            raise _truncated(path, f"HDU {index}", length, offset, offset + len(raw))
        with _quiet():
            data = np.asarray(fits.CompImageHDU(bintable=fits.BinTableHDU.fromstring(raw)).data)
    except (OSError, ValueError, TypeError, KeyError, zlib.error) as error:
        if str(path) in str(error):
            raise
        raise OSError(f"cannot read HDU {index} of {str(path)!r}: {error}") from error
    data.flags.writeable = False
    _keep_decoded(key, data)
    return data


#: Bytes of decoded pixels (decompressed or scaled: what cannot be mapped from the file) kept
#: for the next reads while a run lasts (`keeping_decoded`), the most recently read.  A run
#: reads an image once per task (two to four times with ``compare="differences"``): free for
#: a mapped file, a decompression for a compressed one (16 RICE-compressed 1024 x 1024
#: images, ``match`` with ``compare="differences"``: 1.8-1.95 s without, 0.8-1.1 s with;
#: 0.4 s uncompressed; ``"levels"`` reads each once: 0.53 s either way).  Roman files are
#: not kept: a run's reads of one detector come too far apart (36 detectors of 4088 x 4088,
#: ``compare="differences"``: 172 reads of ``data`` or ``dq``; 170 with this cache kept for
#: them, 144 with 1 GB), and a detector's two arrays are 128 MB.  0 keeps none.
DECODED_CACHE_BYTES = 256 * 2**20
_DECODED: OrderedDict = OrderedDict()  # (path, HDU, inode, mtime, size) -> read-only array
_DECODED_LOCK = threading.Lock()
_decoded_state = {"runs": 0, "bytes": 0}  # runs keeping decoded pixels; bytes kept


@contextmanager
def keeping_decoded():
    """While it lasts, decoded pixels are kept for the next reads (`DECODED_CACHE_BYTES`).

    At the end of the outermost one, every kept array is let go: memory is not held between
    runs.  ``ImageCollection.skymatch`` runs in one (forked workers inherit it).
    """
    with _DECODED_LOCK:
        _decoded_state["runs"] += 1
    try:
        yield
    finally:
        with _DECODED_LOCK:
            _end_run()


def _end_run() -> None:
    """One run keeping decoded pixels less (the lock held); after the last, they are let go."""
    _decoded_state["runs"] -= 1
    if not _decoded_state["runs"]:
        _DECODED.clear()
        _decoded_state["bytes"] = 0


_held: dict = {"token": None}  # the run a worker keeps decoded pixels for (`held_decoded`)


@contextmanager
def held_decoded(token: str):
    """In a worker of a pool or a cluster, a run's decoded pixels kept between its tasks.

    Such a worker does not see a run begin or end (`keeping_decoded`), only its tasks, which
    carry the run's token (`engine._execute.WORKER_CONTEXTS`): the pixels are kept from the
    run's first task here until the run is over here (`engine._execute.WORKER_RUN_ENDS`: a
    task of another run comes, or `engine._execute.WORKER_IDLE_SECONDS` after the last of
    its tasks here finished).  600 tile-compressed camera CCDs through ``skymatch-nb``
    (``compare="differences"``, which reads an image once per pair): its two pool workers
    decompressed an image at every read, 8,479 decompressions for 600 images, and the run
    took 33.9 s against 14.0 s in one process.
    """
    with _DECODED_LOCK:
        if _held["token"] != token:
            if _held["token"] is not None:
                _end_run()
            _held["token"] = token
            _decoded_state["runs"] += 1
    yield


def _let_go_held() -> None:
    """The held run is over in this worker (`held_decoded`): its pixels go with it."""
    with _DECODED_LOCK:
        if _held["token"] is not None:
            _held["token"] = None
            _end_run()


_execute.WORKER_CONTEXTS.append(held_decoded)
_execute.WORKER_RUN_ENDS.append(_let_go_held)


def _kept_decoded(key: tuple) -> np.ndarray | None:
    with _DECODED_LOCK:
        data = _DECODED.get(key)
        if data is not None:
            _DECODED.move_to_end(key)
        return data


def _decoded_key(path: Path, index: int) -> tuple:
    """Which pixels: the file as it is now (a file written again is read again)."""
    stat = os.stat(path)
    return os.path.realpath(path), index, stat.st_ino, stat.st_mtime_ns, stat.st_size


def _keep_decoded(key: tuple, data: np.ndarray) -> None:
    limit = DECODED_CACHE_BYTES
    with _DECODED_LOCK:
        if not _decoded_state["runs"] or data.nbytes > limit or key in _DECODED:
            return
        _DECODED[key] = data
        _decoded_state["bytes"] += data.nbytes
        while _decoded_state["bytes"] > limit:
            _decoded_state["bytes"] -= _DECODED.popitem(last=False)[1].nbytes


_BITPIX_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _scaled(header) -> bool:
    return header.get("BITPIX", 0) > 0 and any(k in header for k in ("BSCALE", "BZERO", "BLANK"))


def _float_copy(data: np.ndarray) -> np.ndarray:
    """A native-endian float copy: float32 stays float32, anything else becomes float64."""
    single = data.dtype.kind == "f" and data.dtype.itemsize == 4
    return np.array(data, dtype=np.float32 if single else np.float64)


def parse_dqbits(dqbits, *, flags=JWST_DQ_FLAGS) -> int | None:
    """The DQ flags to ignore as an integer bit mask (see `FitsImage.mask`); None ignores all.

    Flag names are looked up in ``flags`` (default `JWST_DQ_FLAGS`; Roman files use
    `ROMAN_DQ_FLAGS`).  ``"auto"`` (each instrument's default) is resolved by the images, not
    here.

    Raises
    ------
    ValueError
        Naming ``dqbits`` for a value that is not valid flag syntax.
    TypeError
        For a value that is neither an int, a str nor None.

    Examples
    --------
    >>> parse_dqbits("4,16"), parse_dqbits("JUMP_DET+OUTLIER"), parse_dqbits(0)
    (20, 20, 0)
    >>> parse_dqbits("~DO_NOT_USE+NON_SCIENCE") == ~(1 + 512)
    True
    """
    from astropy.nddata.bitmask import interpret_bit_flags

    if dqbits is None:
        return None
    if isinstance(dqbits, bool) or not isinstance(dqbits, (numbers.Integral, str)):
        raise TypeError(f"dqbits must be an int or a str of DQ flags (or None); got {dqbits!r}")
    if isinstance(dqbits, numbers.Integral) and dqbits < 0:
        raise ValueError(f"dqbits must be a non-negative sum of DQ flags; got {dqbits}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            bits = interpret_bit_flags(dqbits, flag_name_map=flags)
    except (ValueError, TypeError, KeyError, AttributeError, UserWarning) as error:
        raise ValueError(
            "dqbits must be an integer sum of DQ flags to ignore or a string such as '4,16', "
            f"'4+16', 'JUMP_DET,OUTLIER', '~DO_NOT_USE+NON_SCIENCE' or 'auto'; got {dqbits!r} "
            f"({error})"
        ) from None
    return None if bits is None else int(bits)


def check_dqbits(dqbits) -> None:
    """Raise now, naming ``dqbits``, for a value no image could use (``"auto"`` is valid)."""
    if isinstance(dqbits, str) and dqbits == "auto":
        return
    try:
        parse_dqbits(dqbits)
    except ValueError:
        parse_dqbits(dqbits, flags=ROMAN_DQ_FLAGS)  # Roman-only names are fine too


# -- units -----------------------------------------------------------------------------------
def check_units(images: Sequence[FitsImage], *, units: Sequence | None = None) -> None:
    """Warn with `MixedUnitsWarning` when the images' BUNIT are not all the same.

    Sky levels are compared in each image's own unit, so matching images in different
    units gives meaningless offsets.  A missing BUNIT counts as a unit of its own.
    ``units``: the images' units as they are compared, when not their BUNIT (count rates:
    `count_rates`).  The warning names the first line outside this package that led here.

    Examples
    --------
    >>> check_units([open_fits_image(p) for p in find_fits("data/*.fits")])  # doctest: +SKIP
    """
    by_unit: dict = {}
    units = [image.meta["bunit"] for image in images] if units is None else units
    for image, unit in zip(images, units):
        by_unit.setdefault(unit, []).append(image.path.name)
    if len(by_unit) < 2:
        return
    parts = [f"{'no BUNIT' if unit is None else repr(unit)} ({and_more(files)})"
             for unit, files in by_unit.items()]
    known = {str(unit).strip().upper() for unit in by_unit if unit is not None}
    rates = any(unit in COUNT_UNITS and f"{unit}/S" in known for unit in known)
    hint = ("; rates=True (--rates yes) compares those in counts as count rates" if rates
            else "")
    warnings.warn(
        "the images are in different units: " + "; ".join(parts)
        + ". Their sky levels are not comparable; convert them to one unit first" + hint,
        MixedUnitsWarning,
        stacklevel=caller_stacklevel(),
    )


#: `check_pixel_areas`: pixel areas within this ratio are one pixel scale (the chips of one
#: camera differ by a few percent through their distortion's linear part).
PIXEL_AREA_SPREAD = 1.1


def check_pixel_areas(images: Sequence[FitsImage], *, units: Sequence | None = None) -> None:
    r"""Warn with `MixedUnitsWarning` when images in counts per pixel differ in pixel area.

    A sky in counts (or count rates: `COUNT_UNITS`, with or without ``/S``) is a sky per
    pixel: it grows with the pixel's area on the sky, so images of different pixel scales
    (ACS/WFC's 0.05 arcsec pixels beside WFC3/UVIS's 0.04: 1.6 times the area) do not agree
    on it where they overlap, though the sky does.  AstroDrizzle compares such images per
    square arcsecond (it divides by ``IDCSCALE``\ **2); the skies here are compared per
    pixel, as they are.  Areas from each WCS's linear part at its reference pixel; up to
    `PIXEL_AREA_SPREAD` (largest / smallest) they are one pixel scale.  Images in
    a surface brightness (MJy/sr, as JWST and Roman files are) and images without a FITS WCS
    are left out.  The warning names the first line outside this package that led here.

    Examples
    --------
    >>> check_pixel_areas(open_fits_images("j8xi01_flc.fits") + open_fits_images("ib1f02_flc.fits"))
    ... # doctest: +SKIP
    MixedUnitsWarning: images in counts per pixel have pixels of different areas on the sky ...
    """
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_area

    units = [image.meta["bunit"] for image in images] if units is None else units
    areas = {}
    for image, unit in zip(images, units):
        base = str(unit or "").strip().upper().removesuffix("/S").removesuffix("/SEC")
        if base in COUNT_UNITS and isinstance(image.wcs, WCS) and image.wcs.has_celestial:
            areas[image.path.name] = proj_plane_pixel_area(image.wcs.celestial) * 3600.0**2
    if len(areas) < 2 or max(areas.values()) <= PIXEL_AREA_SPREAD * min(areas.values()):
        return
    small, large = min(areas, key=areas.get), max(areas, key=areas.get)
    warnings.warn(
        f"images in counts per pixel have pixels of different areas on the sky: "
        f"{areas[small]:.4g} arcsec^2 ({small}) to {areas[large]:.4g} arcsec^2 ({large}). "
        "A sky per pixel grows with the pixel's area, so their skies are not comparable as "
        "they are (AstroDrizzle compares them per arcsec^2); match the images of each pixel "
        "scale apart, or convert them to a surface brightness first",
        MixedUnitsWarning,
        stacklevel=caller_stacklevel(),
    )


#: ``BUNIT`` values of counts, not rates (upper case): AstroDrizzle's sky matching compares
#: such images as count rates (`count_rates`).
COUNT_UNITS = frozenset({"ELECTRONS", "ELECTRON", "COUNTS", "COUNT", "DN", "ADU"})


def check_rates(rates) -> None:
    """Refuse a ``rates`` that is not "auto", True or False (`count_rates`)."""
    if not (rates == "auto" if isinstance(rates, str) else isinstance(rates, (bool, np.bool_))):
        raise ValueError(f"rates must be 'auto', True or False; got {rates!r}")


def count_rates(images: Sequence, rates="auto") -> list[float | None]:
    """Per image, the exposure time its counts are divided by to compare count rates, or None.

    Images in counts (`COUNT_UNITS`: HST's ACS and WFC3/UVIS ``_flc`` are in ``ELECTRONS``)
    measure a sky proportional to their exposure time, so the skies of exposures of different
    lengths are not comparable as they are: AstroDrizzle's sky matching compares count rates.
    ``rates="auto"`` divides them by their ``EXPTIME`` when those differ, True always, False
    never (warning, with `MixedUnitsWarning`, when they differ).  Other images: None.
    The warning names the first line outside this package that led here.

    Raises
    ------
    ValueError
        When images in counts are to be divided and one has no positive ``EXPTIME``.

    Examples
    --------
    >>> count_rates(open_fits_images("j8xi01_flc.fits") + open_fits_images("j8xi02_flc.fits"))
    ... # doctest: +SKIP
    [400.0, 400.0, 1200.0, 1200.0]
    """
    check_rates(rates)
    counts = [k for k, image in enumerate(images)
              if str(image.meta.get("bunit") or "").strip().upper() in COUNT_UNITS]
    times = {k: images[k].meta.get("exptime") for k in counts}
    differ = len(set(times.values())) > 1
    if not counts or rates is False or (rates == "auto" and not differ):
        if counts and differ:
            spread = sorted(t for t in times.values() if t is not None)
            warnings.warn(
                f"images in counts ({images[counts[0]].meta['bunit']}) with different exposure "
                f"times ({spread[0]:g} to {spread[-1]:g} s) are compared as counts (rates=False): "
                "their skies are not comparable; rates='auto' compares count rates, as "
                "AstroDrizzle does", MixedUnitsWarning, stacklevel=caller_stacklevel())
        return [None] * len(images)
    missing = [images[k].path.name for k, t in times.items() if not t or t <= 0]
    if missing:
        raise ValueError(
            f"images in counts are compared as count rates, which needs their exposure time "
            f"(EXPTIME); {and_more(missing)} have none. Pass rates=False to compare the counts "
            "as they are"
        )
    return [float(times[k]) if k in times else None for k in range(len(images))]


# -- writing ---------------------------------------------------------------------------------
@contextmanager
def atomic_path(dest, *, overwrite: bool = False, same_name: bool = False):
    """Yield a temporary path next to ``dest``; on success move it onto ``dest`` atomically.

    The temporary name is ``.tmp-skymatch-<host>-<pid>-<token>-<name>`` (see
    `remove_leftovers` for why) and ends with ``dest``'s name, so writers that choose a format from the
    suffix see the right one; with ``same_name`` it *is* ``dest``'s name, in a temporary
    directory next to ``dest`` (for writers that record the file name inside the file, as
    ``stdatamodels`` and ``roman_datamodels`` do).  On any error the temporary file is
    removed and ``dest`` is left as it was.  The directory must exist.

    Raises
    ------
    FileExistsError
        When ``dest`` exists and not ``overwrite`` (checked before and after writing).
    FileNotFoundError
        When ``dest``'s directory does not exist.

    Examples
    --------
    >>> with atomic_path("results.ecsv", overwrite=True) as tmp:  # doctest: +SKIP
    ...     table.write(tmp)
    """
    dest = Path(dest)
    _refuse_existing(dest, overwrite)
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"the directory of {str(dest)!r} does not exist; create it first")
    token = temp_prefix()  # recognisable: see io._temp (remove_leftovers)
    folder = dest.parent / token if same_name else None
    if folder is not None:
        folder.mkdir()
    tmp = folder / dest.name if folder is not None else dest.parent / f"{token}-{dest.name}"
    try:
        yield tmp
        _refuse_existing(dest, overwrite)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


#: The gzip level of FITS files written with a ``.gz`` name (copies of ``.fits.gz`` files):
#: 1, as CFITSIO writes them.  On a noise-dominated 1024 x 1024 float32 image it is 1%
#: larger than levels 6 and 9 (astropy's), and 4.7x faster (0.09 against 0.40 s).
GZIP_LEVEL = 1


@contextmanager
def output_stream(tmp, dest):
    """A binary stream that writes the file ``tmp``, gzip-compressed for a ``.gz`` ``dest``.

    At `GZIP_LEVEL`; the gzip header names ``dest``, not the temporary file.

    Examples
    --------
    >>> with atomic_path("out/a.fits.gz") as tmp, output_stream(tmp, "out/a.fits.gz") as f:
    ...     hdul.writeto(f)  # doctest: +SKIP
    """
    with open(tmp, "wb") as raw:
        if not Path(dest).name.lower().endswith(".gz"):
            yield raw
            return
        with gzip.GzipFile(filename=Path(dest).name, mode="wb", fileobj=raw,
                           compresslevel=GZIP_LEVEL) as stream:
            yield stream


def write_hdus(hdul, tmp, dest) -> None:
    """``hdul.writeto(tmp)``, gzip-compressed (`output_stream`) when ``dest`` is a ``.gz``."""
    if Path(dest).name.lower().endswith(".gz"):
        with output_stream(tmp, dest) as stream:
            hdul.writeto(stream)
    else:
        hdul.writeto(tmp)


def copy_destinations(sources, directory, *, overwrite: bool = False) -> list[Path]:
    """Where copies of ``sources`` go in ``directory`` (same file names), checked up front.

    Lets a caller refuse a bad output before a long computation rather than after it.

    Raises
    ------
    ValueError
        When two sources have the same file name, or a destination is its own source
        (``directory`` is the inputs' directory).
    FileExistsError
        When destinations exist and not ``overwrite`` (all of them are named).

    Examples
    --------
    >>> copy_destinations(["in/a.fits", "in/b.fits"], "out")  # doctest: +SKIP
    [PosixPath('out/a.fits'), PosixPath('out/b.fits')]
    """
    directory = Path(directory)
    targets = [directory / Path(source).name for source in sources]
    names = [t.name for t in targets]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(
            f"several inputs have the file name(s) {clashes}, so their copies would overwrite "
            "each other in one output directory"
        )
    own = [str(t) for s, t in zip(sources, targets) if _same_file(Path(s), t)]
    if own:
        raise ValueError(
            f"the output directory {str(directory)!r} holds the inputs themselves ({own[0]}"
            f"{', ...' if len(own) > 1 else ''}); choose another directory"
        )
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{and_more(existing)} exist(s); pass overwrite=True to replace them")
    return targets


def _refuse_existing(dest: Path, overwrite: bool) -> None:
    if not overwrite and dest.exists():
        raise FileExistsError(f"{str(dest)!r} exists; pass overwrite=True to replace it")


def write_fits_copy(
    image: FitsImage,
    dest,
    *,
    sky: float,
    valid: bool,
    method: str,
    subtract: bool,
    overwrite: bool = False,
) -> Path:
    """Copy an image's whole file to ``dest``, recording (and optionally subtracting) its sky.

    The one-image form of `write_fits_file` (other chips of the file are copied unchanged).

    Examples
    --------
    >>> write_fits_copy(image, "out/a_cal.fits", sky=0.31, valid=True,
    ...                 method="global+match", subtract=True)  # doctest: +SKIP
    PosixPath('out/a_cal.fits')
    """
    return write_fits_file([image], dest, skies=[sky], valid=[valid], method=method,
                           subtract=subtract, overwrite=overwrite)


def write_fits_file(
    images: Sequence[FitsImage],
    dest,
    *,
    skies: Sequence[float],
    valid: Sequence[bool],
    method: str,
    subtract: bool,
    overwrite: bool = False,
    planes: Sequence | None = None,
) -> Path:
    """Copy a FITS file to ``dest``, recording (and optionally subtracting) the sky of its chips.

    Every HDU is copied.  In each science HDU of ``images`` (chips of one file), when
    ``subtract`` and its sky is valid the data become ``data - sky`` (float32 data stay
    float32; other types, scaled integers included, become float64), and the header gets the
    JWST pipeline's keywords:

    - ``BKGLEVEL``: the sky (omitted, and removed if the source had it, when not valid:
      FITS headers cannot hold NaN);
    - ``BKGSUB``: whether the sky was subtracted from the data (False when not valid);
    - ``BKGMETH``: ``method`` (``method+plane`` for a plane);
    - with ``planes``: ``BKGMODEL = 'plane'``, ``BKGSLPX``, ``BKGSLPY``, ``BKGXREF``,
      ``BKGYREF`` (`PLANE_COMMENTS`; ``BKGLEVEL`` is then the plane at the chip's centre,
      and the plane is what is subtracted).

    Chips that are not subtracted keep their data byte for byte (scaled integers stay
    scaled integers; tile-compressed ones their compressed bytes).  HST files also get
    ``MDRIZSKY`` in each chip: the sky that drizzling is still to subtract (the sky, or 0
    once it is subtracted from the data); drizzled HST images (a ``WHT`` map, no DQ) do not:
    they are drizzling's output.  JWST files
    get the keywords in the primary header, where the JWST pipeline reads them, and
    ``S_SKYMAT``.  CHECKSUM / DATASUM of changed HDUs, if present, are recomputed.  The
    source file is only ever opened read-only.  The copy is written to a temporary file in
    ``dest``'s directory and moved into place, so a failure leaves no partial file.

    Parameters
    ----------
    images : sequence of FitsImage
        Chips of one file (from `open_fits_images`).
    dest : str or Path
        The file to write.  Its directory must exist (it is not created).
    skies : sequence of float
        The sky level of each chip.
    valid : sequence of bool
        Whether each sky is meaningful.
    method : str
        The sky method, e.g. ``"global+match"``.
    subtract : bool
        Subtract the skies from the data (where valid).
    overwrite : bool
        Replace ``dest`` if it exists.
    planes : sequence of (float, float), optional
        Per chip, the sky plane's (slope_x, slope_y) in data units per pixel (``skies`` are
        then the planes' levels at the chips' centres); None: constant skies.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    ValueError
        When ``dest`` is the source file, or the images are not of one file.
    FileExistsError
        When ``dest`` exists and not ``overwrite``.
    FileNotFoundError
        When ``dest``'s directory does not exist.

    Examples
    --------
    >>> chips = open_fits_images("j8xi01abq_flc.fits")  # doctest: +SKIP
    >>> write_fits_file(chips, "out/j8xi01abq_flc.fits", skies=[31.5, 31.5],
    ...                 valid=[True, True], method="match", subtract=True)  # doctest: +SKIP
    PosixPath('out/j8xi01abq_flc.fits')
    """
    dest = Path(dest)
    source = _one_source(images)
    if _same_file(source, dest):
        raise ValueError(
            f"refusing to write over the source file {str(source)!r}; choose another "
            "destination (e.g. another directory)"
        )
    kind = images[0].kind
    with atomic_path(dest, overwrite=overwrite) as tmp:
        # Tile-compressed images stay their compressed tables (copied byte for byte) unless
        # subtracted (`_subtracted_tiles`).
        with _quiet(), fits.open(source, mode="denywrite", memmap=True, lazy_load_hdus=False,
                                 do_not_scale_image_data=True, disable_image_compression=True) as hdul:
            _check_whole(hdul, source, after=False)  # (a file cut short since it was opened)
            for index in range(len(hdul)):
                _check_complete(hdul, index, source)
            _check_whole(hdul, source, after=True)
            for k, (image, sky, good) in enumerate(zip(images, skies, valid)):
                hdu = hdul[image.ext]
                plane = None if planes is None else planes[k]
                subtracted = bool(subtract and good)
                if subtracted and compression(hdul, image.ext) == "tiles":
                    sums = {key for key in ("CHECKSUM", "DATASUM") if key in hdu.header}
                    hdu = hdul[image.ext] = _subtracted_tiles(hdu, sky, plane)
                    if sums:  # (the image's: ZHECKSUM, ZDATASUM in its table)
                        hdu.add_checksum() if "CHECKSUM" in sums else hdu.add_datasum()
                elif subtracted:
                    out = _unscaled_float(hdu.data, hdu.header)
                    out -= sky_array(sky, plane, out.shape, out.dtype)
                    for key in ("BSCALE", "BZERO", "BLANK"):
                        hdu.header.remove(key, ignore_missing=True)
                    hdu.data = out
                where = hdul[0].header if kind == "jwst" else hdu.header
                _set_bkg_keywords(where, sky=sky, valid=good, method=plane_method(method, plane),
                                  subtracted=subtracted)
                set_plane_keywords(where, plane, image.shape, good)
                if kind == "hst" and image.weight_ext is None:  # (not for drizzled images)
                    from . import hst

                    hst.set_drizzle_sky(hdu.header, sky=sky, valid=good, subtracted=subtracted)
                if kind == "jwst":
                    hdul[0].header["S_SKYMAT"] = ("COMPLETE" if good else "SKIPPED",
                                                  "Sky Background Equalization or Subtraction")
                _update_checksums(hdu)
            _update_checksums(hdul[0])
            write_hdus(hdul, tmp, dest)
    return dest


def _subtracted_tiles(table, sky: float, plane) -> fits.CompImageHDU:
    """A tile-compressed image with its sky subtracted, compressed again.

    ``table``: the image's compressed table, as read with ``disable_image_compression`` (the
    file open already: not opened and walked again).  Floats that the source quantized
    (fpack's lossy default) are quantized again as it did: its algorithm, tiles, quantization
    level, method and dither seed (a level q adds noise of ~1 / (q sqrt(12)) of each tile's,
    in quadrature: +0.26% at fpack's default q = 4, +0.02% at astropy's 16).  Data the source
    stored losslessly (integers; floats without quantization) are stored losslessly: as
    floats by ``GZIP_2`` (the lossless compression FITS has for floats) in the source's tiles.
    """
    tiles = fits.CompImageHDU(bintable=table, do_not_scale_image_data=True)
    out = _unscaled_float(tiles.data, tiles.header)
    out -= sky_array(sky, plane, out.shape, out.dtype)
    header = tiles.header.copy()
    quantized = int(header["BITPIX"]) < 0 and tiles.quantize_level != 0
    if quantized:
        options = dict(
            compression_type=tiles.compression_type, quantize_level=tiles.quantize_level,
            quantize_method=tiles.quantize_method, dither_seed=tiles.dither_seed,
            hcomp_scale=tiles.hcomp_scale, hcomp_smooth=tiles.hcomp_smooth,
        )
    else:
        options = dict(compression_type="GZIP_2", quantize_level=0.0)
    tile_shape = tuple(int(n) for n in tiles.tile_shape)
    for key in ("BSCALE", "BZERO", "BLANK"):
        header.remove(key, ignore_missing=True)
    return fits.CompImageHDU(out, header, tile_shape=tile_shape, **options)


def _one_source(images) -> Path:
    paths = {os.path.realpath(image.path) for image in images}
    if len(paths) != 1:
        raise ValueError(
            f"write_fits_file writes the chips of one file; got images of {len(paths)} files"
        )
    return images[0].path


def _unscaled_float(raw: np.ndarray, header) -> np.ndarray:
    """Pixel values of raw (unscaled) data: BSCALE/BZERO applied, BLANK as NaN; a new array."""
    out = _float_copy(raw)
    if raw.dtype.kind in "iu":
        blank = header.get("BLANK")
        scale, zero = header.get("BSCALE", 1.0), header.get("BZERO", 0.0)
        if scale != 1:
            out *= scale
        if zero != 0:
            out += zero
        if blank is not None:
            out[raw == blank] = np.nan
    return out


def write_array_fits(
    dest,
    data: np.ndarray,
    wcs,
    *,
    sky: float,
    valid: bool,
    method: str,
    subtract: bool,
    overwrite: bool = False,
    plane=None,
) -> Path:
    """Write an in-memory image as a one-HDU FITS file, with the keywords of `write_fits_copy`.

    ``plane``: the sky plane's (slope_x, slope_y), as in `write_fits_file`.

    ``wcs`` is written when it is an `astropy.wcs.WCS` (distortions as SIP/lookup keywords
    when possible); other WCS types (gwcs) are not written, with a `SkyMatchWarning`.
    Atomic and refusing to overwrite, as `write_fits_copy`.

    Examples
    --------
    >>> write_array_fits("out/img00.fits", image, wcs, sky=100.0, valid=True,
    ...                  method="match", subtract=True)  # doctest: +SKIP
    PosixPath('out/img00.fits')
    """
    dest = Path(dest)
    data = np.asarray(data)
    subtracted = bool(subtract and valid)
    if subtracted:
        data = _float_copy(data)
        data -= sky_array(sky, plane, data.shape, data.dtype)
    header = fits.Header()
    if isinstance(wcs, WCS):
        header.update(wcs.to_header(relax=True))
    else:
        warnings.warn(
            f"{str(dest)!r}: the WCS ({type(wcs).__name__}) cannot be written as FITS keywords; "
            "the file has none",
            SkyMatchWarning,
            stacklevel=caller_stacklevel(),
        )
    _set_bkg_keywords(header, sky=sky, valid=valid, method=plane_method(method, plane),
                      subtracted=subtracted)
    set_plane_keywords(header, plane, data.shape, valid)
    with atomic_path(dest, overwrite=overwrite) as tmp:
        write_hdus(fits.HDUList([fits.PrimaryHDU(data, header)]), tmp, dest)
    return dest


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():  # an in-memory image's "source" name is no file
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _set_bkg_keywords(header, *, sky: float, valid: bool, method: str, subtracted: bool) -> None:
    if valid:
        header["BKGLEVEL"] = (float(sky), BKG_COMMENTS["BKGLEVEL"])
    else:
        header.remove("BKGLEVEL", ignore_missing=True, remove_all=True)
    header["BKGSUB"] = (bool(subtracted), BKG_COMMENTS["BKGSUB"])
    header["BKGMETH"] = (str(method), BKG_COMMENTS["BKGMETH"])


def _update_checksums(hdu) -> None:
    if "CHECKSUM" in hdu.header:
        hdu.add_checksum()
    elif "DATASUM" in hdu.header:
        hdu.add_datasum()

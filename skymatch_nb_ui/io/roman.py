"""Roman WFI level-2 images (ASDF files) as romancal reads and writes them.

Read and written with ``roman_datamodels`` (``pip install skymatch-nb-ui[roman]``):

- **WCS**: ``meta.wcs``, the file's gwcs (with its bounding box; the engine evaluates it
  without the box).
- **DQ**: the ``dq`` array; romancal's skymatch default ``dqbits`` is ``"~DO_NOT_USE"``,
  with Roman's own flag names (`skymatch_nb_ui.io.ROMAN_DQ_FLAGS`).
- **Unit**: romancal's level-2 files are in DN/s until its ``flux`` step (the first of its
  mosaic pipeline, run before its skymatch) multiplies them by
  ``meta.photometry.conversion_megajanskys`` into MJy/sr and marks ``meta.cal_step.flux``
  ``COMPLETE``: the unit (``bunit`` of the table) is read from that mark.  DN/s images whose
  conversions differ are not comparable (`check_conversions` warns).
- **Exposure**: ``meta.group_id`` when present, else ``meta.observation.observation_id``
  (romancal's ``ModelLibrary`` rule).  romancal's skymatch gives every detector its own sky,
  so that is the default here too; ``group_by="exposure"`` groups the detectors.
- **Results**, as romancal's ``SkyMatchStep`` records them: ``meta.background.level``,
  ``.subtracted``, ``.method`` and ``meta.cal_step.skymatch`` (``COMPLETE``, or ``SKIPPED``
  without a valid sky, when ``level`` is null and ``subtracted`` false).

Pixels are read when asked (`RomanImage.data`), into memory (ASDF blocks may be
compressed), and no file stays open.
"""

from __future__ import annotations

import warnings
from collections import UserList
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine._validate import and_more, caller_stacklevel
from ..engine.packed import collector_paused, packed_or_copy

__all__ = ["DEFAULT_DQBITS", "DN_PER_S", "MJY_PER_SR", "RomanImage", "check_conversions",
           "data_unit", "open_roman_image", "write_copy"]

#: romancal's skymatch default: only DO_NOT_USE pixels are bad.
DEFAULT_DQBITS = "~DO_NOT_USE"
INSTALL_HINT = "pip install skymatch-nb-ui[roman]"
#: The units of ``data`` before and after romancal's ``flux`` step.
DN_PER_S, MJY_PER_SR = "DN/s", "MJy/sr"
#: The value roman_datamodels writes for a metadata number that is not known.
UNKNOWN = -999999


def _datamodels():
    try:
        import roman_datamodels.datamodels as rdm
    except ImportError as error:
        raise ImportError(
            f"reading Roman ASDF files needs roman_datamodels: {INSTALL_HINT}"
        ) from error
    return rdm


@dataclass(frozen=True, eq=False)
class RomanImage:
    """One Roman level-2 image: where it is and what its metadata say, without its pixels.

    Build one with `open_roman_image`.

    Attributes
    ----------
    path : Path
        The ASDF file.
    shape : (int, int)
        (ny, nx) of ``data``.
    wcs : PackedWCS
        ``meta.wcs``, packed (`~skymatch_nb_ui.engine.packed.PackedWCS`: ~14 KB instead of
        ~380 KB of Python objects for a detector's gwcs); it behaves as the gwcs, and
        ``wcs.unpack()`` gives a ``gwcs.WCS`` of one's own.
    header : dict
        The file's ``meta`` as plain data (no WCS), for `keyword` and callables of
        ``group_by``.
    exposure_id : str or None
        ``meta.group_id`` or ``meta.observation.observation_id``.
    has_dq : bool
        Whether the file has a ``dq`` array.
    """

    path: Path
    shape: tuple[int, int]
    wcs: object
    header: dict = field(repr=False)
    exposure_id: str | None = None
    has_dq: bool = True
    kind: str = "roman"
    ext: int = -1
    label: str = "data"
    default_dqbits: str = DEFAULT_DQBITS

    @property
    def pixels_key(self) -> tuple:
        """Which pixels and mask this image reads (the file), in any process."""
        return ("roman", str(self.path), self.has_dq)

    def data(self) -> np.ndarray:
        """The science pixels (``data``), read into a new read-only array."""
        return _read(self.path, "data")

    def mask(self, dqbits=DEFAULT_DQBITS) -> np.ndarray | None:
        """Good-pixel mask (True = good) from ``dq``, ignoring the flags ``dqbits``.

        ``dqbits`` as `skymatch_nb_ui.io.FitsImage.mask`, with Roman's flag names;
        ``"auto"``: romancal's default ``"~DO_NOT_USE"``.
        """
        from astropy.nddata import bitfield_to_boolean_mask

        from ._fits import ROMAN_DQ_FLAGS, parse_dqbits

        if isinstance(dqbits, str) and dqbits == "auto":
            dqbits = self.default_dqbits
        bits = parse_dqbits(dqbits, flags=ROMAN_DQ_FLAGS)
        if not self.has_dq:
            return None
        return bitfield_to_boolean_mask(_read(self.path, "dq"), ignore_flags=bits,
                                        good_mask_value=True, dtype=bool)

    def keyword(self, name: str):
        """A metadata value by its dotted path in ``meta``, e.g. ``"observation.visit"``."""
        node = self.header
        for part in name.removeprefix("meta.").split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"{name!r} is not in the metadata (meta) of {str(self.path)!r}")
            node = node[part]
        return node

    @property
    def meta(self) -> dict:
        """Selected metadata (the columns of `skymatch_nb_ui.ImageCollection.table`)."""
        meta = self.header
        instrument = meta.get("instrument", {})
        exposure = meta.get("exposure", {})
        exptime = exposure.get("exposure_time")
        return {
            "bunit": data_unit(meta),
            "exptime": None if exptime in (None, UNKNOWN) else float(exptime),
            "filter": _text(instrument.get("optical_element")),
            "detector": _text(instrument.get("detector")),
            "instrument": _text(instrument.get("name")),
            "date_obs": _text(exposure.get("start_time")),
            "exposure": self.exposure_id,
        }


def data_unit(meta: dict) -> str | None:
    """The unit of a Roman image's ``data`` from its metadata (``meta`` as a plain tree).

    ``"MJy/sr"`` once romancal's ``flux`` step has run (``meta.cal_step.flux`` is
    ``COMPLETE``), ``"DN/s"`` before; None when the file has no ``meta.cal_step``.

    Examples
    --------
    >>> data_unit({"cal_step": {"flux": "COMPLETE"}}), data_unit({"cal_step": {"flux": "INCOMPLETE"}})
    ('MJy/sr', 'DN/s')
    """
    steps = meta.get("cal_step")
    if not isinstance(steps, dict):
        return None
    return MJY_PER_SR if steps.get("flux") == "COMPLETE" else DN_PER_S


def _conversion(meta: dict) -> float | None:
    """``meta.photometry.conversion_megajanskys``, or None when it is not known."""
    photometry = meta.get("photometry")
    value = photometry.get("conversion_megajanskys") if isinstance(photometry, dict) else None
    if value is None or not np.isfinite(value) or value == UNKNOWN or value <= 0:
        return None
    return float(value)


def check_conversions(images) -> None:
    """Warn with `MixedUnitsWarning` when Roman images in DN/s have different conversions.

    A sky of one surface brightness gives different DN/s on detectors with different
    photometric conversions (``meta.photometry.conversion_megajanskys``), so their sky levels
    are not comparable, as images in different units are not (`check_units`).  romancal's
    mosaic pipeline runs its ``flux`` step (into MJy/sr) before its skymatch for this reason.
    Conversions that agree to 6 significant digits count as the same; images in MJy/sr, of
    other kinds, or whose conversion is not known are left out.  The warning names the first
    line outside this package that led here.

    Examples
    --------
    >>> check_conversions(open_images(["wfi01_cal.asdf", "wfi02_cal.asdf"]))  # doctest: +SKIP
    """
    from ._fits import MixedUnitsWarning

    by_factor: dict = {}
    for image in images:
        if getattr(image, "kind", None) != "roman" or image.meta["bunit"] != DN_PER_S:
            continue
        factor = _conversion(image.header)
        if factor is not None:
            by_factor.setdefault(float(f"{factor:.6g}"), []).append(image.path.name)
    if len(by_factor) < 2:
        return
    parts = [f"{factor:g} ({and_more(files)})" for factor, files in sorted(by_factor.items())]
    warnings.warn(
        "the Roman images are in DN/s (meta.cal_step.flux is not COMPLETE) with different "
        "photometric conversions (meta.photometry.conversion_megajanskys: " + "; ".join(parts)
        + "): one sky gives different DN/s on them, so their sky levels are not comparable. "
        "Apply romancal's flux step first (romancal.flux.FluxStep, as its mosaic pipeline does "
        "before skymatch)",
        MixedUnitsWarning,
        stacklevel=caller_stacklevel(),
    )


def _text(value):
    return None if value is None else str(value).strip()


def open_roman_image(path) -> RomanImage:
    """Read a Roman level-2 ASDF file's metadata and WCS (not its pixels).

    Raises
    ------
    ImportError
        When roman_datamodels is not installed (with the install hint).
    ValueError
        Naming the file when it is not a 2-D Roman image with a WCS.

    Examples
    --------
    >>> image = open_roman_image("r0000101001001001001_0001_wfi01_cal.asdf")  # doctest: +SKIP
    >>> image.shape, image.meta["detector"]  # doctest: +SKIP
    ((4088, 4088), 'WFI01')
    """
    rdm = _datamodels()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    try:
        with warnings.catch_warnings(), collector_paused(), rdm.open(path) as model:
            warnings.simplefilter("ignore")  # version-migration chatter of old files
            shape = tuple(int(n) for n in model.data.shape)
            wcs = packed_or_copy(model.meta.wcs)  # (while the file is open: lazy arrays)
            meta = _tree(model.meta)
            has_dq = "dq" in model
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise ValueError(f"cannot read Roman file {str(path)!r}: {error}") from error
    if len(shape) != 2 or wcs is None:
        raise ValueError(
            f"{str(path)!r} is not a 2-D Roman image with a WCS (data shape {shape}, "
            f"meta.wcs {'missing' if wcs is None else 'present'})"
        )
    group = meta.get("group_id") or meta.get("observation", {}).get("observation_id")
    return RomanImage(path, shape, wcs, meta, exposure_id=None if group in (None, "?") else str(group),
                      has_dq=has_dq)


def _tree(node):
    """A roman_datamodels node as nested dicts and lists (WCS and arrays left out).

    Sequences of any kind become lists: asdf's lazy ``AsdfListNode`` (a ``UserList``, e.g.
    ``exposure.read_pattern``) keeps a reference to the file's tree and does not pickle.
    """
    if hasattr(node, "items") and callable(node.items):
        return {str(k): _tree(v) for k, v in node.items()
                if k != "wcs" and not isinstance(v, np.ndarray)}
    if isinstance(node, (list, tuple, UserList)):
        return [_tree(v) for v in node]
    return node


#: Bytes asdf reads from a Roman file at a time.  Its default, the file system's block (4 KiB),
#: read a detector's lz4-compressed ``data`` (4088 x 4088 float32) in ~16,000 Python-level
#: reads: 0.117 s against 0.059 s with 1 MiB.
READ_BLOCK_BYTES = 1 << 20


@contextmanager
def _asdf_reads(*, pixels_only: bool = False):
    """The asdf configuration a Roman file is read in: `READ_BLOCK_BYTES` at a time.

    With ``pixels_only`` the tree is neither validated again (`open_roman_image` did) nor
    converted (asdf's ``lazy_tree``, where this asdf has it): only the array's node is, and
    the file's gwcs is not built again at each read.
    """
    import asdf

    base = asdf.get_config()  # its plugins loaded once in this process: the context's copy
    _ = base.extensions, base.resource_manager  # shares them (else loads them at every read)
    with asdf.config_context() as config:
        config.io_block_size = READ_BLOCK_BYTES
        if pixels_only:
            config.validate_on_read = False
            if hasattr(config, "lazy_tree"):
                config.lazy_tree = True
        yield


def _read(path: Path, name: str) -> np.ndarray:
    """One array of the file, read and decompressed into memory (no file left open)."""
    import asdf

    try:
        with _asdf_reads(pixels_only=True), asdf.open(path, lazy_load=True, memmap=False) as af:
            array = np.array(af.tree["roman"][name])
    except (OSError, ValueError, KeyError) as error:
        raise OSError(f"cannot read {name!r} of {str(path)!r}: {error}") from error
    array.flags.writeable = False
    return array


def write_copy(image: RomanImage, dest, *, sky: float, valid: bool, method: str,
               subtract: bool, overwrite: bool = False, plane=None) -> Path:
    """Write a copy of a Roman file through ``roman_datamodels``, as romancal's skymatch does.

    ``meta.background`` gets ``level`` (the sky; null when it is not valid), ``subtracted``
    (whether it was subtracted from ``data``) and ``method``; ``meta.cal_step.skymatch``,
    when the file has ``meta.cal_step`` (romancal's level-2 files do), becomes ``COMPLETE``
    (``SKIPPED`` without a valid sky).  With ``subtract`` and a valid
    sky, ``data`` has the sky subtracted.  When the source's background was already
    subtracted, ``level`` is the total.  Atomic and refusing to overwrite.

    With ``plane`` (the sky plane's slope_x, slope_y per pixel; ``sky`` its level at the
    image's centre) the plane is subtracted and ``level`` is its value at the centre; the
    Roman schema's ``method`` allows only the skymethods, so the plane is recorded next to
    it: ``meta.background.plane`` = ``{model: "plane", slope_x, slope_y, x_ref, y_ref}``
    (0-based reference pixel; the schema allows extra properties).

    Raises
    ------
    ValueError
        When the source's background was already subtracted and ``subtract`` is False, or
        ``dest`` is the source.
    """
    from ._fits import _same_file, atomic_path

    rdm = _datamodels()
    dest = Path(dest)
    if _same_file(image.path, dest):
        raise ValueError(f"refusing to write over the source file {str(image.path)!r}; "
                         "choose another destination (e.g. another directory)")
    check_copy(image, subtract)
    with warnings.catch_warnings(), _asdf_reads(), rdm.open(image.path) as model:
        warnings.simplefilter("ignore", DeprecationWarning)
        earlier = _earlier(model)
        subtracted = bool(subtract and valid)
        if "background" not in model.meta:
            model.meta["background"] = {"level": None, "subtracted": False, "method": "None"}
        background = model.meta.background
        if valid:
            background.level = earlier + float(sky)
            background.subtracted = subtracted or earlier != 0.0 or bool(background.subtracted)
            background.method = str(method)
        else:  # as the JWST step: no method claimed for a sky not found
            background.level = None if not background.subtracted else background.level
            background.subtracted = bool(background.subtracted)
        if plane is not None and valid:
            ny, nx = np.shape(model.data)
            background["plane"] = {"model": "plane", "slope_x": float(plane[0]),
                                   "slope_y": float(plane[1]), "x_ref": (nx - 1) / 2.0,
                                   "y_ref": (ny - 1) / 2.0}
        if subtracted:
            from ._fits import sky_array

            data = np.array(model.data)
            data -= sky_array(sky, plane, data.shape, data.dtype)
            model.data = data
        if "cal_step" in model.meta:  # romancal's level-2 files have it
            model.meta.cal_step.skymatch = "COMPLETE" if valid else "SKIPPED"
        with atomic_path(dest, overwrite=overwrite, same_name=True) as tmp:
            model.save(tmp)
    return dest


def _earlier(model) -> float:
    if "background" not in model.meta or not model.meta.background.subtracted:
        return 0.0
    return float(model.meta.background.level or 0.0)


def previously_subtracted(image: RomanImage) -> bool:
    """Whether the file says its background was already subtracted."""
    return bool(image.header.get("background", {}).get("subtracted", False))


def check_copy(image: RomanImage, subtract: bool) -> None:
    """Refuse, before anything is written, a copy whose background record would be wrong."""
    if previously_subtracted(image) and not subtract:
        raise ValueError(
            f"{str(image.path)!r} already has its background subtracted "
            "(meta.background.subtracted); write it with subtract=True (the levels add up) or "
            "start from the file before that subtraction"
        )

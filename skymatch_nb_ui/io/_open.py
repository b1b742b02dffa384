"""Any input, by kind: FITS files (JWST, HST, others), Roman ASDF files, associations.

`open_images` turns file names, glob patterns and association files into one image record per
science image (chip), each with ``path``, ``ext``, ``label``, ``shape``, ``wcs``, ``kind``,
``meta`` (``meta["exposure"]`` by the instrument's pipeline rules), ``default_dqbits``,
``keyword(name)``, ``data()`` and ``mask(dqbits)``.  `write_copy` writes the copy of one file
(all its images) the way that file's pipeline would.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from ..engine._validate import caller_stacklevel
from . import jwst, roman
from ._fits import _open as _open_fits
from ._fits import find_fits, portable, settled, write_fits_file

__all__ = ["check_copy", "input_kind", "open_images", "read_association", "write_copy",
           "written_by_library"]

def input_kind(path) -> str:
    """``"fits"``, ``"asdf"`` or ``"association"``, from the file's first bytes (else its suffix).

    Examples
    --------
    >>> input_kind("jw01234-o001_20240101t000000_image3_00001_asn.json")  # doctest: +SKIP
    'association'
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(80)
    except OSError:
        head = b""
    if head.startswith(b"SIMPLE  ="):
        return "fits"
    if head.startswith(b"#ASDF"):
        return "asdf"
    if head.lstrip().startswith(b"{"):
        return "association"
    name = path.name.lower()
    if name.endswith(".asdf"):
        return "asdf"
    if name.endswith(".json"):
        return "association"
    return "fits"


def read_association(path) -> list[tuple[Path, str | None]]:
    """The science members of a JWST or Roman association (``*_asn.json``).

    Members are ``products[].members[]`` with ``exptype`` "science" (any case); their
    ``expname`` is relative to the association's directory.  A member's ``group_id``, when
    the association gives one, is kept: the pipelines group by it first.

    Returns
    -------
    list of (Path, str or None)
        Each science member's file and ``group_id``, in the association's order.

    Raises
    ------
    ValueError
        Naming the file, when it is not an association or has no science member.
    FileNotFoundError
        Naming the association and the member, when a member's file is missing.

    Examples
    --------
    >>> read_association("jw01234-o001_image3_00001_asn.json")  # doctest: +SKIP
    [(PosixPath('jw01234001001_02101_00001_nrcb1_cal.fits'), None), ...]
    """
    path = Path(path)
    try:
        asn = json.loads(path.read_text())
        products = asn["products"]
        members = [m for product in products for m in product["members"]]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"{str(path)!r} is not an association (JSON with products[].members[]): {error}"
        ) from None
    science = []
    for member in members:
        if str(member.get("exptype", "science")).lower() != "science":
            continue
        if "expname" not in member:
            raise ValueError(f"{str(path)!r}: a science member has no 'expname': {member}")
        file = path.parent / member["expname"]
        if not file.is_file():
            raise FileNotFoundError(
                f"{str(path)!r} lists {member['expname']!r}, which is not in {str(path.parent)!r}"
            )
        group = member.get("group_id")
        science.append((file, None if group is None else str(group)))
    if not science:
        raise ValueError(f"{str(path)!r} has no science member (exptype 'science')")
    return science


def _inputs(paths) -> list[tuple[Path, str | None]]:
    """Files named by ``paths``, associations replaced by their science members; no repeats."""
    found = []
    for file in find_fits(paths, what="input files"):
        if input_kind(file) == "association":
            found.extend(read_association(file))
        else:
            found.append((file, None))
    seen, unique = set(), []
    for file, group in found:
        key = os.path.realpath(file)
        if key not in seen:
            seen.add(key)
            unique.append((file, group))
    return unique


#: `open_images` reads files in forked workers from this many inputs (`scheduler` "auto" or
#: "processes").  A worker's records come back pickled, and an astropy WCS is made again here
#: from its header (`_fits.settled`: ~1.1 ms of the ~1.9 ms a small FITS file takes to read;
#: a JWST file's gwcs comes back packed, as the bytes it is kept as: `PackedWCS`).
READ_FORK_FROM = 16
#: ... and where it cannot fork (a Jupyter kernel), by the pool's worker processes from this
#: many, when the first file brings a gwcs (JWST, Roman: ~30 ms a file through asdf; a FITS
#: header takes ~2 ms, less than the pool's overhead).  The pool's workers start in ~2-3 s;
#: 1,000 JWST files: 33.2 -> 21.7 s, 300: 10.1 -> 8.8 s (a thread running, as in a kernel).
READ_POOL_FROM = 200


def open_images(paths, *, ext=None, dq_ext: str | None = "DQ", fits_only: bool = False,
                scheduler="serial", workers: int | None = None) -> list:
    """One image record per science image of the inputs, headers and WCS read, no pixels.

    Parameters
    ----------
    paths : str, Path or sequence of them
        Files, glob patterns and association files (``*_asn.json``: their science members).
        FITS files give one image per science extension (HST: ``SCI,1`` and ``SCI,2``); Roman
        ASDF files one image each.
    ext, dq_ext
        As `skymatch_nb_ui.io.open_fits_images` (FITS files only).
    fits_only : bool
        Refuse inputs that are not FITS files.
    scheduler : str, optional
        ``"auto"`` or ``"processes"``: from `READ_FORK_FROM` files, read them in forked
        worker processes beside this one where forking is safe (a script or the command
        line, not a Jupyter kernel; ``"auto"`` only while a core is idle), as
        `skymatch_nb_ui.ImageCollection.write_copies` writes them; where forking is not
        safe, from `READ_POOL_FROM` files whose WCS is a gwcs (JWST, Roman: slow to read),
        by the pool of worker processes that the statistics use.  The records are those
        of a serial read, WCS values bit for bit, in the same order; warnings raised in a
        worker are raised here (each once per call); an error is that of the first file, in
        order, that fails.  Anything else (default ``"serial"``): here, one file at a time.
    workers : int, optional
        Processes that read, this one included (default: the cores, at most 4).

    Returns
    -------
    list
        `skymatch_nb_ui.io.FitsImage` and `skymatch_nb_ui.io.roman.RomanImage` records.

    Warns
    -----
    ApproximateWCSWarning
        Once, when JWST files' exact gwcs could not be read (``stdatamodels`` missing).
    """
    inputs = _inputs(paths)
    if fits_only:
        for file, _ in inputs:
            if input_kind(file) == "asdf":
                raise ValueError(
                    f"{str(file)!r} is an ASDF file, not FITS; read Roman files with "
                    "ImageCollection.from_files"
                )
    from ..engine._execute import file_workers

    processes = file_workers(scheduler, workers, len(inputs), READ_FORK_FROM, fork=True)
    pooled = 1 if processes > 1 else file_workers(scheduler, workers, len(inputs), READ_POOL_FROM,
                                                  fork=False)
    if processes > 1:
        found = _read_forked(inputs, ext, dq_ext, processes)
    elif pooled > 1:
        found = _read_pooled(inputs, ext, dq_ext, pooled)
    else:
        found = _in_order({}, inputs, ext, dq_ext)
    images = [image for records in found for image in records]
    approximate = jwst.approximate(images)
    if approximate:
        warnings.warn(jwst.approximation_warning(approximate), jwst.ApproximateWCSWarning,
                      stacklevel=caller_stacklevel())
    return images


def _read(file: Path, group: str | None, ext, dq_ext) -> list:
    """The records of one input file (its chips), with the association's group if any."""
    if input_kind(file) == "asdf":
        found = [roman.open_roman_image(file)]
    else:
        found = _open_fits(file, ext, dq_ext, every_chip=ext is None)
    if group is not None:
        found = [replace(image, exposure_id=group) for image in found]
    return found


@dataclass
class _Sent:
    """What a worker process sends for one file: its records (`_fits.portable`), its warnings."""

    records: list
    warnings: list


def _read_forked(inputs: list, ext, dq_ext, processes: int) -> list:
    """`_read` of every input, by ``processes`` processes: this one and forked workers.

    The files are taken in order (a file's records are its own: any process may read it).
    A worker's records come back pickled (`_fits.portable`, `_fits.settled`) with the
    warnings it caught, which are raised here, each once (a registry for this call).  If a
    file fails, the workers are stopped and the files not read yet are read here in order,
    so that the error raised is that of the first file that fails, as in one process.
    """
    from ..engine._fork import fork_map, reap

    here = os.getpid()
    found: dict[int, list] = {}
    keep = _keeper(found)

    def read(k: int):
        file, group = inputs[k]
        if os.getpid() == here:
            return _read(file, group, ext, dq_ext)
        return _read_sent(file, group, ext, dq_ext)

    try:
        # the first file here, before the fork: the worker inherits what reading it imported
        # and cached (stdatamodels, asdf's schemas and converters; 300 JWST files read from
        # a fresh interpreter: 6.5-6.8 -> 6.3-6.4 s)
        keep(0, read(0))
        # (the collector keeps running: reading a JWST file through asdf leaves cycles)
        fork_map(read, [(k,) for k in range(len(inputs))], range(1, len(inputs)), processes,
                 on_result=keep, check=lambda: None, pause_gc=False)
    except Exception:  # (the first failure in order is raised by `_in_order`)
        reap()
    return _in_order(found, inputs, ext, dq_ext)


def _read_sent(file: Path, group: str | None, ext, dq_ext) -> _Sent:
    """`_read` in another process: its records as they travel (`_fits.portable`), its warnings."""
    with warnings.catch_warnings(record=True) as caught:
        records = _read(file, group, ext, dq_ext)
    return _Sent([portable(image) for image in records],
                 [(w.message, w.category, w.filename, w.lineno) for w in caught])


def _keeper(found: dict):
    """``keep(k, value)``: file ``k``'s records into ``found``, as read here or sent (`_Sent`).

    A sent file's warnings are raised here, each once for the reading (one registry), and its
    astropy WCSs made again (`_fits.settled`).
    """
    registry: dict = {}

    def keep(k: int, value) -> None:
        if isinstance(value, _Sent):
            for message, category, filename, lineno in value.warnings:
                warnings.warn_explicit(message, category, filename, lineno, registry=registry)
            value = [settled(image) for image in value.records]
        found[k] = value

    return keep


def _read_pooled(inputs: list, ext, dq_ext, processes: int) -> list:
    """`_read` of every input: the first here, the others by the pool's worker processes.

    Only if the first file's WCS is a gwcs (else all here: FITS headers are quick to read).
    As `_read_forked`: records and warnings sent back, the first failing file's error.
    """
    from ..engine._execute import pooled_in_order

    found: dict[int, list] = {}
    keep = _keeper(found)
    try:
        keep(0, _read(*inputs[0], ext, dq_ext))
        if any(jwst._is_gwcs(image.wcs) for image in found[0]):
            pooled_in_order(processes, [(_read_sent, (file, group, ext, dq_ext), {})
                                        for file, group in inputs[1:]],
                            lambda k, sent: keep(k + 1, sent))
    except Exception:  # (the first failure in order is raised by `_in_order`)
        pass
    return _in_order(found, inputs, ext, dq_ext)


def _in_order(found: dict, inputs: list, ext, dq_ext) -> list:
    """Every input's records, in order: those in ``found``, the others read here, in order.

    So a file that fails here is the first, in order, that fails: the error of one process.
    """
    for k, (file, group) in enumerate(inputs):
        if k not in found:
            found[k] = _read(file, group, ext, dq_ext)
    return [found[k] for k in range(len(inputs))]


def check_copy(images: list, subtract: bool) -> None:
    """Refuse, before anything is written, a copy of one file that cannot be recorded right."""
    kind = images[0].kind
    if kind == "roman":
        roman.check_copy(images[0], subtract)
    elif kind == "jwst":
        jwst.check_copy(images[0], subtract)


def written_by_library(images: list) -> bool:
    """Whether `write_copy` writes this file through its pipeline's library.

    Roman files (``roman_datamodels``) and JWST files with their gwcs (``stdatamodels``):
    ~90 ms a file, against ~2-3 ms for a small FITS file copied by `write_fits_file`.
    """
    kind = images[0].kind
    return kind == "roman" or (kind == "jwst" and len(images) == 1 and jwst.have_datamodels()
                               and not jwst.approximate(images))


def write_copy(images: list, dest, *, skies, valid, method: str, subtract: bool,
               overwrite: bool = False, planes=None) -> Path:
    """Write the copy of one file (all of ``images``, its chips) as its pipeline would.

    Roman files through ``roman_datamodels``, JWST files with a gwcs through
    ``stdatamodels``, other FITS files (HST with ``MDRIZSKY``) by `write_fits_file`.
    ``planes``: per chip the sky plane's (slope_x, slope_y), or None for constant skies.
    """
    single = {"sky": float(skies[0]), "valid": bool(valid[0]), "method": method,
              "subtract": subtract, "overwrite": overwrite,
              "plane": None if planes is None else planes[0]}
    if written_by_library(images):
        library = roman if images[0].kind == "roman" else jwst
        return library.write_copy(images[0], dest, **single)
    return write_fits_file(images, dest, skies=skies, valid=valid, method=method,
                           subtract=subtract, overwrite=overwrite, planes=planes)


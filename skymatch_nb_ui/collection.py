"""ImageCollection: the images of a mosaic, their groups and their sky-matching results.

Layout (why a table plus a tree): images of a mosaic differ in shape, so their pixels cannot
share one array.  The collection keeps

- ``table``: an `xarray.Dataset` over the dimension ``image`` (coordinate: the names) with one
  row of metadata per image: shape, group, file, unit, filter, detector, exposure, footprint;
- ``tree``: an `xarray.DataTree` with one node per image holding its ``data`` and ``mask``
  (y, x); for FITS files these are memory-mapped, read only when used.

``skymatch()`` runs the engine's `SkyMatcher`, which the collection keeps, so a second call with
only solve parameters changed (``skymethod``, ``match_down``, ``anchor``) re-uses the geometry
and the statistics and returns in milliseconds; a change of groups recomputes only the
statistics of new (image, partner set) combinations.
"""

from __future__ import annotations

import difflib
import html
import re
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from .engine import ImageLoader, SkyMatcher, SkyMatchParams, SkyMatchResult, subtracted_copy
from .engine._validate import caller_stacklevel, check_wcs, few_of, some_names
from .engine.exceptions import SkyMatchWarning
from .engine.geometry import footprint, lonlat_to_xyz, xyz_to_lonlat
from .engine.groups import is_missing_label
from .engine.loaders import RecordLoader, per_second, record_pixels_key
from .engine.packed import live

if TYPE_CHECKING:
    from .io import FitsImage, RomanImage

__all__ = ["ImageCollection"]

#: `ImageCollection.write_copies` forks workers from this many files (`_copy_workers`).
COPY_FORK_FROM = 8
#: ... and where it cannot fork (a Jupyter kernel), sends JWST and Roman files to the pool's
#: worker processes from this many (`_copy_workers`; ~90 ms a file, ~2-3 s for the pool to
#: start).
COPY_POOL_FROM = 64

#: Per-image metadata columns of ``ImageCollection.table`` taken from FITS headers.
META_COLUMNS = ("bunit", "exptime", "filter", "detector", "exposure", "instrument", "date_obs")


@dataclass
class _Source:
    """One image: where its pixels come from and what is known about it without reading them."""

    name: str
    shape: tuple[int, int]
    wcs: object
    loader: ImageLoader  # reads the pixels and the mask when asked; handed to the engine
    file: str = ""
    ext: int = -1
    meta: dict = field(default_factory=dict)
    image: object = None  # the io record (FitsImage chip, RomanImage) when it comes from a file

    @property
    def exptime(self) -> float | None:
        """The exposure time its counts are divided by (count rates), else None."""
        return getattr(self.loader, "exptime", None)

    def load_data(self) -> np.ndarray:
        return self.loader.data()

    def load_mask(self) -> np.ndarray | None:
        return self.loader.mask()


class _MadeWCS(Sequence):
    """The images' WCS, packed ones made as they are asked for (`ImageCollection.wcs`)."""

    def __init__(self, kept: list):
        self._kept = kept

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [live(w) for w in self._kept[k]]
        return live(self._kept[k])

    def __repr__(self) -> str:
        return f"<{len(self)} WCS>"


@dataclass(frozen=True, eq=False)
class _FileLoader:
    """The pixels and DQ mask of one image of a file, read each time they are asked.

    It pickles as the file's path and HDU indices (and the DQ bits): what a worker process
    needs to read the pixels; no pixels, WCS or headers travel with it.
    """

    image: FitsImage | RomanImage
    dqbits: int | str | None = 0
    exptime: float | None = None  # the pixels divided by it: counts to count rates

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape)

    def data(self) -> np.ndarray:
        return per_second(self.image.data(), self.exptime)

    def mask(self) -> np.ndarray | None:
        return self.image.mask(self.dqbits)

    @property
    def pixels_key(self):
        """Which pixels and mask this loader reads, in any process (`engine.reads`)."""
        return record_pixels_key(self.image, self.dqbits, self.exptime)

    def __repr__(self) -> str:
        return repr(self.image)

    def __reduce__(self):
        # what a worker process needs to read the pixels: the file and its HDUs, not the WCS
        # and headers (a WCS costs milliseconds to pickle and unpickle), nor this module
        # (xarray: a second more for each worker to start)
        if hasattr(self.image, "header_text"):  # a FitsImage
            empty = {"wcs": None, "header_text": "", "primary_text": None}
        else:
            empty = {"wcs": None, "header": {}}
        return (RecordLoader, (replace(self.image, **empty), self.dqbits, self.exptime))


class ImageCollection:
    """The images of a mosaic with their WCS, masks and groups; runs and keeps sky matching.

    Build one with `from_arrays`, `from_files` (FITS, JWST, HST, Roman, associations) or
    `from_fits`.

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
    >>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    >>> ds = coll.skymatch(skymethod="global+match", skystat="mean")
    >>> ds.sky.sel(image="img01").item()
    120.0
    >>> coll.groups = {"img02": "g", "img04": "g"}   # these two now share one sky
    >>> ds = coll.skymatch(skymethod="match", skystat="mean")
    >>> ds.sky.values.round(6).tolist(), ds.group.values.tolist()
    ([0.0, 20.0, 5.0, 10.0, 5.0, 15.0], ['', '', 'g', '', 'g', ''])
    """

    def __init__(self, sources: Sequence[_Source], *, groups=None):
        if not sources:
            raise ValueError("an ImageCollection needs at least one image; got none")
        names = [s.name for s in sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"image names must be unique; these appear more than once: {duplicates}. "
                "Pass names=[...] to choose them."
            )
        self._sources = list(sources)
        self._names = tuple(names)
        self._index = {n: k for k, n in enumerate(names)}
        self._groups: list = [None] * len(self._sources)
        self._matcher: SkyMatcher | None = None
        self._tree: xr.DataTree | None = None
        self._footprints = None
        self._position_columns: dict | None = None
        #: The Dataset of the last `skymatch` (the default of `to_table`, `write_copies`,
        #: `result_images`); views never read it: they are given a result.
        self.last_result: xr.Dataset | None = None
        if groups is not None:
            self.groups = groups

    # -- constructors ----------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, images, wcs, *, masks=None, names=None, groups=None, meta=None):
        """A collection of in-memory images.

        Parameters
        ----------
        images : sequence of 2-D array
            The images (kept by reference, never changed).
        wcs : sequence
            One celestial WCS per image (astropy or gwcs).
        masks : sequence of 2-D bool array, optional
            True = good pixel.  The mask of a `numpy.ma.MaskedArray` image counts too: a
            pixel is good when it is unmasked there and True here.
        names : sequence of str, optional
            Unique image names (default ``image0``, ``image1``, ...).
        groups : sequence or mapping, optional
            One label per image, or {name: label}; images sharing a label share one sky.
        meta : sequence of dict, optional
            Metadata per image (keys of ``META_COLUMNS`` appear in the table).
        """
        images = list(images)
        wcs = list(wcs)
        # the engine validates everything once, and the collection keeps that matcher
        matcher = SkyMatcher(images, wcs, masks=masks)
        n = len(images)
        names = _names(names, n)
        meta = list(meta) if meta is not None else [{}] * n
        if len(meta) != n:
            raise ValueError(f"meta must have one dict per image: got {len(meta)} for {n} images")
        sources = [
            _Source(
                name=names[k], shape=tuple(np.shape(images[k])), wcs=wcs[k],
                loader=matcher.loaders[k], meta=dict(meta[k]),
            )
            for k in range(n)
        ]
        coll = cls(sources, groups=groups)
        coll._matcher = matcher
        return coll

    @classmethod
    def from_files(cls, paths, *, ext=None, dq_ext="DQ", dqbits="auto", group_by="auto",
                   names=None, masks=None, rates="auto", scheduler=None, workers=None):
        """A collection of the images in files; headers and WCS are read, pixels when needed.

        Reads FITS files (JWST ``_cal``, HST ``_flt``/``_flc`` with every chip, any FITS image
        with a celestial WCS), Roman level-2 ASDF files (with ``roman_datamodels``) and JWST or
        Roman association files (``*_asn.json``: their science members).  JWST files use the
        exact gwcs of their ASDF extension when ``stdatamodels`` is installed (else the
        header's SIP approximation, with a warning).  See `skymatch_nb_ui.io`.

        Parameters
        ----------
        paths : str, Path or sequence of them
            Files, glob patterns (``"data/*_cal.fits"``) or association files.
        ext : int, str or (str, int), optional
            FITS only: the one science extension to read; default: every ``SCI`` extension
            (chip), else every 2-D image HDU with a celestial WCS that looks elsewhere than
            those before it (a mosaic camera's CCDs; not a mask or preview of an image).
        dq_ext : str or None
            FITS only: name of the data-quality extension turned into the mask; without one,
            a drizzled image's weight map (``WHT``) masks its pixels of weight 0 (None: no
            mask).
        dqbits : int, str or None
            DQ flags to *ignore* (astropy/JWST ``bitfield_to_boolean_mask`` syntax, names of
            the file's instrument allowed).  ``"auto"`` (default): each pipeline's sky-step
            default, ``"~DO_NOT_USE+NON_SCIENCE"`` for JWST, ``"~DO_NOT_USE"`` for Roman, 0
            (any flag is bad) for other files; None: no mask.
        group_by : str, callable or None
            Which images share one sky:

            - ``"auto"`` (default): as each instrument's pipeline does: ``"exposure"`` for
              JWST (the skymatch step's ``group_id``) and HST (AstroDrizzle: the chips of one
              exposure), ``"image"`` for Roman and other files;
            - ``"exposure"``: every image of one exposure together (JWST ``group_id`` from
              the association or the file, HST ROOTNAME, Roman ``group_id`` or
              ``observation_id``; other FITS files: OBS_ID + EXPOSURE, EXP_ID, ROOTNAME, ...);
            - ``"image"`` or None: every image (detector, chip) its own sky;
            - any other string: a header keyword whose value is the group (FITS: science
              header, else primary; Roman: a dotted path in ``meta``), e.g. ``"VISIT"``;
            - a callable of the image's header (Roman: its ``meta`` as a dict) returning the
              label (None: alone).

            Presets are lower case; write keywords as they are in the header (upper case).
        names : sequence of str, optional
            Image names (default: the file name without its suffix, plus ``[SCI,2]``-style
            extension labels for files of several images).
        masks : callable, mapping or (str, str), optional
            FITS only: masks in other files (DECam's ``_ood`` flags beside its ``_ooi``
            images, SWarp's ``.weight.fits``): a function of an input file's path giving its
            mask file (None: none), a mapping {input file: mask file}, or a pair ``(old,
            new)`` replaced in the input's name, e.g. ``("_ooi_", "_ood_")``.  Integer values
            are flags (0 good), float values weights (0 or NaN bad); the HDU of the image's
            EXTNAME and EXTVER, else its index; combined with the file's own DQ (see
            `skymatch_nb_ui.io.with_mask_files`).
        rates : "auto", bool
            Images in counts (``BUNIT`` ``ELECTRONS``, ``COUNTS``, ``DN`` or ``ADU``: HST's
            ACS and WFC3/UVIS ``_flc``) are compared as count rates, divided by their exposure
            time (``EXPTIME``), as AstroDrizzle's sky matching does: ``"auto"`` (default) when
            their exposure times differ (counts of different exposures are not comparable),
            True always, False never (with a warning when they differ).  The collection's
            pixels, results and table are then in ``<unit>/S``; copies get the skies back in
            counts (``BKGLEVEL``, ``MDRIZSKY``, what is subtracted).
        scheduler, workers : optional
            The collection's `scheduler` and `workers` (default: "auto" and the cores, at
            most 4), which the reading follows too: with "auto" or "processes", many files
            (`skymatch_nb_ui.io.READ_FORK_FROM`) are read by forked worker processes beside
            this one where forking is safe (a script or the command line), and many files
            with a gwcs (JWST, Roman; `skymatch_nb_ui.io.READ_POOL_FROM`) by the pool's
            worker processes where it is not (a Jupyter kernel), with the records, WCS and
            warnings of a serial read (`skymatch_nb_ui.io.open_images`).

        Raises
        ------
        ValueError, FileNotFoundError, OSError
            Naming the file, for a file that cannot be read, and for ``group_by="exposure"``
            with files that say nothing of their exposure.

        Examples
        --------
        >>> coll = ImageCollection.from_files("jw01234-o001_image3_asn.json")  # doctest: +SKIP
        >>> coll = ImageCollection.from_files("data/*_flc.fits", group_by="image")  # doctest: +SKIP
        """
        return cls._from_records(paths, ext=ext, dq_ext=dq_ext, dqbits=dqbits, group_by=group_by,
                                 names=names, masks=masks, rates=rates, fits_only=False,
                                 scheduler=scheduler, workers=workers)

    @classmethod
    def from_fits(cls, paths, *, ext=None, dq_ext="DQ", dqbits="auto", group_by="auto", names=None,
                  masks=None, rates="auto", scheduler=None, workers=None):
        """A collection of FITS images (and associations of FITS files); as `from_files`.

        Every science extension of a file is an image (both chips of an HST file); JWST files
        bring their exact gwcs, group id and DQ default.  Non-FITS inputs are refused (use
        `from_files` for Roman ASDF files).

        Examples
        --------
        >>> coll = ImageCollection.from_fits("data/*_cal.fits")  # doctest: +SKIP
        """
        return cls._from_records(paths, ext=ext, dq_ext=dq_ext, dqbits=dqbits, group_by=group_by,
                                 names=names, masks=masks, rates=rates, fits_only=True,
                                 scheduler=scheduler, workers=workers)

    @classmethod
    def _from_records(cls, paths, *, ext, dq_ext, dqbits, group_by, names, masks, rates,
                      fits_only, scheduler, workers):
        from . import io
        from .engine._execute import check_scheduler
        from .engine._validate import check_workers

        io.check_dqbits(dqbits)  # a bad value fails now, not when the masks are first read
        io.check_masks(masks)
        io.check_rates(rates)
        _check_group_by(group_by)
        where = check_scheduler(scheduler), None if workers is None else check_workers(workers)
        records = io.open_images(paths, ext=ext, dq_ext=dq_ext, fits_only=fits_only,
                                 scheduler=where[0], workers=where[1])
        if masks is not None:
            records = io.with_mask_files(records, masks)
        metas = [dict(r.meta) for r in records]
        exptimes = io.count_rates(records, rates)
        for meta, exptime in zip(metas, exptimes):
            if exptime is not None:
                meta["bunit"] = f"{meta['bunit']}/S"
        units = [meta["bunit"] for meta in metas]
        io.check_units(records, units=units)
        io.check_pixel_areas(records, units=units)
        io.roman.check_conversions(records)
        names = _names(names, len(records), default=_record_names(records))
        sources = [
            _Source(
                name=name, shape=tuple(r.shape), wcs=r.wcs,
                loader=_FileLoader(r, dqbits, exptime), file=str(r.path), ext=int(r.ext),
                meta=meta, image=r,
            )
            for name, r, meta, exptime in zip(names, records, metas, exptimes)
        ]
        coll = cls(sources, groups=_group_labels(records, group_by))
        if scheduler is not None or workers is not None:
            coll.scheduler, coll.workers = where
        return coll

    # -- the images ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._sources)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, name) -> bool:
        return name in self._index

    @property
    def names(self) -> tuple[str, ...]:
        """The image names, in order."""
        return self._names

    @property
    def wcs(self) -> Sequence:
        """The WCS of each image (a sequence: ``coll.wcs[k]``, ``list(coll.wcs)``).

        The gwcs of JWST and Roman files are kept packed (`~.engine.packed.PackedWCS`) and made
        as they are asked for: ``coll.wcs[k]`` makes one (a few ms), a list of all makes
        them all (~380 KB each for a NIRCam detector).  A made gwcs is shared with the engine
        while it stays made: ``copy.deepcopy(coll.wcs[k])`` for one to change.
        """
        return _MadeWCS([s.wcs for s in self._sources])

    def _kept_wcs(self) -> list:
        """The WCS as kept (packed or not), for the engine."""
        return [s.wcs for s in self._sources]

    def data(self, image) -> np.ndarray:
        """The pixels of one image (by name or index); memory-mapped for FITS files.

        In the collection's units: images in counts compared as count rates (`from_files`'s
        ``rates``) are divided by their exposure time (a new array).
        """
        return self._sources[self._position(image)].load_data()

    def mask(self, image) -> np.ndarray | None:
        """The good-pixel mask of one image (True = good), or None."""
        return self._sources[self._position(image)].load_mask()

    def __getitem__(self, image) -> xr.Dataset:
        """One image as an `xarray.Dataset` with ``data`` (and ``mask``) over (y, x)."""
        return self.tree[self._sources[self._position(image)].name].to_dataset()

    @property
    def tree(self) -> xr.DataTree:
        """All images as an `xarray.DataTree`: the table at the root, one node per image."""
        if self._tree is None:
            children = {s.name: xr.DataTree(_image_dataset(s)) for s in self._sources}
            self._tree = xr.DataTree(self.table, children=children)
        return self._tree

    @property
    def footprints(self) -> tuple[np.ndarray, np.ndarray]:
        """Corner longitudes and latitudes (degrees) of each image, shape (n, 4).

        In the images' common celestial frame, or ICRS when their WCS use different frames.
        """
        if self._footprints is None:
            lon, lat = [], []
            adapters = check_wcs(self._kept_wcs(), len(self))  # in one frame, as the engine sees them
            for s, adapter in zip(self._sources, adapters):
                fp = footprint(adapter, s.shape)
                x, y = fp.lonlat
                lon.append(x)
                lat.append(y)
            self._footprints = (np.array(lon), np.array(lat))
        return self._footprints

    @property
    def _positions(self) -> dict:
        """Where each image is: footprint centre and corners, as Dataset columns (cached)."""
        if self._position_columns is None:
            lon, lat = self.footprints
            centre_lon, centre_lat = _mean_direction(lon, lat)
            self._position_columns = {
                "ra": ("image", centre_lon, {"units": "deg", "long_name": "footprint centre longitude"}),
                "dec": ("image", centre_lat, {"units": "deg", "long_name": "footprint centre latitude"}),
                "footprint_ra": (("image", "corner"), lon, {"units": "deg"}),
                "footprint_dec": (("image", "corner"), lat, {"units": "deg"}),
            }
        return self._position_columns

    @property
    def table(self) -> xr.Dataset:
        """One row per image: shape, group, file, header metadata and footprint."""
        columns = {
            "ny": ("image", np.array([s.shape[0] for s in self._sources])),
            "nx": ("image", np.array([s.shape[1] for s in self._sources])),
            "group": ("image", np.array(group_texts(self._groups), dtype=object)),
            "file": ("image", np.array([s.file for s in self._sources], dtype=object)),
            "ext": ("image", np.array([s.ext for s in self._sources])),
            **self._positions,
        }
        for key in META_COLUMNS:
            values = [s.meta.get(key) for s in self._sources]
            if any(v is not None for v in values):
                columns[key] = ("image", np.array(values, dtype=object))
        return xr.Dataset(columns, coords={"image": list(self.names)})

    # -- groups ----------------------------------------------------------------------------------
    @property
    def groups(self) -> dict:
        """{image name: group label}; None means the image is alone (its own sky).

        A missing label (NaN, ``pandas.NA``, NaT) is stored as None: the image is alone.

        Assign a mapping (images left out become alone) or a sequence with one label per image.
        """
        return dict(zip(self.names, self._groups))

    @groups.setter
    def groups(self, groups) -> None:
        self._groups = self._checked_groups(groups)

    def set_group(self, images, label) -> None:
        """Put ``images`` (names or indices) in the group ``label`` (None: make them alone)."""
        if isinstance(images, (str, int, np.integer)):
            images = [images]
        _check_label("label", label)
        for image in images:
            self._groups[self._position(image)] = _normal_label(label)

    def _checked_groups(self, groups) -> list:
        n = len(self)
        if groups is None:
            return [None] * n
        if isinstance(groups, Mapping):
            unknown = [k for k in groups if k not in self._index]
            if unknown:
                raise ValueError(
                    f"groups names images that are not in the collection: {few_of(unknown)}; "
                    f"{some_names(self.names, unknown[:3])}"
                )
            labels = [groups.get(name) for name in self.names]
        elif isinstance(groups, (str, bytes)) or not isinstance(groups, Iterable):
            raise TypeError(
                "groups must be a mapping {image name: label} or a sequence of one label per "
                f"image; got {type(groups).__name__}"
            )
        else:
            labels = list(groups)
            if len(labels) != n:
                raise ValueError(
                    f"groups must have one label per image: got {len(labels)} labels for {n} images"
                )
        for k, label in enumerate(labels):
            _check_label(f"groups[{self.names[k]!r}]", label)
        return [_normal_label(lab) for lab in labels]

    def overlapping_pairs(self) -> list[tuple[str, str]]:
        """The pairs of images whose footprints overlap (names, each pair once, in image order).

        Runs the geometry stage (footprints and their overlaps; no pixels are read) if no
        solve did yet.

        Examples
        --------
        >>> from skymatch_nb_ui.testing import make_mosaic
        >>> m = make_mosaic((1, 3))
        >>> ImageCollection.from_arrays(m.images, m.wcs, names=m.names).overlapping_pairs()
        [('img00', 'img01'), ('img01', 'img02')]
        """
        names = self.names
        pairs = {(min(a, b), max(a, b)) for (a, b), runs in self.matcher.geometry.runs.items() if runs}
        return [(names[a], names[b]) for a, b in sorted(pairs)]

    def isolated_groups(self, groups: Mapping | None = None) -> list:
        """The labels of the groups none of whose images overlaps an image outside the group.

        Such a group is an input of the solve with no overlap with any other input, so its sky
        cannot be matched to the rest.  Images alone are not reported (they are not groups).

        Parameters
        ----------
        groups : mapping, optional
            {image name: label or None} to check (default: the collection's `groups`), e.g.
            a grouping being edited before it is applied.

        Examples
        --------
        >>> from skymatch_nb_ui.testing import make_mosaic
        >>> m = make_mosaic((1, 2)) + make_mosaic((1, 2), center=(150.2, 2.0), prefix="b")
        >>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
        >>> coll.isolated_groups({"img00": "a", "img01": "a", "b00": "b"})
        ['a']
        """
        groups = self.groups if groups is None else groups
        labels = [groups.get(n) for n in self.names]
        key = {n: ("alone", n) if g is None else ("group", g) for n, g in zip(self.names, labels)}
        linked = set()
        for a, b in self.overlapping_pairs():
            if key[a] != key[b]:
                linked.update((key[a], key[b]))
        return [g for g in dict.fromkeys(g for g in labels if g is not None) if ("group", g) not in linked]

    # -- sky matching ----------------------------------------------------------------------------
    @property
    def matcher(self) -> SkyMatcher:
        """The engine, with its stage cache (built on first use; it reads no pixels).

        The engine is given one loader per image: pixels and masks are read by the tasks
        that need them, one image at a time.
        """
        if self._matcher is None:
            self._matcher = SkyMatcher([s.loader for s in self._sources], self._kept_wcs())
        return self._matcher

    @property
    def scheduler(self):
        """Where the statistics run (settable): see `SkyMatcher`.

        "auto", "serial", "threads", "processes", a ``distributed.Client`` or a Dask
        scheduler address.
        """
        return self.matcher.scheduler

    @scheduler.setter
    def scheduler(self, scheduler) -> None:
        self.matcher.scheduler = scheduler

    @property
    def workers(self) -> int:
        """Threads or worker processes for the statistics (settable; None: the default)."""
        return self.matcher.workers

    @workers.setter
    def workers(self, workers: int | None) -> None:
        self.matcher.workers = workers

    def skymatch(self, params: SkyMatchParams | None = None, *, progress=None, cancel=None,
                 **changes) -> xr.Dataset:
        """Match the skies of the collection's images with its current groups.

        Parameters
        ----------
        params : SkyMatchParams, optional
            All the parameters at once (default: the defaults, with the last ``stepsize``).
        progress, cancel : optional
            A callback of `skymatch_nb_ui.engine.Progress` values and a
            ``threading.Event`` that stops the run (`SkyMatchCancelled`) when set: see
            `SkyMatcher.run`.
        **changes
            Any parameter of `SkyMatchParams` (those of `skymatch_nb_ui.skymatch` without the
            data) except ``subtract``: ``skymethod``, ``match_down``, ``skystat``, ``lower``,
            ``upper``, ``nclip``, ``lsigma``, ``usigma``, ``binwidth``, ``anchor``,
            ``stepsize`` (a new ``stepsize`` recomputes the geometry and stays the default;
            the other parameters re-use it).

        Returns
        -------
        xarray.Dataset
            The whole result of the run, kept as ``last_result``:

            - over ``image`` (coordinate: the names): ``sky``, ``sky_err``, ``valid``,
              ``reason``, ``component``, ``group``, ``npix``, ``local``, ``delta``, and where
              each image is (``ra``, ``dec``, and ``footprint_ra``/``footprint_dec`` over
              ``corner``, degrees);
            - over ``pair`` (coordinate ``"a|b"``: the overlaps between inputs, an input being
              an image alone or a group): ``a``, ``b``, ``stat_a``, ``stat_b``, ``npix_a``,
              ``npix_b``, ``err_a``, ``err_b``, ``weight``, ``pair_valid`` (the pair entered
              the solve), ``diff_before`` and ``diff_after`` (the residual after the solve);
            - the parameters in ``attrs``; sky values carry the images' common ``units``.

            Every view (`skymatch_nb_ui.widgets`, `skymatch_nb_ui.plotting`) takes this
            Dataset.

        Raises
        ------
        TypeError
            For ``subtract`` (use `write_fits` or `result_images`), ``scheduler`` or
            ``workers`` (settings of the collection: `scheduler`, `workers`), an unknown
            parameter (the message lists the valid names) or a value of the wrong kind.
        ValueError
            For a value outside its domain.

        Examples
        --------
        >>> from skymatch_nb_ui.testing import make_mosaic
        >>> m = make_mosaic((1, 3), sky=[7, 5, 9])
        >>> coll = ImageCollection.from_arrays(m.images, m.wcs)
        >>> coll.skymatch(skymethod="match", skystat="mean").sky.values.round(6).tolist()
        [2.0, 0.0, 4.0]
        >>> coll.skymatch(skymetod="local")
        Traceback (most recent call last):
        ...
        TypeError: unknown parameter 'skymetod' (did you mean 'skymethod'?); the valid names are ...
        """
        if "subtract" in changes or (params is not None and params.subtract):
            raise TypeError(
                "ImageCollection.skymatch does not subtract: the images stay as they are. "
                "Use write_fits(directory, result) for sky-subtracted copies, or "
                "result_images(result) for subtracted arrays."
            )
        for name in ("scheduler", "workers"):  # `skymatch_nb_ui.skymatch` takes them
            if name in changes:
                raise TypeError(
                    f"ImageCollection.skymatch takes no {name} (got {name}={changes[name]!r}): "
                    f"it is a setting of the collection, kept between runs. Set "
                    f"coll.{name} = {changes[name]!r}, then call coll.skymatch(...)"
                )
        from .io._fits import keeping_decoded

        with keeping_decoded():  # compressed files decompressed once a run, not once a task
            result = self.matcher.run(params, groups=self._groups, progress=progress,
                                      cancel=cancel, **changes)
        self.last_result = self._dataset(result)
        return self.last_result

    def result_images(self, result: xr.Dataset | None = None) -> dict[str, np.ndarray]:
        """New arrays with each image's sky subtracted (invalid skies: unchanged copies).

        In the collection's units, as `data` (count rates for images compared so).
        """
        result = self._result(result)
        return {
            name: subtracted_copy(self.data(k), result.sky.values[k], bool(result.valid.values[k]),
                                  **_slopes(result, k))
            for k, name in enumerate(self.names)
        }

    def _dataset(self, result: SkyMatchResult) -> xr.Dataset:
        """The engine's result as one Dataset over ``image`` (and ``corner``) and ``pair``."""
        names = list(self.names)
        attrs = {k: _attr(v) for k, v in result.params.items()}
        texts = group_texts(self._groups)
        unit = self._sky_unit()
        sky = {"units": unit} if unit else {}
        labels = self._input_names(result, texts)
        p = result.pairs
        pair_names = [f"{labels[a]}|{labels[b]}" for a, b in zip(p.a, p.b)]
        dataset = xr.Dataset(
            {
                "sky": ("image", result.sky, {"long_name": "sky level to subtract", **sky}),
                "sky_err": ("image", result.sky_err, {"long_name": "1-sigma uncertainty of sky", **sky}),
                "valid": ("image", result.valid),
                "reason": ("image", result.reason.astype(str)),
                "component": ("image", result.component),
                "group": ("image", np.array(texts, dtype=str)),
                "npix": ("image", result.npix),
                "local": ("image", result.local, {"long_name": "input's own statistic", **sky}),
                "delta": ("image", result.delta,
                          {"long_name": "match offset, zero mean per component", **sky}),
                # the overlaps between inputs (an image alone, or a group: its text)
                "a": ("pair", np.array([labels[a] for a in p.a], dtype=str)),
                "b": ("pair", np.array([labels[b] for b in p.b], dtype=str)),
                "stat_a": ("pair", p.stat_a, sky),
                "stat_b": ("pair", p.stat_b, sky),
                "npix_a": ("pair", p.npix_a),
                "npix_b": ("pair", p.npix_b),
                "err_a": ("pair", p.err_a, sky),
                "err_b": ("pair", p.err_b, sky),
                "weight": ("pair", p.weight),
                "pair_valid": ("pair", p.valid, {"long_name": "the pair entered the solve"}),
                "diff_before": ("pair", p.diff_before,
                                {"long_name": "measured sky difference a - b", **sky}),
                "diff_err": ("pair", p.diff_err, {"long_name": "1-sigma error of diff_before", **sky}),
                "diff_after": ("pair", p.diff_after, {"long_name": "residual after the solve", **sky}),
                "robust_weight": ("pair", p.robust_weight,
                                  {"long_name": "factor of the robust solve on the weight"}),
                "flagged": ("pair", p.flagged, {"long_name": "down-weighted by the robust solve"}),
            },
            coords={"image": names, "pair": pair_names},
            attrs=attrs,
        )
        dataset.attrs["skymodel"] = result.params.get("skymodel", "constant")
        if result.plane is not None:
            dataset = dataset.assign(_plane_variables(result, unit))
            # the slope test found no gradient: constants' levels, slopes 0 (slope_significance)
            dataset.attrs["plane_flat"] = int(getattr(result.plane, "flat", False))
        # where each image is, so that a result alone can be mapped (plotting, widgets)
        return dataset.assign(self._positions)

    @property
    def last_pairs(self) -> xr.Dataset | None:
        """Deprecated: the pair diagnostics are in the result, over its ``pair`` dimension.

        The pair variables of `last_result` in their former layout (``valid`` for
        ``pair_valid``).
        """
        warnings.warn(
            "ImageCollection.last_pairs is deprecated: the result of skymatch() holds the pair "
            "diagnostics over its 'pair' dimension (pair_valid, diff_before, diff_after, ...)",
            DeprecationWarning, stacklevel=2,
        )
        if self.last_result is None:
            return None
        return _pair_dataset(self.last_result)

    def _sky_unit(self) -> str:
        """The images' common unit (``BUNIT``), or "" when unknown or mixed."""
        units = {str(s.meta["bunit"]) for s in self._sources if s.meta.get("bunit")}
        known = all(s.meta.get("bunit") for s in self._sources)
        return units.pop() if known and len(units) == 1 else ""

    def _input_names(self, result: SkyMatchResult, texts: list[str]) -> list[str]:
        """Each input's display name: its group's text, or the image name when it is alone."""
        first = {}
        for k, g in enumerate(result.group.tolist()):
            first.setdefault(g, k)
        names = self.names
        return [names[k] if self._groups[k] is None else texts[k]
                for k in (first[g] for g in range(len(result.inputs)))]

    # -- output ----------------------------------------------------------------------------------
    def to_table(self, result: xr.Dataset | None = None):
        """The per-image results as an `astropy.table.Table` (writable as ECSV or CSV).

        The sky columns carry the images' unit when they all have the same (``BUNIT``; the
        slopes per pixel, the gradient per arcsec, its direction in degrees).
        """
        from astropy import units as u
        from astropy.table import Table

        result = self._result(result)
        table = Table()
        table["name"] = list(self.names)
        table["group"] = [str(g) for g in result.group.values]
        table["component"] = result.component.values
        table["sky"] = result.sky.values
        table["sky_err"] = result.sky_err.values
        table["npix"] = result.npix.values
        table["valid"] = result.valid.values
        table["reason"] = [str(r) for r in result.reason.values]
        table["file"] = [s.file for s in self._sources]
        if "slope_x" in result:  # skymodel="plane": sky is the plane's level at the centre
            for name in ("slope_x", "slope_y", "slope_x_err", "slope_y_err", "gradient",
                         "gradient_pa"):
                table[name] = result[name].values
                table[name].description = result[name].attrs.get("long_name", "")
        table["sky"].description = "sky level to subtract"
        table["sky_err"].description = "1-sigma statistical uncertainty of sky"
        for name in table.colnames:  # the images' unit (BUNIT) where the result knows it
            units = result[name].attrs.get("units") if name in result else None
            if units:
                with warnings.catch_warnings():  # ("MJy/sr / pixel": FITS frowns on two slashes)
                    warnings.simplefilter("ignore", u.UnitsWarning)
                    table[name].unit = u.Unit(units, parse_strict="silent")
        table.meta.update({k: _from_attr(k, v) for k, v in result.attrs.items()})
        return table

    def write_copies(self, directory, result: xr.Dataset | None = None, *, subtract: bool = True,
                     overwrite: bool = False, progress=None) -> list[Path]:
        """Write copies of the input files with each image's sky recorded (and subtracted).

        Each input file is copied once, in its own format, with every image (chip) of it
        processed, the way its pipeline records a sky (see `skymatch_nb_ui.io`):

        - FITS files: ``BKGLEVEL``, ``BKGSUB``, ``BKGMETH`` in each science header; HST files
          also ``MDRIZSKY`` (the sky drizzling is still to subtract: drizzle copies that keep
          their sky with AstroDrizzle's ``skysub=False, skyuser="MDRIZSKY"``, subtracted
          ones with ``skysub=False, skyuser="BKGLEVEL"``, so that its cosmic-ray rejection
          still counts the sky's noise; see `skymatch_nb_ui.io.hst`);
        - JWST files: ``meta.background`` (``level``, ``subtracted``, ``method``) and
          ``meta.cal_step.skymatch``, saved by ``stdatamodels`` as the JWST SkyMatchStep does
          (FITS keywords ``BKGLEVEL``, ``BKGSUB``, ``BKGMETH``, ``S_SKYMAT``);
        - Roman files: ``meta.background`` and ``meta.cal_step.skymatch`` as romancal's
          skymatch, saved by ``roman_datamodels``;
        - in-memory images: ``<name>.fits`` with their WCS and the FITS keywords.

        With ``subtract`` the data have the sky subtracted (images without a valid sky are
        copied unchanged and say so).  Input files are never touched; all destinations are
        checked before anything is written (existing files are refused unless
        ``overwrite=True``); each file is written atomically.  With `scheduler` "auto" or
        "processes" and `workers` > 1, many files are written by forked worker processes
        beside this one where forking is safe (a script or the command line), and many JWST
        and Roman files (`COPY_POOL_FROM`) by the pool's worker processes where it is not (a
        Jupyter kernel); an error in one stops the others and removes what they were
        writing.

        Parameters
        ----------
        directory : str or Path
            Where the copies go (created with its parents if needed, as the command line's
            ``--output-dir``); not the directory holding the inputs.
        result : xarray.Dataset, optional
            A result of `skymatch` (default: the last one).
        subtract : bool
            Subtract the sky from the science data (else only record it).
        overwrite : bool
            Replace existing files.
        progress : callable, optional
            Wraps the iterable of files being written, e.g. ``functools.partial(tqdm.tqdm,
            total=len(coll.copy_targets(directory)))``.

        Returns
        -------
        list of Path
            The files written, one per input file, in order of first appearance.

        Examples
        --------
        >>> coll.write_copies("matched/", subtract=True)  # doctest: +SKIP
        [PosixPath('matched/jw01234001001_02101_00001_nrcb1_cal.fits'), ...]
        """
        from . import io

        result = self._result(result)
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(f"output directory {str(directory)!r} is a file; choose a directory")
        plan = self._copy_plan(directory, overwrite=overwrite, subtract=subtract)
        directory.mkdir(parents=True, exist_ok=True)
        method = str(result.attrs.get("skymethod", ""))
        sky, valid = result.sky.values, result.valid.values
        plane = "slope_x" in result
        items = [(members, target) for members, target in plan]
        options = dict(method=method, subtract=subtract, overwrite=overwrite)

        def copy_of(k: int) -> tuple:
            """File ``k``'s images, target, skies, validity and planes (None: constants).

            In the file's units: count rates back to counts.
            """
            members, target = items[k]
            times = [self._sources[i].exptime or 1.0 for i in members]
            planes = [tuple(t * v for v in _slopes(result, i).values())
                      for i, t in zip(members, times)] if plane else None
            return ([self._sources[i].image for i in members], target,
                    [t * float(sky[i]) for i, t in zip(members, times)],
                    [bool(valid[i]) for i in members], planes)

        def write(k: int) -> None:
            images, target, skies, valids, planes = copy_of(k)
            if images[0] is not None:
                io.write_copy(images, target, skies=skies, valid=valids, planes=planes, **options)
            else:
                first = self._sources[items[k][0][0]]
                io.write_array_fits(target, np.asarray(first.load_data()), first.wcs,
                                    sky=skies[0], valid=valids[0],
                                    plane=planes[0] if planes else None, **options)

        bar = iter(progress(items) if progress is not None else items)
        workers, pooled = self._copy_workers(items)  # (after the bar: it may start a thread)
        if workers == pooled == 1:
            for k, _ in enumerate(bar):
                write(k)
            return [target for _, target in plan]
        next(bar, None)  # (a tqdm bar counts an item done when the next one is taken)
        if pooled > 1:  # each file by one of the pool's worker processes
            _write_pooled([copy_of(k) for k in range(len(items))], options, pooled,
                          lambda: next(bar, None), directory)
        else:  # each file by one of `workers` processes (this one and forked ones)
            from .engine._fork import fork_map

            try:
                # (the collector keeps running: a JWST copy leaves cycles of models behind,
                # and with it paused 1,000 JWST copies peaked at 2.8 GB instead of ~1.1)
                fork_map(write, [(k,) for k in range(len(items))], range(len(items)), workers,
                         on_result=lambda k, _: next(bar, None), check=lambda: None,
                         pause_gc=False)
            except BaseException:  # the workers were killed, maybe mid-file: their files go
                from .engine._fork import reap

                reap()
                io.remove_leftovers(directory)
                raise
        for _ in bar:
            pass
        return [target for _, target in plan]

    def _copy_workers(self, items: list) -> tuple[int, int]:
        """Who writes `write_copies`' files: (forked processes, the pool's workers), 1 for none.

        Each copy is read, changed and written by itself (~2-3 ms for a small FITS file, ~90 ms
        for a JWST file through ``stdatamodels``): forked workers beside this one from
        `COPY_FORK_FROM` files (`_execute.file_workers`); where forking is not safe, the
        pool's workers from `COPY_POOL_FROM` files written through their pipeline's library
        (`io.written_by_library`: JWST with a gwcs, Roman), whose workers take a few seconds
        to start; a FITS copy is written faster than a pool's task travels.
        """
        from . import io
        from .engine._execute import file_workers

        forked = file_workers(self.scheduler, self.workers, len(items), COPY_FORK_FROM, fork=True)
        images = [[self._sources[i].image for i in members] for members, _ in items]
        if forked > 1 or not all(None not in file and io.written_by_library(file) for file in images):
            return forked, 1
        return 1, file_workers(self.scheduler, self.workers, len(items), COPY_POOL_FROM, fork=False)

    def write_fits(self, directory, result: xr.Dataset | None = None, *, subtract: bool = True,
                   overwrite: bool = False, progress=None) -> list[Path]:
        """`write_copies` (its former name, kept): copies of the inputs, skies recorded.

        Roman inputs are written as ASDF, whatever this method's name says.
        """
        return self.write_copies(directory, result, subtract=subtract, overwrite=overwrite,
                                 progress=progress)

    def copy_targets(self, directory, *, overwrite: bool = False, subtract: bool = True) -> list[Path]:
        """Where `write_copies` would write, checked now (before a long solve).

        Raises
        ------
        ValueError
            Two inputs with one file name, the inputs' own directory, or a file whose
            background was already subtracted while ``subtract`` is False (JWST, Roman).
        FileExistsError
            Existing destinations without ``overwrite``.

        Examples
        --------
        >>> coll.copy_targets("matched/")  # doctest: +SKIP
        [PosixPath('matched/a_cal.fits'), PosixPath('matched/b_cal.fits')]
        """
        return [target for _, target in self._copy_plan(Path(directory), overwrite=overwrite,
                                                        subtract=subtract)]

    def _copy_plan(self, directory: Path, *, overwrite: bool, subtract: bool):
        """[(image indices of one output file, its destination)], every check done."""
        from . import io

        files: dict[str, list[int]] = {}
        for k, source in enumerate(self._sources):
            key = source.file if source.image is not None else f"{source.name}.fits"
            files.setdefault(key, []).append(k)
        targets = io.copy_destinations(list(files), directory, overwrite=overwrite)
        for members in files.values():
            first = self._sources[members[0]]
            if first.image is not None:
                io.check_copy([self._sources[k].image for k in members], subtract)
        return list(zip(files.values(), targets))

    def _result(self, result):
        if result is None:
            result = self.last_result
        if result is None:
            raise ValueError("no result yet: call skymatch() first or pass a result")
        if list(result.image.values) != list(self.names):
            raise ValueError("the result is not of this collection (its image names differ)")
        return result

    def _position(self, image) -> int:
        if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
            if not -len(self) <= image < len(self):
                raise IndexError(f"image index {image} out of range for {len(self)} images")
            return int(image) % len(self)
        if image not in self._index:
            raise KeyError(f"no image named {image!r}; {some_names(self.names, [image])}")
        return self._index[image]

    # -- display ---------------------------------------------------------------------------------
    def __repr__(self) -> str:
        n_groups = len({g for g in self._groups if g is not None})
        return f"<ImageCollection: {len(self)} images, {n_groups} group(s)>"

    def _repr_html_(self) -> str:
        return _table_html(self)


# -- helpers -------------------------------------------------------------------------------------
def _slopes(result: xr.Dataset, k: int) -> dict:
    """Image ``k``'s sky slopes of a plane result (``subtracted_copy``'s keywords), else none."""
    if "slope_x" not in result:
        return {}
    return {"slope_x": float(result.slope_x.values[k]), "slope_y": float(result.slope_y.values[k])}


def _plane_variables(result: SkyMatchResult, unit: str) -> dict:
    """The variables of a plane result (``skymodel="plane"``): see the interface in NOTES."""
    plane = result.plane
    per_pixel = {"units": f"{unit} / pixel"} if unit else {}
    per_arcsec = {"units": f"{unit} / arcsec"} if unit else {}
    with np.errstate(invalid="ignore"):
        err_x, err_y = np.sqrt(plane.cov[:, 1, 1]), np.sqrt(plane.cov[:, 2, 2])
    coef = ["level", "slope_x", "slope_y"]
    return {
        "slope_x": ("image", plane.slope_x, {"long_name": "sky slope along the image's x", **per_pixel}),
        "slope_y": ("image", plane.slope_y, {"long_name": "sky slope along the image's y", **per_pixel}),
        "slope_x_err": ("image", err_x, {"long_name": "1-sigma uncertainty of slope_x", **per_pixel}),
        "slope_y_err": ("image", err_y, {"long_name": "1-sigma uncertainty of slope_y", **per_pixel}),
        "sky_cov": (("image", "coef", "coef2"), plane.cov,
                    {"long_name": "covariance of (level, slope_x, slope_y)"}),
        "gradient": ("image", plane.gradient,
                     {"long_name": "size of the sky gradient on the sky", **per_arcsec}),
        "gradient_pa": ("image", plane.gradient_pa,
                        {"long_name": "direction the sky increases, east of north", "units": "deg"}),
        "resid_gradient": ("pair", plane.resid_gradient,
                           {"long_name": "gradient of the pair's residuals after the solve",
                            **per_arcsec}),
        "plane_fallback": ("pair", np.asarray(plane.plane_fallback, dtype=str),
                           {"long_name": "why the pair counted as a constant only"}),
        "coef": ("coef", coef),
        "coef2": ("coef2", coef),
    }


def _pair_dataset(result: xr.Dataset) -> xr.Dataset:
    """The pair variables of a result alone, ``pair_valid`` named ``valid`` (the former layout).

    Examples
    --------
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((1, 3), sky=[7, 5, 9])
    >>> pairs = _pair_dataset(ImageCollection.from_arrays(m.images, m.wcs).skymatch(skystat="mean"))
    >>> pairs.pair.values.tolist(), bool(pairs.valid.all())
    (['image0|image1', 'image1|image2'], True)
    """
    pairs = result.drop_dims([d for d in result.dims if d != "pair"])
    return pairs.rename({"pair_valid": "valid"}) if "pair_valid" in pairs else pairs


def _names(names, n: int, default=None) -> list[str]:
    if names is None:
        return list(default) if default is not None else [f"image{k}" for k in range(n)]
    names = [str(x) for x in names] if not isinstance(names, str) else None
    if names is None or len(names) != n:
        raise ValueError(f"names must have one str per image ({n} images)")
    return names


def _stem(path: Path) -> str:
    return re.sub(r"\.(fits?(\.gz|\.fz|\.bz2)?|fz|asdf)$", "", Path(path).name, flags=re.IGNORECASE)


#: The presets of ``group_by`` (lower case; anything else is a header keyword).
GROUP_PRESETS = ("auto", "exposure", "image")


def _check_group_by(group_by) -> None:
    if group_by is None or callable(group_by):
        return
    if not isinstance(group_by, str) or not group_by.strip():
        raise TypeError(
            f"group_by must be one of {GROUP_PRESETS}, a header keyword (str), a callable or "
            f"None; got {group_by!r}"
        )


def _group_labels(records, group_by) -> list | None:
    """One group label per image (None: alone), by the rule ``group_by``."""
    if group_by is None or group_by == "image":
        return None
    if group_by in ("auto", "exposure"):
        _warn_hst_exposure_in_files(records)
    if group_by == "auto":
        by_exposure = [r.kind in ("jwst", "hst") for r in records]
        if not any(by_exposure):
            return None
        return [r.meta["exposure"] if use else None for r, use in zip(records, by_exposure)]
    if group_by == "exposure":
        missing = [r for r in records if r.meta["exposure"] is None and r.kind != "jwst"]
        if missing:
            shown = ", ".join(f"{r.path.name}" for r in missing[:3])
            raise ValueError(
                f"group_by='exposure': {len(missing)} image(s) ({shown}) do not say which "
                "exposure they belong to (no OBS_ID + EXPOSURE, EXP_ID, EXPID, EXPNUM or ROOTNAME "
                "keyword); group them with a keyword (group_by='KEYWORD') or a function"
            )
        # a JWST file without a group_id is alone, as in the pipeline
        return [r.meta["exposure"] for r in records]
    if callable(group_by):
        return [group_by(r.header) for r in records]
    try:
        return [r.keyword(group_by) for r in records]
    except KeyError as error:
        close = difflib.get_close_matches(group_by.lower(), GROUP_PRESETS, n=1)
        if not close:
            raise
        raise KeyError(f"{error.args[0]}; group_by={group_by!r} is read as a header keyword: "
                       f"did you mean group_by={close[0]!r}?") from None


def _warn_hst_exposure_in_files(records) -> None:
    """Warn when HST files of different paths name one exposure (ROOTNAME).

    An HST exposure is one file (its chips share one sky, as in AstroDrizzle, which takes
    each file as an exposure).  Two files of one ROOTNAME are mostly one exposure twice, as
    ``_flt`` and ``_flc``: grouped by exposure, their chips would share one sky, and each
    pixel would count twice.
    """
    files: dict = {}
    for r in records:
        if r.kind == "hst" and r.meta["exposure"] is not None:
            files.setdefault(r.meta["exposure"], {})[str(r.path)] = r.path.name
    twice = {root: sorted(paths.values()) for root, paths in files.items() if len(paths) > 1}
    if twice:
        root, names = next(iter(twice.items()))
        more = f" (and {len(twice) - 1} more exposure(s))" if len(twice) > 1 else ""
        warnings.warn(
            f"{' and '.join(names)} are one HST exposure (ROOTNAME {root}){more}: grouped by "
            "exposure, their chips share one sky. Two versions of one exposure (_flt and "
            "_flc) count its pixels twice: pass one of them (group_by='image' gives every "
            "chip its own sky)",
            SkyMatchWarning, stacklevel=caller_stacklevel())


def _record_names(records) -> list[str]:
    """File name without suffix, plus the extension label for files of several images."""
    per_file: dict[str, int] = {}
    for r in records:
        per_file[str(r.path)] = per_file.get(str(r.path), 0) + 1
    return [
        _stem(r.path) + (f"[{r.label}]" if per_file[str(r.path)] > 1 else "") for r in records
    ]


def _check_label(name: str, label) -> None:
    if label is not None and not isinstance(label, Hashable):
        raise TypeError(f"{name} must be a hashable group label (str, int) or None; got {label!r}")


def group_texts(labels) -> list[str]:
    """How each image's group label is shown (tables, widgets): ``""`` for an image alone.

    Labels that are equal (one group, e.g. ``1`` and ``1.0``) get one text, that of the first;
    different groups never share a text (``1`` and ``"1"`` become ``"1"`` and ``"1 (2)"``).
    The labels themselves are never changed.

    Examples
    --------
    >>> group_texts([1, 1.0, None, "1", "a"])
    ['1', '1', '', '1 (2)', 'a']
    """
    texts: dict = {}
    used: set[str] = set()
    out = []
    for label in labels:
        if label is None:
            out.append("")
            continue
        if label not in texts:
            text, k = str(label), 2
            while text in used or not text.strip():
                text, k = f"{label} ({k})", k + 1
            texts[label] = text
            used.add(text)
        out.append(texts[label])
    return out


def _normal_label(label):
    """A label as stored: numpy scalars as Python ones, missing labels (NaN, pandas.NA) as None."""
    label = label.item() if isinstance(label, np.generic) else label
    return None if is_missing_label(label) else label


def _attr(value):
    """netCDF-friendly attribute values: None becomes the string 'none', bools 0/1."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return value


#: Result attributes that are booleans (stored as 0/1 by `_attr`).
_BOOL_ATTRS = ("match_down", "subtract")


def _from_attr(key: str, value):
    """The Python value of a result attribute, undoing `_attr`.

    For tables' metadata: ECSV writes None as null and booleans as true/false.
    """
    if isinstance(value, str) and value == "none":
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if key in _BOOL_ATTRS and value in (0, 1):
        return bool(value)
    return value


def _mean_direction(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the direction of the summed unit vectors of the corners (degrees)."""
    return xyz_to_lonlat(lonlat_to_xyz(lon, lat).sum(axis=1))


def _image_dataset(source: _Source) -> xr.Dataset:
    variables = {"data": (("y", "x"), source.load_data())}
    mask = source.load_mask()
    if mask is not None:
        variables["mask"] = (("y", "x"), mask)
    return xr.Dataset(variables, attrs={"file": source.file, "ext": source.ext})


_HTML_STYLE = (
    "<style>.smnb-table{border-collapse:collapse;font-family:var(--jp-code-font-family,monospace);"
    "font-size:var(--jp-code-font-size,12px);color:var(--jp-content-font-color0,#000)}"
    ".smnb-table th,.smnb-table td{padding:2px 8px;text-align:left;"
    "border-bottom:1px solid var(--jp-border-color2,#ddd)}"
    ".smnb-table th{color:var(--jp-content-font-color2,#555);font-weight:600}</style>"
)


#: Above this many images the HTML table shows the first `HTML_HEAD` and last `HTML_TAIL`
#: (a survey's 10,000 rows would be a megabyte of page; `ImageCollection.table` has them all).
HTML_ROWS, HTML_HEAD, HTML_TAIL = 50, 10, 5


def _table_html(coll: ImageCollection) -> str:
    """The collection as an HTML table (its rows shortened above `HTML_ROWS` images)."""
    table = coll.table
    columns = ["ny", "nx", "group", "ra", "dec"] + [c for c in META_COLUMNS if c in table] + ["file"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["image"] + columns)
    values = {c: table[c].values for c in columns}
    names = list(coll.names)
    n = len(names)
    shown = list(range(n)) if n <= HTML_ROWS else [*range(HTML_HEAD), *range(n - HTML_TAIL, n)]
    rows = []
    for k in shown:
        if n > HTML_ROWS and k == n - HTML_TAIL:
            more = n - HTML_HEAD - HTML_TAIL
            rows.append(f"<tr><td colspan='{len(columns) + 1}'>&#8942; {more:,} more images "
                        "(all of them in <code>.table</code>)</td></tr>")
        cells = [html.escape(names[k])]
        for c in columns:
            value = values[c][k]
            text = f"{value:.6f}" if c in ("ra", "dec") else ("" if value is None else str(value))
            cells.append(html.escape(text))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    caption = html.escape(repr(coll))
    return (
        f"{_HTML_STYLE}<div><div>{caption}</div><table class='smnb-table'><thead><tr>{head}</tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _write_pooled(arguments: list, options: dict, workers: int, advance, directory: Path) -> None:
    """`io.write_copy` of each file by the pool's worker processes, ``advance()`` after each.

    On an error the files not started are not written, those being written are finished
    (each is atomic), and the error of the first failing file in order is raised.  A worker
    that dies (killed: out of memory?) ends the pool: the files not finished are then written
    here, in order, as forked workers' are (`write_copies`).  Either way, what a dead worker
    left half-written is removed.
    """
    from . import io
    from .engine._execute import pooled_in_order

    calls = [(io.write_copy, (images, target),
              dict(skies=skies, valid=valid, planes=planes, **options))
             for images, target, skies, valid, planes in arguments]
    try:
        pooled_in_order(workers, calls, lambda k, path: advance(), wait_running=True,
                        here_if_broken=True)
    finally:
        io.remove_leftovers(directory)

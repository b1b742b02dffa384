"""A WCS kept packed: bytes instead of a tree of Python objects, made again when it is used.

The gwcs of a JWST or Roman file is a tree of astropy models: ~380 KB of Python objects for a
NIRCam detector (~3,300 of them), ~48 KB pickled, ~14 KB compressed.  Ten thousand files held
as objects take ~4 GB before any work; held packed, ~140 MB.  `PackedWCS` keeps the compressed
pickle and makes the WCS when it is asked for (~1.2 ms); a made WCS stays made, or only the
last `CACHE_SIZE` made (all packed WCS of the process together) when that is set.  The engine
does not keep it made: it keeps what it needs of it with the packed WCS (`kept`: the lean
transforms of `CelestialWCS`, ~55 KB for a NIRCam-like detector), made from it once.

A `PackedWCS` behaves as the WCS it holds: its attributes, calls and the APE 14 methods are
the made WCS's.  What the engine asks of every WCS before any work (its axes, units and
frame) is kept beside the bytes, so checking 10,000 WCS makes none of them.  The made WCS is
shared by whoever asks while it stays made: change it and the change is lost when it is
dropped; `unpack` gives a copy of one's own.

>>> from skymatch_nb_ui.testing import nircam_like_gwcs
>>> packed = PackedWCS(nircam_like_gwcs())
>>> packed.pixel_n_dim, packed.world_axis_units
(2, ('deg', 'deg'))
>>> x, y = packed.pixel_to_world_values(10.0, 20.0)
>>> bool(abs(x - packed.unpack().pixel_to_world_values(10.0, 20.0)[0]) == 0)
True
"""

from __future__ import annotations

import gc
import pickle
import threading
import weakref
import zlib
from collections import OrderedDict
from contextlib import contextmanager

__all__ = ["CACHE_SIZE", "PackedWCS", "collector_paused", "is_gwcs", "live", "made_count", "packed_or_copy"]

#: How many packed WCS stay made at once, all of the process's together (least recently used
#: dropped first), or None: every one made stays made (the default).  A made NIRCam-like gwcs
#: holds ~380 KB.  The engine's runs make each WCS once for what they keep of it (`kept`) and
#: keep none made; what does keep one made is asking for it: ``coll.wcs[k]``, an attribute of
#: the packed WCS, a WCS the engine cannot take apart (then its stages make it at each pass,
#: and a bound below the images costs a make at each: 2,000 JWST files with at most 1,024
#: made took 234 s instead of 171 when the engine still kept them made).
CACHE_SIZE: int | None = None

_LOCK = threading.RLock()  # (re-entrant: a weakref callback may run while it is held)
_MADE: OrderedDict = OrderedDict()  # id(packed) -> weakref to it, least recently used first
_COUNT = [0]  # WCS made from bytes in this process (`made_count`)
_MISSING = object()


class PackedWCS:
    """A WCS (a ``gwcs.WCS``; any picklable APE 14 WCS) kept as compressed bytes.

    Parameters
    ----------
    wcs : object
        The WCS to pack.  It is not kept: the packed one is a copy (pickled), so later changes
        to ``wcs`` do not reach it.

    Attributes
    ----------
    nbytes : int
        Size of the packed bytes.
    pixel_n_dim, world_n_dim, world_axis_physical_types, world_axis_units, \
world_axis_object_classes
        The WCS's own (APE 14), kept beside the bytes: reading them makes nothing.

    Notes
    -----
    Every other attribute, a call (``packed(x, y)``) and the APE 14 methods are those of the
    made WCS (`get`).  Pickling and copying carry the bytes only.
    """

    __slots__ = ("__weakref__", "_axes", "_data", "_kept", "_kind", "_live")

    def __init__(self, wcs):
        low = getattr(wcs, "low_level_wcs", wcs)
        self._data = zlib.compress(pickle.dumps(wcs, protocol=pickle.HIGHEST_PROTOCOL), 1)
        self._axes = _axes_of(low)
        self._kind = f"{type(wcs).__module__}.{type(wcs).__qualname__}"
        self._live = None  # the made WCS while it stays made
        self._kept = None  # what `kept` derived, by key

    @classmethod
    def _from_state(cls, data: bytes, axes: tuple, kind: str) -> PackedWCS:
        packed = cls.__new__(cls)
        packed._data, packed._axes, packed._kind = data, _interned(axes), kind
        packed._live = packed._kept = None
        return packed

    def __reduce__(self):  # (pickle and copy: the bytes, not the made WCS)
        return PackedWCS._from_state, (self._data, self._axes, self._kind)

    # -- the WCS ------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Size of the packed bytes."""
        return len(self._data)

    @property
    def kind(self) -> str:
        """The packed WCS's class, e.g. ``"gwcs.wcs._wcs.WCS"``."""
        return self._kind

    @property
    def is_gwcs(self) -> bool:
        """Whether the packed WCS is a ``gwcs.WCS`` (or of a gwcs subclass)."""
        return self._kind.startswith("gwcs")

    def unpack(self):
        """A new copy of the WCS, one's own (~1.1 ms for a NIRCam-like gwcs).

        The garbage collector is paused meanwhile: the ~3,300 objects of a gwcs would
        otherwise start a collection of the young generations every ~700 of them (4.6-5.4
        ms a WCS inside a run instead of 1.2; nothing made here is garbage).  The full
        collections they cause come after, either way.
        """
        with _LOCK:
            _COUNT[0] += 1
        data = zlib.decompress(self._data)
        with collector_paused():
            return pickle.loads(data)

    def get(self):
        """The made WCS: the one kept made (shared), or made now and kept (see `CACHE_SIZE`)."""
        with _LOCK:
            live = self._live
            if live is not None:
                _MADE.move_to_end(id(self))
                return live
        wcs = self.unpack()
        with _LOCK:
            if self._live is not None:  # made meanwhile (another thread)
                _MADE.move_to_end(id(self))
                return self._live
            key = id(self)
            self._live = wcs
            _MADE[key] = weakref.ref(self, lambda ref, key=key: _forget(key, ref))
            while CACHE_SIZE is not None and len(_MADE) > CACHE_SIZE:
                _, ref = _MADE.popitem(last=False)
                other = ref()
                if other is not None:
                    other._live = None
            return wcs

    def kept(self, key, make):
        """``make(wcs)``, kept with the packed WCS itself: the made WCS need not stay made.

        ``make`` gets the WCS kept made if there is one, else one made for it and dropped
        after.  For what is much smaller than the WCS and is all a run needs of it (the
        engine's lean transforms: `CelestialWCS`).  Not pickled.
        """
        with _LOCK:
            found = _MISSING if self._kept is None else self._kept.get(key, _MISSING)
            live = self._live
        if found is not _MISSING:
            return found
        found = make(live if live is not None else self.unpack())
        with _LOCK:
            if self._kept is None:
                self._kept = {}
            return self._kept.setdefault(key, found)

    # -- behaving as the WCS ------------------------------------------------------------------
    @property
    def low_level_wcs(self) -> PackedWCS:
        """The packed WCS itself (APE 14: the low-level WCS behind a high-level one)."""
        return self

    @property
    def pixel_n_dim(self) -> int:
        """The WCS's (APE 14), kept beside the bytes."""
        return self._axes[0]

    @property
    def world_n_dim(self) -> int:
        """The WCS's (APE 14), kept beside the bytes."""
        return self._axes[1]

    @property
    def world_axis_physical_types(self) -> tuple:
        """The WCS's (APE 14), kept beside the bytes."""
        return self._axes[2]

    @property
    def world_axis_units(self) -> tuple:
        """The WCS's (APE 14), kept beside the bytes."""
        return self._axes[3]

    @property
    def world_axis_object_classes(self):
        """The WCS's (APE 14), kept beside the bytes."""
        return self._axes[4]

    def pixel_to_world_values(self, *pixel):
        """The made WCS's (APE 14)."""
        return self.get().pixel_to_world_values(*pixel)

    def world_to_pixel_values(self, *world):
        """The made WCS's (APE 14)."""
        return self.get().world_to_pixel_values(*world)

    def __call__(self, *args, **kwargs):
        """A call of the made WCS (a gwcs: pixel to world)."""
        return self.get()(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in PackedWCS.__slots__:
            raise AttributeError(name)
        return getattr(self.get(), name)

    def __repr__(self) -> str:
        return f"<PackedWCS of a {self._kind.rsplit('.', 1)[-1]} ({self.nbytes / 1024:.1f} KB packed)>"


def _axes_of(low) -> tuple:
    """What `PackedWCS` keeps of the WCS beside its bytes (None where the WCS does not say)."""
    def value(name):
        try:
            found = getattr(low, name)
        except Exception:  # an APE 14 object without it, or one that fails: as if it did not say
            return None
        return tuple(found) if isinstance(found, list) else found

    types, units = value("world_axis_physical_types"), value("world_axis_units")
    return _interned((value("pixel_n_dim"), value("world_n_dim"),
                      None if types is None else tuple(str(t) for t in types),
                      None if units is None else tuple(str(u) for u in units),
                      value("world_axis_object_classes")))


_AXES: dict = {}  # pickled axes -> the axes: one object for the files of one frame


def _interned(axes: tuple) -> tuple:
    """``axes``, or the equal ones kept already (a frame and its classes: ~5 KB of objects)."""
    try:
        key = pickle.dumps(axes, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # nothing to share
        return axes
    with _LOCK:
        found = _AXES.get(key)
        if found is None and len(_AXES) < 256:  # (a few frames in a process: bounded anyway)
            found = _AXES[key] = axes
    return axes if found is None else found


def _forget(key: int, ref) -> None:
    with _LOCK:
        if _MADE.get(key) is ref:
            del _MADE[key]


def packed_or_copy(wcs):
    """``wcs`` packed (`PackedWCS`): it needs nothing of the file it was read from.

    A WCS that does not pickle is deep-copied instead and kept as it is; None stays None.

    Packing takes ~1.6 ms for a NIRCam-like gwcs (of the ~25 ms that reading a JWST file's
    ASDF extension takes).
    """
    if wcs is None:
        return None
    try:
        return PackedWCS(wcs)
    except Exception:  # any pickling failure: the slower copy
        import copy

        return copy.deepcopy(wcs)


def is_gwcs(wcs) -> bool:
    """Whether ``wcs`` is a gwcs, packed or not (by its class's module: gwcs is not imported)."""
    if isinstance(wcs, PackedWCS):
        return wcs.is_gwcs
    return type(wcs).__module__.startswith("gwcs")


def live(wcs):
    """``wcs`` itself, or for a `PackedWCS` its made WCS (`PackedWCS.get`)."""
    return wcs.get() if isinstance(wcs, PackedWCS) else wcs


def made_count() -> int:
    """How many WCS were made from packed bytes in this process (for tests and benchmarks)."""
    return _COUNT[0]


@contextmanager
def collector_paused():
    """The garbage collector off for the block (if it was on), on again after it.

    For blocks that make thousands of lasting objects at once (a gwcs unpickled, a file's
    ASDF tree read): each thousand or so would otherwise start a collection, and the full
    ones visit every object of the process.  A block's cyclic garbage waits for the next
    collection after it.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()

"""Celestial frames: the WCS of one run expressed in one frame.

A mosaic may mix WCS in different celestial frames: ICRS, FK5 or FK4 at some equinox (FK4
with its E-terms of aberration and its epoch), galactic, ecliptic.  The physical types of
the axes do not tell them apart (FK4 and ICRS are both ``pos.eq.ra``/``pos.eq.dec``), so
the frame is read from the WCS itself (APE 14 ``world_axis_object_classes``: astropy reads
``RADESYS``, ``EQUINOX`` and ``DATE-OBS``/``MJD-OBS`` from a header; a gwcs carries its
``output_frame``).

When every WCS uses the same frame nothing is converted: the geometry is exact in any frame.
When they differ, each WCS whose frame is not ICRS is wrapped so that its sky coordinates
are converted to ICRS by `astropy.coordinates` (the transforms astropy applies, E-terms and
precession included) in both directions, so that overlaps are found where they really are.

Examples
--------
>>> from astropy.wcs import WCS
>>> from skymatch_nb_ui.engine.geometry import CelestialWCS
>>> def tan_wcs(radesys, equinox):
...     w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.crpix = [1, 1]
...     w.wcs.radesys, w.wcs.equinox = radesys, equinox
...     return w
>>> icrs, fk4 = in_one_frame([CelestialWCS(tan_wcs("ICRS", np.nan)), CelestialWCS(tan_wcs("FK4", 1950))])
>>> [float(v.round(4)) for v in icrs.pixel_to_lonlat(0, 0)]  # pixel 0 at CRVAL = (0, 0)
[0.0, 0.0]
>>> [float(v.round(4)) for v in fk4.pixel_to_lonlat(0, 0)]  # (0, 0) in FK4 B1950, in ICRS
[0.6407, 0.2784]
"""

from __future__ import annotations

import numpy as np

__all__ = ["FrameConverted", "in_one_frame", "sky_frame"]


def sky_frame(adapter):
    """The astropy frame of a `CelestialWCS`'s sky coordinates, or None when it does not say."""
    try:
        classes = adapter.wcs.world_axis_object_classes
    except Exception:  # an APE 14 object without it, or one that fails
        return None
    from astropy.coordinates import BaseCoordinateFrame, SkyCoord

    for spec in (classes or {}).values():
        if not isinstance(spec, tuple) or len(spec) < 3:
            continue
        klass, args, kwargs = spec[:3]
        if not (isinstance(klass, type) and issubclass(klass, SkyCoord)):
            continue
        frame = kwargs.get("frame")
        if isinstance(frame, BaseCoordinateFrame) and not frame.has_data and not args and (
            set(kwargs) <= {"frame", "unit"}
        ):
            return frame  # what astropy.wcs and gwcs give: no SkyCoord to build
        try:
            coord = SkyCoord(0.0, 0.0, *args, **{"unit": "deg", **kwargs})
            return coord.frame.replicate_without_data()
        except Exception:  # a frame astropy cannot build: unknown
            return None
    return None


def in_one_frame(adapters: list) -> list:
    """``adapters`` with sky coordinates in one frame: their own if shared, else ICRS.

    Raises
    ------
    ValueError
        When the frames differ and one of them is unknown or cannot be converted to ICRS;
        the message names the WCS and the frames.
    """
    if len(adapters) < 2:
        return list(adapters)
    frames = [sky_frame(a) for a in adapters]
    known = [f for f in frames if f is not None]
    same = all(f.is_equivalent_frame(known[0]) for f in known[1:]) if known else True
    if same:
        # One frame, or WCS that do not say theirs: then the axis types must agree, and a WCS
        # that does not say its frame is taken to be in the frame of the others.
        if len({a.frame for a in adapters}) > 1:
            raise ValueError(
                f"all WCS must use the same celestial frame; got {sorted({a.frame for a in adapters})}, "
                "and not every WCS says which frame it uses (no world_axis_object_classes), "
                "so they cannot be converted. Convert them to one frame (e.g. ICRS) first."
            )
        return list(adapters)
    if len(known) < len(frames):
        unknown = [_name(a, k) for k, (a, f) in enumerate(zip(adapters, frames)) if f is None]
        shown = sorted({_describe(f) for f in known})
        raise ValueError(
            f"the WCS mix celestial frames ({', '.join(shown)} and unknown ones): "
            f"{', '.join(unknown)} do not say their frame (no world_axis_object_classes), so "
            "they cannot be converted to a common one. Give WCS that state their frame "
            "(e.g. astropy.wcs.WCS with RADESYS/EQUINOX), or convert them to one frame first."
        )
    from astropy.coordinates import ICRS

    target = ICRS()
    out = []
    for k, (adapter, frame) in enumerate(zip(adapters, frames)):
        if frame.is_equivalent_frame(target):
            out.append(adapter)
            continue
        try:
            _convert(np.zeros(1), np.zeros(1), frame, target)
        except Exception as exc:  # astropy's reason, passed on
            raise ValueError(
                f"{_name(adapter, k)} uses the celestial frame {_describe(frame)}, which cannot be "
                f"converted to ICRS to be matched with the others ({exc}). Convert its WCS to "
                "ICRS first."
            ) from None
        out.append(FrameConverted(adapter, frame, target))
    return out


class FrameConverted:
    """A `CelestialWCS` whose sky coordinates are converted from its own frame to another.

    It has the methods and attributes of the WCS it wraps; ``pixel_to_lonlat`` returns
    coordinates in ``target`` and ``lonlat_to_pixel`` takes them.
    """

    def __init__(self, adapter, frame, target):
        self._inner, self._frame, self._target = adapter, frame, target

    def __getattr__(self, name):
        if name.startswith("__") or name == "_inner":  # e.g. while unpickling: no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def pixel_to_lonlat(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Map 0-based pixel coordinates to (lon, lat) in degrees in the target frame."""
        lon, lat = self._inner.pixel_to_lonlat(x, y)
        return _convert(lon, lat, self._frame, self._target)

    def lonlat_to_pixel(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """Map (lon, lat) in degrees in the target frame to 0-based pixel coordinates."""
        lon, lat = _convert(lon, lat, self._target, self._frame)
        return self._inner.lonlat_to_pixel(lon, lat)

    def __repr__(self) -> str:
        return f"<{self._inner!r} converted from {_describe(self._frame)} to {_describe(self._target)}>"


def _convert(lon, lat, source, target) -> tuple[np.ndarray, np.ndarray]:
    from astropy import units as u
    from astropy.coordinates import UnitSphericalRepresentation

    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    shape = np.broadcast_shapes(lon.shape, lat.shape)
    rep = UnitSphericalRepresentation(lon.reshape(-1) * u.deg, lat.reshape(-1) * u.deg)
    out = source.realize_frame(rep).transform_to(target).represent_as(UnitSphericalRepresentation)
    return (
        np.asarray(out.lon.to_value(u.deg), float).reshape(shape),
        np.asarray(out.lat.to_value(u.deg), float).reshape(shape),
    )


def _describe(frame) -> str:
    name = type(frame).__name__
    attrs = []
    for attr in ("equinox", "obstime"):
        value = getattr(frame, attr, None)
        if value is not None:
            attrs.append(f"{attr}={value}")
    return f"{name}({', '.join(attrs)})" if attrs else name


def _name(adapter, k: int) -> str:
    return getattr(adapter, "name", None) or f"wcs[{k}]"

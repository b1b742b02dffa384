"""Where images are drawn: footprint centres and the map projection of the widgets and figures.

One rule for every map (the `FootprintMap` widget and `plotting.plot_footprints`):

- the centre of a footprint is the mean direction of its corners
  (`skymatch_nb_ui.engine.geometry.mean_direction`), the centre of the mosaic the mean
  direction of the footprint centres;
- when every corner lies within `MAX_TANGENT_RADIUS` degrees of the mosaic's centre, the map
  is the plane tangent there (gnomonic, ``TAN``), north up and east (larger RA) left;
- otherwise (fields far apart, a survey wider than a tangent plane shows well) it is an
  all-sky Hammer-Aitoff map (``AIT``, equal area) centred on the equator, with its seam in the
  widest gap between the images' longitudes.  Any collection the engine accepts can be drawn.

Coordinates of a projection are ``(xi, eta)`` in degrees, east and north positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..engine.geometry import lonlat_to_xyz, mean_direction

__all__ = ["MAX_TANGENT_RADIUS", "SkyProjection", "footprint_centres", "sky_projection",
           "tangent_projection"]

#: The largest angle (degrees) between a footprint corner and the mosaic's centre that a
#: tangent-plane map shows; beyond it (the gnomonic scale at 60 degrees is 4 times that at the
#: centre) maps are all-sky.
MAX_TANGENT_RADIUS = 60.0


@dataclass(frozen=True)
class SkyProjection:
    """A map projection of the sky: ``"tangent"`` (gnomonic) or ``"allsky"`` (Hammer-Aitoff).

    Attributes
    ----------
    kind : {'tangent', 'allsky'}
        The projection.
    lon, lat : float
        Its centre in degrees: the tangent point, or the all-sky map's centre (``lat`` 0).
    radius : float
        The largest angle (degrees) between a footprint corner and the mosaic's centre.
    """

    kind: Literal["tangent", "allsky"]
    lon: float
    lat: float
    radius: float

    @property
    def label(self) -> str:
        """A short description for a map's legend or a figure's note."""
        if self.kind == "tangent":
            return "tangent plane"
        return (f"all-sky (Hammer-Aitoff): the images lie up to {self.radius:.0f}° from their "
                f"centre, more than one tangent plane shows ({MAX_TANGENT_RADIUS:.0f}°)")

    def project(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """``(xi, eta)`` in degrees (east, north) of points given in degrees (any shape).

        A 2-D array is taken for footprints, one row of corners each: on an all-sky map the
        corners are unwrapped about their footprint's centre, so that a footprint on the seam
        sticks out of the map's edge rather than being torn across it.
        """
        lon, lat = np.asarray(lon, float), np.asarray(lat, float)
        if self.kind == "tangent":
            return _gnomonic(lon, lat, self.lon, self.lat)
        return _hammer_aitoff(lon, lat, self.lon)


def footprint_centres(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) in degrees of each footprint's centre from its corners, shape (n, m) -> (n,)."""
    return mean_direction(np.asarray(lon, float), np.asarray(lat, float))


def sky_projection(lon, lat) -> SkyProjection:
    """The map projection of footprints with these corners (degrees, shape (n, m)).

    Examples
    --------
    >>> sky_projection([[10.0, 10.1]], [[0.0, 0.1]]).kind
    'tangent'
    >>> p = sky_projection([[0.0, 0.1], [180.0, 180.1]], [[0.0, 0.1], [0.0, 0.1]])
    >>> p.kind, p.lat
    ('allsky', 0.0)
    """
    lon, lat = np.atleast_2d(np.asarray(lon, float)), np.atleast_2d(np.asarray(lat, float))
    centre, radius = _centre_and_radius(lon, lat)
    if centre is not None and radius <= MAX_TANGENT_RADIUS:
        return SkyProjection("tangent", *centre, radius=radius)
    clon, _ = footprint_centres(lon, lat)
    return SkyProjection("allsky", _allsky_centre(clon), 0.0,
                         radius=180.0 if centre is None else radius)


def tangent_projection(lon, lat) -> SkyProjection:
    """The tangent-plane projection of these footprints; ValueError when it cannot show them.

    Raises
    ------
    ValueError
        When a corner lies more than `MAX_TANGENT_RADIUS` from the centre (`sky_projection`
        then draws an all-sky map).
    """
    projection = sky_projection(lon, lat)
    if projection.kind != "tangent":
        raise ValueError(
            "the footprints are too spread out for one tangent-plane map: a corner lies "
            f"{projection.radius:.0f} degrees from their centre (at most "
            f"{MAX_TANGENT_RADIUS:.0f}; no tangent plane shows more than a hemisphere); "
            "sky_projection() draws them on an all-sky map instead"
        )
    return projection


# -- helpers -------------------------------------------------------------------------------------
def _centre_and_radius(lon: np.ndarray, lat: np.ndarray) -> tuple[tuple[float, float] | None, float]:
    """The mosaic's centre and the largest distance of a corner from it, in degrees.

    The centre is the mean direction of the footprint centres; None when they balance out.
    """
    centres = lonlat_to_xyz(*footprint_centres(lon, lat))
    total = centres.sum(axis=0)
    norm = np.linalg.norm(total)
    if not np.isfinite(norm) or norm < 1e-9 * len(centres):
        return None, 180.0
    direction = total / norm
    cos = np.clip(lonlat_to_xyz(lon, lat).reshape(-1, 3) @ direction, -1.0, 1.0)
    radius = float(np.degrees(np.arccos(cos.min())))
    clon = float(np.degrees(np.arctan2(direction[1], direction[0])) % 360.0)
    clat = float(np.degrees(np.arcsin(np.clip(direction[2], -1.0, 1.0))))
    return (clon, clat), radius


def _gnomonic(lon, lat, lon0: float, lat0: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (degrees) on the plane tangent at (lon0, lat0): east, north."""
    a, d = np.radians(lon - lon0), np.radians(lat)
    d0 = np.radians(lat0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def _wrap(dlon):
    """Longitude differences in [-180, 180)."""
    return (dlon + 180.0) % 360.0 - 180.0


def _hammer_aitoff(lon, lat, lon0: float) -> tuple[np.ndarray, np.ndarray]:
    """Hammer-Aitoff coordinates (degrees, FITS ``AIT``) about (lon0, 0).

    Footprints (the rows of a 2-D array) are kept whole.
    """
    if lon.ndim == 2:
        centre = footprint_centres(lon, lat)[0][:, None]
        dlon = _wrap(centre - lon0) + _wrap(lon - centre)
    else:
        dlon = _wrap(lon - lon0)
    half, phi = np.radians(dlon) / 2.0, np.radians(lat)
    gamma = np.sqrt(2.0 / (1.0 + np.cos(phi) * np.cos(half)))
    return np.degrees(2.0 * gamma * np.cos(phi) * np.sin(half)), np.degrees(gamma * np.sin(phi))


def _allsky_centre(lon: np.ndarray) -> float:
    """The central longitude of an all-sky map: opposite the widest gap between the images.

    The seam (at centre + 180) lies in the middle of the widest gap between the images'
    longitudes, so it crosses no image if it can.
    """
    ordered = np.sort(np.asarray(lon, float) % 360.0)
    gaps = np.diff(np.concatenate([ordered, ordered[:1] + 360.0]))
    k = int(np.argmax(gaps))
    seam = ordered[k] + gaps[k] / 2.0
    return float((seam + 180.0) % 360.0)

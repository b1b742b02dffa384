"""How fitted sky planes are shown: gradient arrows and planes on a grid, for maps and figures.

A result of ``skymodel="plane"`` (``attrs["skymodel"] == "plane"``) gives each image a plane:
``sky`` (its level at the image centre), ``slope_x``/``slope_y`` (per pixel along the image's
own axes) and, on the sky, ``gradient`` (size, sky units per arcsec) and ``gradient_pa``
(degrees east of north of the direction the sky increases).  The views draw the plane from
its sky form, so that a result alone (its footprints, centres, gradients) is enough:

- `gradient_tips`: where each image's gradient arrow ends (from the footprint centre, along
  the position angle, length by size: the widget's map and `plotting.plot_footprints` draw
  the same arrows);
- `plane_grid`, `plane_grids`: an image's (or many images') plane evaluated on a grid of
  cells over its footprint (the figures' `plotting.plot_planes`).

Examples
--------
>>> import xarray as xr
>>> result = xr.Dataset(
...     {"sky": ("image", [1.0]), "slope_x": ("image", [-0.05]), "slope_y": ("image", [0.0]),
...      "gradient": ("image", [0.5]), "gradient_pa": ("image", [90.0]),
...      "ra": ("image", [10.0]), "dec": ("image", [0.0]), "valid": ("image", [True]),
...      "footprint_ra": (("image", "corner"), [[10.01, 9.99, 9.99, 10.01]]),
...      "footprint_dec": (("image", "corner"), [[-0.01, -0.01, 0.01, 0.01]])},
...     attrs={"skymodel": "plane"})
>>> lon, lat = gradient_tips(result)
>>> bool(lon[0] > 10.0), round(float(lat[0]), 9)    # east: towards larger RA
(True, 0.0)
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..engine.geometry import lonlat_to_xyz, xyz_to_lonlat

__all__ = ["ARROW_FRACTION", "PLANE_VARIABLES", "gradient_tips", "gradient_unit", "is_plane",
           "plane_grid", "plane_grids", "plane_on_sky"]

#: What a plane result has over ``image`` beyond a constant one.
PLANE_VARIABLES = ("slope_x", "slope_y", "gradient", "gradient_pa")

#: The longest gradient arrow is this fraction of the median footprint radius.
ARROW_FRACTION = 0.8


def is_plane(result: xr.Dataset | None) -> bool:
    """Whether ``result`` holds fitted planes (``skymodel="plane"`` and its variables)."""
    return (result is not None and result.attrs.get("skymodel") == "plane"
            and all(v in result.variables for v in PLANE_VARIABLES))


def gradient_unit(unit: str) -> str:
    """The unit of a gradient for a sky ``unit``: ``"MJy/sr/arcsec"``, or ``"per arcsec"``."""
    return f"{unit}/arcsec" if unit else "per arcsec"


def _offset(lon, lat, pa, distance):
    """(lon, lat) reached from (lon, lat) along position angle ``pa`` by ``distance`` (deg)."""
    lon, lat, pa, d = (np.radians(np.asarray(v, float)) for v in (lon, lat, pa, distance))
    lat2 = np.arcsin(np.sin(lat) * np.cos(d) + np.cos(lat) * np.sin(d) * np.cos(pa))
    lon2 = lon + np.arctan2(np.sin(pa) * np.sin(d) * np.cos(lat),
                            np.cos(d) - np.sin(lat) * np.sin(lat2))
    return np.degrees(lon2) % 360.0, np.degrees(lat2)


def _radii(result: xr.Dataset) -> np.ndarray:
    """Each footprint's radius (degrees): its largest corner distance from its centre."""
    centre = lonlat_to_xyz(result["ra"].values, result["dec"].values)
    corners = lonlat_to_xyz(result["footprint_ra"].values, result["footprint_dec"].values)
    cosine = np.einsum("nk,nck->nc", centre, corners)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))).max(axis=1)


def gradient_tips(result: xr.Dataset, *, fraction: float = ARROW_FRACTION):
    """Where each image's gradient arrow ends: (lon, lat) in degrees, NaN for no arrow.

    The arrows start at the footprint centres (``ra``, ``dec``) and point along
    ``gradient_pa`` (the direction the sky increases); the largest ``gradient`` among the
    valid images gets ``fraction`` of the median footprint radius, the others in
    proportion.  Images without a valid sky or with a zero or unknown gradient get none.
    """
    n = result.sizes["image"]
    if not is_plane(result):
        return np.full(n, np.nan), np.full(n, np.nan)
    size = result["gradient"].values.astype(float)
    pa = result["gradient_pa"].values.astype(float)
    shown = np.isfinite(size) & np.isfinite(pa) & (size > 0)
    if "valid" in result:
        shown &= result["valid"].values.astype(bool)
    lon, lat = np.full(n, np.nan), np.full(n, np.nan)
    if not shown.any():
        return lon, lat
    length = fraction * float(np.median(_radii(result))) * size / size[shown].max()
    lon[shown], lat[shown] = _offset(result["ra"].values[shown], result["dec"].values[shown],
                                     pa[shown], length[shown])
    return lon, lat


def plane_on_sky(result: xr.Dataset, k: int, lon, lat) -> np.ndarray:
    """Image ``k``'s fitted plane at sky positions (degrees): sky + gradient . offset.

    The offset from the image centre is taken in the plane tangent there, in arcsec; for a
    constant result (or an image without a gradient) the value is ``sky`` everywhere.
    """
    lon, lat = np.broadcast_arrays(np.asarray(lon, float), np.asarray(lat, float))
    return _planes_at(result, np.array([k]), lon[None], lat[None])[0]


def _planes_at(result: xr.Dataset, images: np.ndarray, lon, lat) -> np.ndarray:
    """`plane_on_sky` of ``images`` at once: ``lon``, ``lat`` with one row per image."""
    rows = (slice(None),) + (None,) * (lon.ndim - 1)
    level = result["sky"].values[images].astype(float)[rows]
    if not is_plane(result):
        return np.broadcast_to(level, lon.shape).copy()
    size = result["gradient"].values[images].astype(float)
    pa = result["gradient_pa"].values[images].astype(float)
    unknown = ~(np.isfinite(size) & np.isfinite(pa))
    size[unknown], pa[unknown] = 0.0, 0.0
    ra = result["ra"].values[images].astype(float)[rows]
    dec = result["dec"].values[images].astype(float)[rows]
    xi, eta = _standard(lon, lat, ra, dec)
    pa = np.radians(pa)[rows]
    along = xi * np.sin(pa) + eta * np.cos(pa)
    return level + size[rows] * along * 3600.0


def _standard(lon, lat, lon0, lat0):
    """Gnomonic standard coordinates (xi east, eta north; degrees) about (lon0, lat0)."""
    a, d, d0 = np.radians(lon - lon0), np.radians(lat), np.radians(lat0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def plane_grid(result: xr.Dataset, k: int, cells: int = 12):
    """Image ``k``'s plane on ``cells`` x ``cells`` cells over its footprint.

    The cells split the footprint's four corners (in the order of the image's pixel outline)
    bilinearly, on the sphere.

    Returns
    -------
    lon, lat : ndarray, shape (cells + 1, cells + 1)
        The cells' corners (degrees).
    values : ndarray, shape (cells, cells)
        The plane at the cells' centres (`plane_on_sky`).
    """
    lon, lat, values = plane_grids(result, [k], cells)
    return lon[0], lat[0], values[0]


def plane_grids(result: xr.Dataset, images, cells: int = 12):
    """`plane_grid` of several images at once: the same values, without a loop over them.

    Parameters
    ----------
    result : xarray.Dataset
        A result whose footprints have 4 corners.
    images : sequence of int
        The images' positions.
    cells : int
        Cells along each side of a footprint.

    Returns
    -------
    lon, lat : ndarray, shape (len(images), cells + 1, cells + 1)
    values : ndarray, shape (len(images), cells, cells)
    """
    images = np.asarray(images, dtype=int).reshape(-1)
    corners = lonlat_to_xyz(result["footprint_ra"].values[images],
                            result["footprint_dec"].values[images])
    if corners.shape[1] != 4:
        raise ValueError(f"plane_grid needs footprints of 4 corners; these have {corners.shape[1]}")
    corners = corners[:, :, None, None, :]

    def spread(steps):
        u = steps[None, None, :, None]
        v = steps[None, :, None, None]
        xyz = ((1 - u) * (1 - v) * corners[:, 0] + u * (1 - v) * corners[:, 1]
               + u * v * corners[:, 2] + (1 - u) * v * corners[:, 3])
        return xyz_to_lonlat(xyz / np.linalg.norm(xyz, axis=-1, keepdims=True))

    nodes = spread(np.linspace(0.0, 1.0, cells + 1))
    return nodes[0], nodes[1], _planes_at(result, images, *spread((np.arange(cells) + 0.5) / cells))

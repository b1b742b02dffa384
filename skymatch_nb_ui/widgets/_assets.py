"""Where the widgets' ES modules and CSS live: `js/src/` in a checkout, packaged in a wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGED = Path(__file__).parent / "js"  # the wheel force-includes js/src/ here
_CHECKOUT = Path(__file__).resolve().parents[2] / "js" / "src"  # editable installs, checkouts


@cache
def asset(name: str) -> str:
    """The text of ``js/src/<name>`` (e.g. ``"footprint_map.js"``)."""
    for folder in (_PACKAGED, _CHECKOUT):
        path = folder / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"widget asset {name!r} not found in {_PACKAGED} or {_CHECKOUT}")

"""Warnings of the package's own, so that users can filter them precisely."""

__all__ = ["DisconnectedMosaicWarning", "SkyMatchWarning"]


class SkyMatchWarning(UserWarning):
    """Base class of the warnings of skymatch_nb_ui."""


class DisconnectedMosaicWarning(SkyMatchWarning):
    """The overlap graph falls apart: skies are not matched between its components."""

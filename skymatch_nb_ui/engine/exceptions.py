"""Warnings of the package's own, so that users can filter them precisely."""

__all__ = ["DisconnectedMosaicWarning", "SkyMatchCancelled", "SkyMatchWarning"]


class SkyMatchWarning(UserWarning):
    """Base class of the warnings of skymatch_nb_ui."""


class DisconnectedMosaicWarning(SkyMatchWarning):
    """The overlap graph falls apart: skies are not matched between its components."""


class SkyMatchCancelled(Exception):
    """A run was cancelled (its ``cancel`` event was set) before it finished.

    The results of the tasks that had finished are kept by the `SkyMatcher`: the next run
    starts from them.
    """

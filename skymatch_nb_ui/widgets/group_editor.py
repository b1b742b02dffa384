"""GroupEditor: see and edit which images share one sky.

Images with the same group label share one sky level (one "input" of the solve); an image
without a label is alone.  The editor shows each group as a coloured chip followed by its
members, and edits the groups of an `ImageCollection`: assign the selected images to a new or
an existing group, rename a group, ungroup, apply a preset, undo.  All edits happen in Python
(the front end only sends what the user asked for), so every UI action is also a method.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import anywidget
import numpy as np
import traitlets

from ..collection import META_COLUMNS, group_texts
from ..display.encodings import group_palette
from ..engine._validate import few_of, some_names
from ._assets import css_path, esm

__all__ = ["GroupEditor"]

#: How many edits `GroupEditor.undo` can take back.
UNDO_DEPTH = 100

ALONE_PRESET = "alone"
KEYWORD_PRESET = "by:"


class GroupEditor(anywidget.AnyWidget):
    """Edit the sky groups of an `ImageCollection`: chips, presets, warnings and undo.

    The editor is the one writer of the groups in the widgets: every accepted edit (of the
    page, of a method, of `groups`, of `set_labels`, an undo) is written to
    ``collection.groups`` in one place and shown in the `groups` traitlet;
    a rejected one raises `ValueError` (from Python) or shows its message in the widget
    (from the UI, through the `error` traitlet).  The editor shows labels as text
    (`skymatch_nb_ui.collection.group_texts`) but never changes the collection's own labels:
    a group it did not rename keeps its label (``1`` stays the int ``1``); new and renamed
    groups get the text typed.

    In the widget, every control is a button (Tab and Enter work): an image's button toggles
    it in `selected`; a group's chip selects its members (shift adds them); typing a name and
    Enter (or "Assign") puts the selected images in that group, new or existing; "+ selected"
    adds them to that group; "Rename" edits the label in place (Enter or leaving the field
    applies it, Escape cancels); "Dissolve" makes the group's images alone; "Ungroup" does that
    for the selected images; the presets regroup everything; "Undo" (or Ctrl+Z) steps back.

    Parameters
    ----------
    collection : ImageCollection
        The images whose groups are edited.

    Attributes
    ----------
    groups : dict
        {image name: group label as text, or None (alone)}, in image order.  Two-way:
        assigning it (a mapping; images left out become alone, ``""`` means alone, other
        labels are turned into str) is an edit like any other and can be undone.
    selected : list of str
        The selected image names (shared with the map and the table by the app).
    names : list of str
        The image names, in order (read-only).
    colors : dict
        {label: "#rrggbb"}, from `skymatch_nb_ui.display.encodings.group_palette` in order of
        first appearance, as the other views colour groups.
    presets : list of dict
        One-click groupings: ``{"id", "label", "title"}``; ``"alone"`` and one ``"by:<column>"``
        per metadata column of ``collection.table`` that groups some images together while
        leaving at least two inputs to match (e.g. ``"by:exposure"``).
    active_preset : str
        The id of the preset that gives the current groups, or ``""``.
    isolated : list of str
        Labels of groups that overlap no image outside themselves: their sky cannot be matched
        to the rest (e.g. a group holding a whole disconnected part of the mosaic); from
        `ImageCollection.isolated_groups`.
    can_undo : bool
        Whether `undo` has an edit to take back.
    error : str
        The message of the last edit the UI asked for and Python refused ("" after a success).
    from_page : bool
        True while the editor carries out a request from the page (a click), False for calls
        from Python: the app solves only the former in the background.

    Notes
    -----
    Renaming a group to a label that another group already has is refused rather than merged:
    merging changes which images share a sky, which a rename should never do silently.  To
    merge two groups, assign the members of one to the other (``assign(names, other)``).

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> from skymatch_nb_ui.widgets import GroupEditor
    >>> m = make_mosaic((1, 4))
    >>> coll = ImageCollection.from_arrays(
    ...     m.images, m.wcs, names=m.names,
    ...     meta=[{"exposure": e} for e in ("e1", "e1", "e2", "e2")])
    >>> editor = GroupEditor(coll)
    >>> [p["id"] for p in editor.presets]
    ['alone', 'by:exposure']
    >>> editor.apply_preset("by:exposure")
    >>> coll.groups
    {'img00': 'e1', 'img01': 'e1', 'img02': 'e2', 'img03': 'e2'}
    >>> editor.rename("e2", "second")
    >>> editor.ungroup(["img00"])
    >>> editor.groups
    {'img00': None, 'img01': 'e1', 'img02': 'second', 'img03': 'second'}
    >>> editor.undo()
    >>> editor.groups["img00"]
    'e1'
    >>> editor.rename("e1", "second")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: rename('e1', 'second'): a group named 'second' already exists; ...
    """

    _esm = esm("group_editor.js")
    _css = css_path("group_editor.css")

    groups = traitlets.Dict().tag(sync=True)
    selected = traitlets.List(traitlets.Unicode()).tag(sync=True)
    names = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    colors = traitlets.Dict(read_only=True).tag(sync=True)
    presets = traitlets.List(traitlets.Dict(), read_only=True).tag(sync=True)
    active_preset = traitlets.Unicode("", read_only=True).tag(sync=True)
    isolated = traitlets.List(traitlets.Unicode(), read_only=True).tag(sync=True)
    can_undo = traitlets.Bool(False, read_only=True).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, collection, **kwargs):
        self._collection = collection
        self._history: list[list] = []  # the collection's labels before each edit
        self._showing = False  # True while `groups` is set to show the collection's labels
        self._from_page = False
        self._labels: dict = {}  # text shown -> the collection's own label
        self._shown: list = list(collection.groups.values())  # the labels `groups` shows
        super().__init__(**kwargs)
        self._preset_groups = _preset_groupings(collection)
        self.set_trait("names", list(collection.names))
        self.set_trait("presets", [meta for meta, _ in self._preset_groups.values()])
        self._show()
        self.on_msg(self._on_message)

    @property
    def collection(self):
        """The `ImageCollection` being edited."""
        return self._collection

    @property
    def from_page(self) -> bool:
        """True while a request from the page (not a Python call) is being carried out."""
        return self._from_page

    # -- edits -----------------------------------------------------------------------------------
    def assign(self, names, label: str) -> None:
        """Put the images ``names`` in the group ``label`` (a new one, or join an existing one).

        Examples
        --------
        >>> editor.assign(["img00", "img01"], "pair")          # doctest: +SKIP
        """
        names = self._checked_names(names, "assign")
        label = _checked_label(label, "assign")
        self.groups = {**self.groups, **{n: label for n in names}}

    def ungroup(self, names) -> None:
        """Make the images ``names`` alone; pass all members of a group to dissolve it.

        Examples
        --------
        >>> editor.ungroup(editor.members("pair"))            # doctest: +SKIP
        """
        names = self._checked_names(names, "ungroup")
        self.groups = {**self.groups, **{n: None for n in names}}

    def rename(self, old: str, new: str) -> None:
        """Rename the group ``old`` to ``new`` (refused if a group ``new`` exists).

        Examples
        --------
        >>> editor.rename("pair", "exposure 1")               # doctest: +SKIP
        """
        labels = self.labels
        if old not in labels:
            raise ValueError(f"rename({old!r}, {new!r}): there is no group {old!r}; the groups are {labels}")
        new = _checked_label(new, "rename")
        if new == old:
            return
        if new in labels:
            raise ValueError(
                f"rename({old!r}, {new!r}): a group named {new!r} already exists; to merge the "
                f"two groups, assign the members of {old!r} to it: "
                f"assign(editor.members({old!r}), {new!r})"
            )
        self.groups = {n: (new if g == old else g) for n, g in self.groups.items()}

    def apply_preset(self, preset_id: str) -> None:
        """Regroup all images at once: ``"alone"`` or ``"by:<column>"`` (see `presets`).

        Examples
        --------
        >>> editor.apply_preset("by:exposure")                # doctest: +SKIP
        """
        if not isinstance(preset_id, str) or preset_id not in self._preset_groups:
            raise ValueError(
                f"apply_preset({preset_id!r}): unknown preset; the presets are {list(self._preset_groups)}"
            )
        self.groups = self._preset_groups[preset_id][1]

    def set_labels(self, groups) -> None:
        """Give the images these labels, as they are (an int stays an int): one undo step.

        ``groups``: a mapping {image name: label} (images left out become alone) or one label
        per image, as ``ImageCollection.groups`` takes them (it validates them).  This is how
        `SkyMatchApp.groups` writes.

        Examples
        --------
        >>> editor.set_labels({"img00": 1, "img01": 1})       # doctest: +SKIP
        """
        self._write(self._collection._checked_groups(groups))

    def undo(self) -> None:
        """Take back the last edit (each edit, preset or assignment of `groups` is one step)."""
        if not self._history:
            raise ValueError("undo(): there is no edit to undo")
        self._write(self._history.pop(), record=False)

    def refresh(self) -> None:
        """Re-read the groups from the collection (after it was changed without the editor).

        Like any change of `groups`, this is one step `undo` can take back.
        """
        current = list(self._collection.groups.values())
        if not _same_labels(current, self._shown):
            self._history = (self._history + [self._shown])[-UNDO_DEPTH:]
        self._show()

    # -- reading ---------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """The group labels, in order of first appearance."""
        return list(dict.fromkeys(g for g in self.groups.values() if g is not None))

    def members(self, label: str) -> list[str]:
        """The images of the group ``label``, in image order."""
        return [n for n, g in self.groups.items() if g == label]

    # -- traitlets -------------------------------------------------------------------------------
    @traitlets.validate("groups")
    def _validate_groups(self, proposal):
        groups = proposal["value"]
        if not isinstance(groups, Mapping):
            raise traitlets.TraitError(f"groups must be a dict {{image name: label}}; got {groups!r}")
        unknown = [n for n in groups if n not in self._collection]
        if unknown:
            raise traitlets.TraitError(
                f"groups names images that are not in the collection: {few_of(unknown)}; "
                f"{some_names(self._collection.names, unknown[:3])}"
            )
        return {n: _label_or_none(groups.get(n)) for n in self._collection.names}

    @traitlets.observe("groups")
    def _on_groups(self, change):
        if not self._showing:  # an edit of the texts (the page, Python): write its labels
            self._write(list(self._labels_of(change["new"]).values()))

    def _write(self, labels: list, *, record: bool = True) -> None:
        """The one place the widgets write the collection's groups; then show them."""
        current = list(self._collection.groups.values())
        if not _same_labels(labels, current):
            if record:
                self._history = (self._history + [current])[-UNDO_DEPTH:]
            self._collection.groups = labels
        self.error = ""
        self._show()

    def _show(self) -> None:
        """Show the collection's labels: `groups` (as text) and what derives from them."""
        self._shown = list(self._collection.groups.values())
        self._showing = True
        try:
            self.groups = self._texts(self._collection.groups)
        finally:
            self._showing = False
        self._refresh_derived()

    @traitlets.validate("selected")
    def _validate_selected(self, proposal):
        return check_names(self._collection, proposal["value"], "selected")

    def _refresh_derived(self) -> None:
        groups = self.groups
        with self.hold_trait_notifications():
            palette = group_palette(g or "" for g in groups.values())
            self.set_trait("colors", {k: v for k, v in palette.items() if k})
            self.set_trait("isolated", self._collection.isolated_groups(groups))
            self.set_trait("active_preset", self._active_preset(groups))
            self.set_trait("can_undo", bool(self._history))

    # -- messages from the front end -------------------------------------------------------------
    def _on_message(self, _widget, content, _buffers):
        """Carry out a request of the page; a bad one is shown in `error`, never raised."""
        try:
            action = self._request(content)
        except ValueError as exc:
            self.error = str(exc)
            return
        self._from_page = True
        try:
            action()
        except (ValueError, TypeError) as exc:
            self.error = str(exc)
        finally:
            self._from_page = False

    def _request(self, content):
        """The edit a page message asks for, its fields checked (ValueError if malformed)."""
        kind = content.get("type") if isinstance(content, dict) else None
        fields = _REQUESTS.get(kind) if isinstance(kind, str) else None
        if fields is None:
            raise ValueError(f"unknown request from the front end: {_short(content)}")
        values = {name: content.get(name) for name in fields}
        names = values.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"request {kind!r} from the front end: names must be a list of image names; "
                f"got {_short(names)}"
            )
        actions = {
            "assign": lambda: self.assign(values["names"], values["label"]),
            "ungroup": lambda: self.ungroup(values["names"]),
            "rename": lambda: self.rename(values["old"], values["new"]),
            "preset": lambda: self.apply_preset(values["id"]),
            "undo": self.undo,
        }
        return actions[kind]

    # -- helpers ---------------------------------------------------------------------------------
    def _texts(self, groups: Mapping) -> dict:
        """{name: text or None} of the collection's labels.

        Remembers which label each text stands for, so that writing the groups back keeps the
        collection's labels.
        """
        texts = group_texts(groups.values())
        for label, text in zip(groups.values(), texts):
            if label is not None:
                self._labels.setdefault(text, label)
        return {n: (t or None) for n, t in zip(groups, texts)}

    def _labels_of(self, texts: Mapping) -> dict:
        """The collection's groups for the texts shown.

        An image whose text did not change keeps its own label; the others get the label that
        text stands for (or the text itself).
        """
        current = self._collection.groups
        shown = self._texts(current)
        return {n: current[n] if t == shown[n] else (None if t is None else self._labels.get(t, t))
                for n, t in texts.items()}

    def _checked_names(self, names, what: str) -> list[str]:
        names = check_names(self._collection, names, what)
        if not names:
            raise ValueError(f"{what}(): no images given; select one or more images first")
        return names

    def _active_preset(self, groups: dict) -> str:
        current = _partition(groups)
        for preset_id, (_, preset) in self._preset_groups.items():
            if _partition(preset) == current:
                return preset_id
        return ""


# -- shared with the other views -----------------------------------------------------------------
def check_names(collection, names, what: str) -> list[str]:
    """``names`` as a list of distinct image names of ``collection``; ValueError if one is not."""
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise ValueError(f"{what}: expected a list of image names; got {_short(names)}")
    names = list(names)
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what}: image names are str; got {_short(names)}")
    unknown = [n for n in names if n not in collection]
    if unknown:
        raise ValueError(
            f"{what}: no image named {', '.join(map(repr, unknown))}; "
            f"the images are {list(collection.names)}"
        )
    return list(dict.fromkeys(names))


# -- module helpers ------------------------------------------------------------------------------
#: The requests the page sends (model.send) and their fields.  ``names`` must be a list of str
#: (checked here: a name is hashed); the methods check the other fields with their messages.
_REQUESTS = {
    "assign": ("names", "label"),
    "ungroup": ("names",),
    "rename": ("old", "new"),
    "preset": ("id",),
    "undo": (),
}


def _short(value, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters (messages can be long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _same_labels(a: list, b: list) -> bool:
    """Equal labels of equal types (``1`` and ``1.0`` are different labels to keep)."""
    return len(a) == len(b) and all(type(x) is type(y) and x == y for x, y in zip(a, b))


def _preset_groupings(collection) -> dict[str, tuple[dict, dict]]:
    """{preset id: (its description for the UI, its groups)}."""
    names = collection.names
    n = len(names)
    presets = {ALONE_PRESET: (
        {"id": ALONE_PRESET, "label": "Every image alone",
         "title": f"each of the {n} images gets its own sky"},
        dict.fromkeys(names),
    )}
    table = collection.table
    for column in META_COLUMNS:
        if column not in table:
            continue
        labels = _column_labels(table, column)
        labelled = [g for g in labels if g is not None]
        n_groups = len(set(labelled))
        n_inputs = n_groups + (n - len(labelled))
        if n_groups < len(labelled) and n_inputs >= 2:  # some images share a value, >= 2 inputs left
            preset_id = KEYWORD_PRESET + column
            title = f"images with the same {column} share one sky: {n_groups} group(s), {n_inputs} inputs"
            presets[preset_id] = ({"id": preset_id, "label": f"By {column}", "title": title},
                                  dict(zip(names, labels)))
    return presets


def _column_labels(table, column: str) -> list:
    return [_label_or_none(v) for v in table[column].values]


def _label_or_none(value):
    """A group label as str; None, "" and NaN mean alone."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    text = str(value)
    return text if text.strip() else None


def _checked_label(label, what: str) -> str:
    if not isinstance(label, str) or not label.strip():
        raise ValueError(
            f"{what}(): the group name must be a non-empty str; got {label!r}"
            + ("; to make images alone use ungroup(names)" if what == "assign" else "")
        )
    return label.strip()


def _partition(groups: Mapping) -> set:
    """The grouping without its label names: a set of frozensets of image names."""
    by_label: dict = {}
    for k, (name, label) in enumerate(groups.items()):
        by_label.setdefault(label if label is not None else ("alone", k), set()).add(name)
    return {frozenset(v) for v in by_label.values()}

"""GroupEditor: edits, validation, undo, presets from metadata, isolated groups, UI messages."""

import pytest
import traitlets

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.display.colors import categorical
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import GroupEditor
from skymatch_nb_ui.widgets.group_editor import UNDO_DEPTH

# Two exposures of a 2x2 detector mosaic (left: exposure e1, right: e2) plus an island of two
# images far away that overlap only each other.
META = [
    {"exposure": "e1", "detector": "d1", "filter": "F200W", "bunit": "MJy/sr"},
    {"exposure": "e2", "detector": "d1", "filter": "F200W", "bunit": "MJy/sr"},
    {"exposure": "e1", "detector": "d2", "filter": "F200W", "bunit": "MJy/sr"},
    {"exposure": "e2", "detector": "d2", "filter": "F200W", "bunit": "MJy/sr"},
    {"exposure": "e3", "detector": "d1", "filter": "F444W", "bunit": "MJy/sr"},
    {"exposure": "e3", "detector": "d2", "filter": "F444W", "bunit": "MJy/sr"},
]
NAMES = ["img00", "img01", "img02", "img03", "far00", "far01"]


@pytest.fixture
def coll():
    m = make_mosaic((2, 2)) + make_mosaic((1, 2), center=(151.0, 2.0), prefix="far")
    return ImageCollection.from_arrays(m.images, m.wcs, names=m.names, meta=META)


@pytest.fixture
def editor(coll):
    return GroupEditor(coll)


def ui(editor, **message):
    """Deliver a message as the front end's model.send(message) does."""
    editor._on_message(editor, message, [])


# -- construction and state ----------------------------------------------------------------------
def test_initial_state_mirrors_the_collection(coll):
    coll.groups = {"img00": 1, "img01": 1}  # labels from headers may be ints: shown as str
    editor = GroupEditor(coll)
    assert editor.names == NAMES
    assert editor.groups == {"img00": "1", "img01": "1", **dict.fromkeys(NAMES[2:])}
    assert coll.groups["img00"] == 1  # merely showing the groups changes nothing
    assert editor.colors == {"1": categorical(["1"])["1"]}
    assert not editor.can_undo and editor.error == "" and editor.selected == []
    assert editor.labels == ["1"] and editor.members("1") == ["img00", "img01"]


def test_presets_offer_columns_with_repeated_values_that_leave_two_inputs(editor):
    # bunit is the same everywhere: one group of all images, nothing left to match
    assert [p["id"] for p in editor.presets] == ["alone", "by:filter", "by:detector", "by:exposure"]
    assert all(p["label"] and p["title"] for p in editor.presets)
    assert editor.active_preset == "alone"


def test_apply_preset_by_keyword(editor, coll):
    editor.apply_preset("by:exposure")
    assert coll.groups == dict(zip(NAMES, ["e1", "e2", "e1", "e2", "e3", "e3"]))
    assert editor.groups == coll.groups
    assert editor.active_preset == "by:exposure"
    assert list(editor.colors) == ["e1", "e2", "e3"]
    editor.apply_preset("alone")
    assert set(coll.groups.values()) == {None} and editor.active_preset == "alone"
    with pytest.raises(ValueError, match=r"unknown preset; the presets are \['alone', 'by:filter'"):
        editor.apply_preset("by:bunit")


def test_no_keyword_presets_without_metadata():
    m = make_mosaic((1, 3))
    editor = GroupEditor(ImageCollection.from_arrays(m.images, m.wcs, names=m.names))
    assert [p["id"] for p in editor.presets] == ["alone"]


# -- edits -----------------------------------------------------------------------------------------
def test_assign_creates_and_joins_groups(editor, coll):
    editor.assign(["img00", "img02"], "left")
    assert coll.groups["img00"] == coll.groups["img02"] == "left"
    editor.assign(["img01"], " left ")  # an existing label (spaces trimmed): joins the group
    assert editor.members("left") == ["img00", "img01", "img02"]
    assert editor.active_preset == ""
    assert editor.can_undo


def test_assign_validates(editor):
    with pytest.raises(ValueError, match=r"no image named 'nope'; the images are \['img00'"):
        editor.assign(["img00", "nope"], "g")
    with pytest.raises(ValueError, match="no images given; select one or more images first"):
        editor.assign([], "g")
    with pytest.raises(ValueError, match="non-empty str.*use ungroup"):
        editor.assign(["img00"], "  ")
    with pytest.raises(ValueError, match="non-empty str"):
        editor.assign(["img00"], None)
    with pytest.raises(ValueError, match="expected a list of image names"):
        editor.assign("img00", "g")
    assert not editor.can_undo and set(editor.groups.values()) == {None}


def test_ungroup_images_and_dissolve_a_group(editor, coll):
    editor.apply_preset("by:exposure")
    editor.ungroup(["img00"])
    assert coll.groups["img00"] is None and coll.groups["img02"] == "e1"
    editor.ungroup(editor.members("e2"))
    assert "e2" not in editor.labels and editor.labels == ["e1", "e3"]
    with pytest.raises(ValueError, match="no image named 'x'"):
        editor.ungroup(["x"])


def test_rename(editor, coll):
    editor.apply_preset("by:exposure")
    editor.rename("e1", "first")
    assert coll.groups["img00"] == coll.groups["img02"] == "first"
    assert editor.labels == ["first", "e2", "e3"]
    editor.rename("first", "first")  # no-op, no undo step
    editor.undo()
    assert editor.labels == ["e1", "e2", "e3"]


def test_rename_refuses_unknown_empty_and_existing_labels(editor):
    editor.apply_preset("by:exposure")
    with pytest.raises(ValueError, match=r"there is no group 'zz'; the groups are \['e1', 'e2', 'e3'\]"):
        editor.rename("zz", "y")
    with pytest.raises(ValueError, match="non-empty str"):
        editor.rename("e1", "")
    with pytest.raises(ValueError, match="a group named 'e2' already exists; to merge"):
        editor.rename("e1", "e2")
    assert editor.members("e1") == ["img00", "img02"]


# -- undo ------------------------------------------------------------------------------------------
def test_undo_steps_back_through_every_edit(editor, coll):
    states = [dict(coll.groups)]
    editor.apply_preset("by:detector")
    states.append(dict(coll.groups))
    editor.assign(["far00"], "x")
    states.append(dict(coll.groups))
    editor.rename("x", "y")
    for expected in reversed(states):
        assert editor.can_undo
        editor.undo()
        assert coll.groups == expected == editor.groups
    assert not editor.can_undo
    with pytest.raises(ValueError, match="there is no edit to undo"):
        editor.undo()


def test_undo_stack_is_bounded(editor):
    for k in range(UNDO_DEPTH + 5):
        editor.assign(["img00"], f"g{k}")
    for _ in range(UNDO_DEPTH):
        editor.undo()
    assert not editor.can_undo and editor.groups["img00"] == "g4"


# -- the two-way groups traitlet -------------------------------------------------------------------
def test_setting_groups_is_an_edit_written_to_the_collection(editor, coll):
    editor.groups = {"img00": "a", "img01": "a", "img02": ""}
    assert coll.groups["img00"] == "a" and coll.groups["img02"] is None
    assert list(editor.groups) == NAMES  # completed and in image order
    assert editor.can_undo
    editor.undo()
    assert coll.groups["img00"] is None
    with pytest.raises(traitlets.TraitError, match="not in the collection: \\['zz'\\]"):
        editor.groups = {"zz": "a"}


def test_observers_see_each_accepted_edit_once(editor):
    seen = []
    editor.observe(lambda change: seen.append(change["new"]["img00"]), "groups")
    editor.assign(["img00"], "a")
    editor.assign(["img00"], "a")  # no change: no event, no undo step
    with pytest.raises(ValueError):
        editor.assign(["img00"], "")
    editor.undo()
    assert seen == ["a", None]


def test_refresh_reads_changes_made_to_the_collection_directly(editor, coll):
    coll.set_group(["img01", "img03"], "right")
    editor.refresh()
    assert editor.members("right") == ["img01", "img03"]


def test_selected_is_validated(editor):
    editor.selected = ["img01", "img00", "img01"]
    assert editor.selected == ["img01", "img00"]
    with pytest.raises(ValueError, match="no image named 'nope'"):
        editor.selected = ["nope"]


# -- isolated groups -------------------------------------------------------------------------------
def test_group_of_a_whole_disconnected_part_is_isolated(editor):
    assert editor.isolated == []
    editor.assign(["far00", "far01"], "island")  # they overlap only each other
    assert editor.isolated == ["island"]
    editor.assign(["img00", "img01"], "top")  # overlaps img02 and img03, outside the group
    assert editor.isolated == ["island"]
    editor.ungroup(["far01"])  # far00 alone in "island" now overlaps far01
    assert editor.isolated == []


def test_isolated_groups_function(coll):
    assert coll.isolated_groups(dict(zip(NAMES, ["a"] * 4 + [None] * 2))) == ["a"]
    assert coll.isolated_groups(dict(zip(NAMES, ["a"] * 6))) == ["a"]
    assert coll.isolated_groups(dict(zip(NAMES, ["a", "a", "b", "b", "c", "c"]))) == ["c"]
    assert coll.isolated_groups(dict.fromkeys(NAMES)) == []  # images alone are not groups


# -- messages from the front end -------------------------------------------------------------------
def test_ui_messages_do_what_the_methods_do(editor, coll):
    ui(editor, type="preset", id="by:exposure")
    assert coll.groups["img01"] == "e2"
    ui(editor, type="assign", names=["img00", "img01"], label="top")
    assert editor.members("top") == ["img00", "img01"]
    ui(editor, type="rename", old="top", new="upper")
    assert editor.labels[0] == "upper"
    ui(editor, type="ungroup", names=["img00"])
    assert coll.groups["img00"] is None
    ui(editor, type="undo")
    assert coll.groups["img00"] == "upper"
    assert editor.error == ""


def test_ui_errors_go_to_the_error_traitlet_and_clear_on_success(editor, coll):
    ui(editor, type="assign", names=[], label="g")
    assert "select one or more images first" in editor.error
    ui(editor, type="rename", old="nope", new="x")
    assert "there is no group 'nope'" in editor.error
    ui(editor, type="explode")
    assert "unknown request" in editor.error
    ui(editor, type="preset", id=["by:exposure"])
    assert "unknown preset" in editor.error
    ui(editor, type="undo")
    assert "no edit to undo" in editor.error
    assert set(coll.groups.values()) == {None}
    ui(editor, type="assign", names=["img00"], label="g")
    assert editor.error == "" and coll.groups["img00"] == "g"


def test_isolated_group_is_what_the_solve_cannot_match(editor, coll):
    """What the warning means: with "match", the island's sky is not found at all."""
    with pytest.warns(Warning):
        assert coll.skymatch(skymethod="match", skystat="mean").valid.all()
    editor.assign(["far00", "far01"], "island")
    with pytest.warns(Warning):
        result = coll.skymatch(skymethod="match", skystat="mean")
    island = result.sel(image=["far00", "far01"])
    assert not island.valid.any() and all("no valid overlap" in r for r in island.reason.values)
    assert result.valid.sel(image=NAMES[:4]).all()


def test_malformed_page_messages_are_shown_never_raised(editor, coll):
    """Issue 9 item 19: unhashable names used to raise a TypeError out of the handler."""
    cases = [
        ({"type": "assign", "names": [["img00"]], "label": "g"}, "names must be a list of image names"),
        ({"type": "ungroup", "names": [{"a": 1}]}, "names must be a list of image names"),
        ({"type": "assign", "names": "img00", "label": "g"}, "names must be a list of image names"),
        ({"type": "assign", "names": ["img00"], "label": ["g"]}, "the group name must be a non-empty str"),
        ({"type": "rename", "old": ["g"], "new": "h"}, "there is no group"),
        ({"type": ["assign"]}, "unknown request"),
        (["assign"], "unknown request"),
        (None, "unknown request"),
    ]
    for message, expected in cases:
        editor._on_message(editor, message, [])  # must not raise
        assert expected in editor.error, (message, editor.error)
    assert set(coll.groups.values()) == {None}  # nothing was changed
    ui(editor, type="assign", names=["img00"], label="g")
    assert editor.error == "" and coll.groups["img00"] == "g"


def test_set_labels_writes_the_collections_own_labels_as_one_undo_step(editor, coll):
    editor.set_labels({"img00": 1, "img01": 1.0, "img02": "1"})
    assert [type(coll.groups[n]) for n in ("img00", "img01", "img02")] == [int, float, str]
    assert editor.groups["img00"] == editor.groups["img01"] == "1" != editor.groups["img02"]
    editor.set_labels({"img00": 1, "img01": 1.0, "img02": "1"})  # the same labels: no step
    editor.undo()
    assert set(coll.groups.values()) == {None} and not editor.can_undo
    with pytest.raises(ValueError, match="not in the collection"):
        editor.set_labels({"nope": 1})

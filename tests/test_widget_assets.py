"""The widgets' front-end files: shared ES modules inlined at load, stylesheets as paths, wheels.

anywidget loads ``_esm`` as one module from a blob URL, where the relative imports the modules
share helpers with cannot resolve; ``widgets/_assets.py`` inlines them.  These tests check the
inlined modules load (in node here, in chromium in the browser tests) and keep each module's
private names private, and that the wheel's layout (``js/src`` packaged as
``skymatch_nb_ui/widgets/js``) gives the same modules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from anywidget._file_contents import FileContents

from skymatch_nb_ui.widgets import FootprintMap, GroupEditor, ResultsTable
from skymatch_nb_ui.widgets._assets import asset_path, bundle
from skymatch_nb_ui.widgets.app import _ThemeProbe

ROOT = Path(__file__).resolve().parents[1]
WIDGETS = {"footprint_map": FootprintMap, "group_editor": GroupEditor, "results_table": ResultsTable,
           "theme_probe": _ThemeProbe}
NODE = shutil.which("node")


def node_import(path: Path) -> dict:
    """What node sees when it imports the module file ``path``: its exports' kinds."""
    code = ("import(process.argv[1]).then((m) => console.log(JSON.stringify(Object.fromEntries("
            "Object.entries(m).map(([k, v]) => [k, typeof v === 'object' ? Object.keys(v) : typeof v])))))")
    out = subprocess.run([NODE, "--input-type=module", "-e", code, path.as_uri()], capture_output=True,
                         text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_styles_are_paths_and_modules_are_anywidgets_file_contents():
    for name, widget in WIDGETS.items():
        assert isinstance(widget._esm, FileContents)
        assert str(widget._esm) == bundle(asset_path(f"{name}.js"))
        if name != "theme_probe":
            assert isinstance(widget._css, FileContents)  # what anywidget makes of a Path
            assert str(widget._css) == asset_path(f"{name}.css").read_text()


@pytest.mark.skipif(NODE is None, reason="needs node")
@pytest.mark.parametrize("name", list(WIDGETS))
def test_each_inlined_module_imports_nothing_and_loads(name, tmp_path):
    text = str(WIDGETS[name]._esm)
    assert 'from "./' not in text and 'from "../' not in text
    path = tmp_path / f"{name}.mjs"
    path.write_text(text)
    exports = node_import(path)
    assert exports["default"] == ["render"]


@pytest.mark.skipif(NODE is None, reason="needs node")
def test_inlining_keeps_each_modules_scope_follows_aliases_and_dependencies(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.js").write_text(
        'import { twice as double, NAME } from "./sub/b.js";\n'
        'import { hidden } from "./c.js";\n'
        "const helper = 1; // the same private name as in b.js\n"
        "export const result = [double(21), NAME, helper, hidden()];\n")
    (tmp_path / "sub" / "b.js").write_text(
        'import { hidden } from "../c.js";\n'
        "const helper = 2;\n"
        "export function twice(x) { return 2 * x; }\n"
        "export const NAME = `b${helper}${hidden()}`;\n")
    (tmp_path / "c.js").write_text("let calls = 0;\nexport function hidden() { calls += 1; return calls; }\n")
    out = tmp_path / "out.mjs"
    text = bundle(tmp_path / "a.js")
    out.write_text(text)
    assert text.count("c.js (inlined)") == 1  # once, though imported twice
    code = f"import({json.dumps(out.as_uri())}).then((m) => console.log(JSON.stringify(m.result)))"
    run = subprocess.run([NODE, "--input-type=module", "-e", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(run.stdout) == [42, "b21", 1, 2]  # c.js ran once: its state is shared


def test_import_cycles_and_unreadable_exports_are_refused(tmp_path):
    (tmp_path / "a.js").write_text('import { b } from "./b.js";\nexport default {};\n')
    (tmp_path / "b.js").write_text('import { a } from "./a.js";\nexport const b = 1;\n')
    with pytest.raises(ValueError, match="import cycle.*a.js -> b.js -> a.js"):
        bundle(tmp_path / "a.js")
    (tmp_path / "b.js").write_text("const b = 1;\nexport { b };\n")
    with pytest.raises(ValueError, match="b.js: a module imported by a widget may export only"):
        bundle(tmp_path / "a.js")


def test_the_wheel_layout_gives_the_same_modules(tmp_path):
    """The wheel force-includes js/src as skymatch_nb_ui/widgets/js (pyproject.toml)."""
    package = tmp_path / "skymatch_nb_ui"
    shutil.copytree(ROOT / "skymatch_nb_ui", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "js" / "src", package / "widgets" / "js")
    code = ("import json, skymatch_nb_ui.widgets as w, skymatch_nb_ui.widgets._assets as a\n"
            "print(json.dumps([str(a.asset_path('_dom.js')), str(w.FootprintMap._esm),"
            " str(w.GroupEditor._css)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
                         timeout=120)
    where, esm, css = json.loads(out.stdout)
    assert Path(where).is_relative_to(package / "widgets" / "js")
    assert esm == str(FootprintMap._esm) and css == str(GroupEditor._css)

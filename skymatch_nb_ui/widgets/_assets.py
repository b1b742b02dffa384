"""The widgets' front-end files: where they live, and their ES modules made loadable.

The files are ``js/src/`` in a checkout and ``skymatch_nb_ui/widgets/js/`` in a wheel (the
wheel force-includes ``js/src`` there).

- `css_path` gives a stylesheet as a `pathlib.Path`: anywidget reads it and, with
  ``ANYWIDGET_HMR=1`` in a checkout, reloads it in the page when it is saved.
- `esm` gives a widget's ES module.  The modules share helpers through relative imports
  (``import { el } from "./_dom.js";``), which node, editors and the unit tests follow, but
  anywidget cannot: it loads ``_esm`` as one module from a blob URL, where a relative
  specifier resolves to nothing (anywidget's advice is a bundler).  `bundle` inlines the
  imported modules at load time instead, each in its own function scope, with no build step;
  `esm` returns it as the object anywidget makes of a ``Path`` (its ``FileContents``), so
  that with ``ANYWIDGET_HMR=1`` an edit of the module *or of a module it imports* reloads the
  widget in the page.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

_PACKAGED = Path(__file__).parent / "js"  # the wheel force-includes js/src/ here
_CHECKOUT = Path(__file__).resolve().parents[2] / "js" / "src"  # editable installs, checkouts

#: ``import { a, b as c } from "./x.js";`` (the only import form the modules use).
_IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"(\.{1,2}/[^"]+)"\s*;?[ \t]*$', re.M)
#: ``export function f`` / ``export const x`` ... at the start of a line.
_EXPORT = re.compile(r"^export\s+((?:async\s+)?function\*?|const|let|class)\s+([A-Za-z_$][\w$]*)", re.M)
#: Export forms a shared module must not use (the inliner reads only the ones above).
_OTHER_EXPORT = re.compile(r"^export\s+(default\b|\{|\*)", re.M)


def asset_path(name: str) -> Path:
    """The file ``js/src/<name>`` (e.g. ``"footprint_map.css"``), packaged or in a checkout."""
    for folder in (_PACKAGED, _CHECKOUT):
        path = folder / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"widget asset {name!r} not found in {_PACKAGED} or {_CHECKOUT}")


def css_path(name: str) -> Path:
    """A widget's stylesheet, as the `pathlib.Path` anywidget takes for ``_css``."""
    return asset_path(name)


@cache
def asset(name: str) -> str:
    """The text of ``js/src/<name>``; an ES module with its relative imports inlined."""
    path = asset_path(name)
    return bundle(path) if path.suffix == ".js" else path.read_text(encoding="utf-8")


def esm(name: str):
    """A widget's ES module for ``_esm``: its text with its imports inlined (see `bundle`).

    Returned as anywidget's ``FileContents`` of the module (what anywidget makes of a
    ``Path``), which also watches the modules it imports when hot reload is on.
    """
    path = asset_path(name)
    if _FileContents is None:  # pragma: no cover - an anywidget without FileContents
        return bundle(path)
    return _Bundled(path, start_thread=_hot_reload(path))


def bundle(entry: Path) -> str:
    """The ES module ``entry`` with its relative imports inlined, as one module.

    Each imported module (recursively, each once, dependencies first) becomes
    ``const __m1 = (() => { <its code, exports unmarked>; return { <its exports> }; })();``
    and each ``import { a, b as c } from "./x.js";`` becomes ``const { a, b: c } = __m1;``.
    Imported modules may export only with ``export function|const|let|class``.

    Raises
    ------
    ValueError
        For an import cycle or an export form the inliner does not read.
    """
    modules: dict[Path, tuple[str, str]] = {}  # path -> (variable, code), dependencies first
    text = _inline_imports(entry.resolve(), modules, stack=())
    return "".join(code for _, code in modules.values()) + text


def sources(entry: Path) -> list[Path]:
    """``entry`` and every module it imports, recursively."""
    modules: dict[Path, tuple[str, str]] = {}
    _inline_imports(entry.resolve(), modules, stack=())
    return [entry.resolve(), *modules]


def _inline_imports(path: Path, modules: dict, stack: tuple) -> str:
    """``path``'s code with its imports replaced by bindings to the inlined modules."""
    text = path.read_text(encoding="utf-8")

    def binding(match: re.Match) -> str:
        dependency = (path.parent / match.group(2)).resolve()
        if dependency in stack or dependency == path:
            chain = " -> ".join(p.name for p in (*stack, path, dependency))
            raise ValueError(f"import cycle between the widgets' ES modules: {chain}")
        if dependency not in modules:
            body = _inline_imports(dependency, modules, stack + (path,))
            modules[dependency] = _module_code(dependency, body, len(modules) + 1)
        names = [n.strip() for n in match.group(1).split(",") if n.strip()]
        pairs = [n.replace(" as ", ": ") if " as " in n else n for n in names]
        return f"const {{ {', '.join(pairs)} }} = {modules[dependency][0]};"

    return _IMPORT.sub(binding, text)


def _module_code(path: Path, body: str, number: int) -> tuple[str, str]:
    if _OTHER_EXPORT.search(body):
        raise ValueError(
            f"{path.name}: a module imported by a widget may export only with "
            "'export function|const|let|class NAME' (the widgets' loader inlines it)"
        )
    exports = [m.group(2) for m in _EXPORT.finditer(body)]
    code = _EXPORT.sub(lambda m: f"{m.group(1)} {m.group(2)}", body)
    variable = f"__smnb_module{number}"
    return variable, (f"// ---- {path.name} (inlined) ----\nconst {variable} = (() => {{\n{code}\n"
                      f"return {{ {', '.join(exports)} }};\n}})();\n")


def _hot_reload(path: Path) -> bool:
    """The rule of anywidget: ``ANYWIDGET_HMR=1``, a checkout (not site-packages), watchfiles."""
    if os.getenv("ANYWIDGET_HMR") != "1" or {"site-packages", "dist-packages"} & set(path.parts):
        return False
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return False
    return True


try:
    from anywidget._file_contents import FileContents as _FileContents
except ImportError:  # pragma: no cover - anywidget moved it: no hot reload of bundled modules
    _FileContents = None
else:

    class _Bundled(_FileContents):
        """anywidget's file contents of an ES module, its imports inlined and watched too."""

        def __str__(self) -> str:
            if self._contents is None:
                self._contents = bundle(self._path)
            return self._contents

        def watch(self):
            from watchfiles import watch

            for _changes in watch(*sources(self._path), stop_event=self._stop_event):
                self._contents = None
                self.changed.emit(str(self))
                yield _changes

"""A Griffe extension used only by the documentation build (``mkdocs.yml`` loads it).

It does two things, neither of which changes the code it documents:

1. **The layout.** ``serket.modules`` and ``serket.graphs`` live in ``modules/`` and ``graphs/``
   beside ``serket/`` (``[tool.setuptools.package-dir]`` in ``pyproject.toml`` maps them), where
   Griffe's static loader does not look. Once Griffe has loaded ``serket``, the extension visits
   those folders' files and attaches them under ``serket`` with their installed names, so that
   ``::: serket.modules.vae`` works without importing anything.

2. **reST in docstrings.** The docstrings are Google style with a few reStructuredText habits:
   roles (``:class:`~serket.graph.Graph```), ``Example::`` before a literal block, and simple
   ``====`` tables. Roles become cross-references where the target is an object the reference
   pages render (a public object with a docstring, in a documented module), and plain code
   otherwise; ``::`` at the end of a line becomes ``:``; a simple table is shown as
   preformatted text.

Options (``mkdocs.yml``: ``- docs/_ext/serket_layout.py:SerketLayout: {documented: [...]}``):

* ``documented``: the modules the API reference renders (cross-references point only there).
"""

from __future__ import annotations

import re
from pathlib import Path

import griffe

SUBPACKAGES = {"modules": "modules", "graphs": "graphs"}  # name under serket -> folder at the root

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|mod|exc|obj|const):`(~?)([^`<>]+?)(?:\(\))?`")
_LITERAL_MARK = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)
_TABLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")


class SerketLayout(griffe.Extension):
    def __init__(self, documented: list[str] | None = None):
        super().__init__()
        self.documented = tuple(documented or ())

    # --- 1. the layout --------------------------------------------------------------------------
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        if pkg.name != "serket" or pkg.filepath is None:
            return
        root = Path(pkg.filepath).resolve().parent.parent
        for name, folder in SUBPACKAGES.items():
            init = root / folder / "__init__.py"
            if name in pkg.members or not init.is_file():
                continue
            package = self._visit(loader, name, init, pkg)
            pkg.set_member(name, package)
            for path in sorted((root / folder).glob("*.py")):
                if path.name != "__init__.py":
                    package.set_member(path.stem, self._visit(loader, path.stem, path, package))
            loader.expand_exports(package)
        for obj in _walk(pkg):
            self._translate(obj, loader.modules_collection)

    @staticmethod
    def _visit(loader: griffe.GriffeLoader, name: str, path: Path, parent: griffe.Module) -> griffe.Module:
        code = path.read_text(encoding="utf-8-sig")
        loader.lines_collection[path] = code.splitlines(keepends=False)
        return griffe.visit(name, path, code, extensions=loader.extensions, parent=parent,
                            docstring_parser=loader.docstring_parser,
                            docstring_options=loader.docstring_options,
                            lines_collection=loader.lines_collection,
                            modules_collection=loader.modules_collection)

    # --- 2. reST habits -------------------------------------------------------------------------
    def _translate(self, obj: griffe.Object, collection) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        text = _LITERAL_MARK.sub(r"\1:", docstring.value)
        text = _ROLE.sub(lambda m: self._role(m, obj, collection), text)
        docstring.value = _tables_as_text(text)

    def _role(self, match: re.Match, obj: griffe.Object, collection) -> str:
        short, target = match.group(1) == "~", match.group(2).strip()
        shown = target.rsplit(".", 1)[-1] if short else target
        path = self._resolve(target, obj, collection)
        return f"[`{shown}`][{path}]" if path else f"`{shown}`"

    def _resolve(self, target: str, obj: griffe.Object, collection) -> str | None:
        """The canonical path of the object ``target`` names, seen from ``obj``, if a reference
        page renders it; else None."""
        scopes, scope = [""], obj
        while scope is not None:
            scopes.append(scope.path + ".")
            scope = scope.parent
        for prefix in scopes:
            found = _lookup(prefix + target, collection)
            if found is not None:
                return found.path if self._rendered(found) else None
        return None

    def _rendered(self, obj: griffe.Object) -> bool:
        in_reference = any(obj.path == m or obj.path.startswith(m + ".") for m in self.documented)
        parts = obj.path.split(".")
        private = any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts)
        return in_reference and not private and obj.has_docstrings


def _lookup(path: str, collection) -> griffe.Object | None:
    """The object at ``path``, following aliases by their target paths (nothing is resolved)."""
    for _ in range(10):
        try:
            found = collection.get_member(path)
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        if not found.is_alias:
            return found
        path = found.target_path
    return None


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _tables_as_text(text: str) -> str:
    """Each paragraph that starts with a reST simple-table border, as a preformatted block."""
    blocks = re.split(r"(\n[ \t]*\n)", text)
    for i, block in enumerate(blocks):
        lines = block.split("\n")
        if lines and _TABLE_BORDER.match(lines[0]):
            blocks[i] = "\n".join(["```text", *(line.replace("``", "") for line in lines), "```"])
    return "".join(blocks)

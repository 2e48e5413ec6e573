"""The API reference in docs/api covers every public name, and every reference resolves.

mkdocs (``mkdocs build --strict``) fails on a reference that no longer resolves; this test also
fails when a new public name is added to an ``__all__`` without a page entry, and it runs
without mkdocs installed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pathlib
import re
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
API_DIR = ROOT / "docs" / "api"
_REFERENCE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def _modules_with_all(*roots: str) -> list[str]:
    """Every public module under ``roots`` whose source assigns ``__all__``, found without
    importing anything (a package counts by its ``__init__.py``)."""
    found = []
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(part.startswith("_") for part in parts):
                continue
            tree = ast.parse(path.read_text())
            if any(
                isinstance(node, (ast.Assign, ast.AnnAssign))
                and "__all__" in [t.id for t in _targets(node) if isinstance(t, ast.Name)]
                for node in tree.body
            ):
                found.append(".".join(parts))
    return found


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return node.targets if isinstance(node, ast.Assign) else [node.target]


# The packages, and every module that declares its own ``__all__`` (its public names).
PACKAGES = _modules_with_all("optax_lopt", "interpret")


def _resolve(path: str):
    """The object a dotted ``path`` names, read as Python reads it.

    Attributes first (``optax_lopt.pretrained`` is the function the package exports, not the
    module of that name); where an attribute is missing, the longest importable module prefix
    (``interpret.probe.probe``, the function inside the module that the package's
    ``interpret.probe`` shadows).
    """
    parts = path.split(".")
    try:
        obj = importlib.import_module(parts[0])
        for part in parts[1:]:
            obj = getattr(obj, part)
        return obj
    except AttributeError:
        pass
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def _references() -> list[str]:
    return [
        m for page in sorted(API_DIR.glob("*.md")) for m in _REFERENCE.findall(page.read_text())
    ]


def test_resolve_prefers_attributes_then_modules():
    import interpret
    import optax_lopt

    assert _resolve("optax_lopt.pretrained") is optax_lopt.pretrained
    assert callable(_resolve("optax_lopt.pretrained"))
    assert _resolve("interpret.probe.probe") is interpret.probe
    with pytest.raises(AttributeError):
        _resolve("optax_lopt.no_such_name")


def test_references_parse_known_lines():
    text = "# t\n\n::: optax_lopt.pretrained\n    options:\n\n:::  interpret.probe.probe \n"
    assert _REFERENCE.findall(text) == ["optax_lopt.pretrained", "interpret.probe.probe"]


def test_every_reference_resolves():
    references = _references()
    assert len(references) > 50, references
    unresolved = []
    for path in references:
        try:
            _resolve(path)
        except (ImportError, AttributeError):
            unresolved.append(path)
    assert not unresolved, f"docs/api references that do not resolve: {unresolved}"


def _is_module_path(path: str) -> bool:
    try:
        return importlib.util.find_spec(path) is not None
    except (ImportError, ValueError):
        return False


def test_no_reference_names_a_module_shadowed_by_a_function():
    # mkdocstrings reads `optax_lopt.pretrained` as the module optax_lopt/pretrained.py, while
    # Python reads it as the function the package exports: such a reference documents the wrong
    # object, so it must use the function's defining path (`optax_lopt.pretrained.pretrained`).
    ambiguous = [
        path
        for path in _references()
        if _is_module_path(path) and not isinstance(_resolve(path), types.ModuleType)
    ]
    assert not ambiguous, f"docs/api references that mkdocstrings reads as modules: {ambiguous}"


def test_shadowed_module_is_detected():
    assert _is_module_path("optax_lopt.pretrained")
    assert not isinstance(_resolve("optax_lopt.pretrained"), types.ModuleType)
    assert not _is_module_path("optax_lopt.pretrained.pretrained")


def test_modules_with_all_are_found():
    # the packages themselves and a module that declares its own __all__; private modules and
    # modules without one are not
    for name in ("optax_lopt", "optax_lopt.tasks", "optax_lopt.meta", "interpret"):
        assert name in PACKAGES
    assert "optax_lopt.meta.outer_loop" in PACKAGES
    assert "optax_lopt.evaluation" not in PACKAGES
    assert not [name for name in PACKAGES if "._" in name]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented(package):
    module = importlib.import_module(package)
    names = module.__all__
    # A name counts as documented when a reference ends in that name and resolves to the very
    # object the package exports (so `interpret.probe.probe` documents `interpret.probe`, and
    # two names bound to `typing.Any` each need their own entry).
    documented = set()
    for path in _references():
        try:
            documented.add((path.rsplit(".", 1)[-1], id(_resolve(path))))
        except (ImportError, AttributeError):
            continue
    missing = [n for n in names if (n, id(getattr(module, n))) not in documented]
    assert not missing, f"{package}.__all__ names missing from docs/api/*.md: {missing}"

"""optax_lopt reports its version from the installed distribution's metadata."""

from __future__ import annotations

import pathlib
import re
from importlib import metadata

import optax_lopt

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject_version() -> str:
    # A regex rather than tomllib, which Python 3.10 lacks.
    match = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml: no version line"
    return match.group(1)


def test_version_is_a_release_string():
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", optax_lopt.__version__), optax_lopt.__version__


def test_version_matches_metadata_when_installed():
    try:
        installed = metadata.version("optax-lopt")
    except metadata.PackageNotFoundError:
        installed = None
    expected = installed if installed is not None else _pyproject_version()
    assert optax_lopt.__version__ == expected


def test_fallback_matches_pyproject(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert optax_lopt._version() == _pyproject_version()


def test_changelog_has_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(_pyproject_version())}\]", changelog, re.MULTILINE)

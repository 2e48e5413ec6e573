"""One loader for the example scripts, shared by the tests that exercise them."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Imports ``examples/<name>.py`` once per test session (absl flags are defined once).

    Args:
      name: the script's name without ``.py``, e.g. ``"meta_train"``.

    Returns:
      The module, registered in ``sys.modules`` as ``_example_<name>`` (dataclasses look
      their module up there).
    """
    module_name = f"_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module

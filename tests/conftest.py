"""Shared test set-up: JAX's persistent compilation cache, and every registered architecture
with perturbed meta-parameters."""

from __future__ import annotations

import os
import pathlib

import jax
import pytest

# Compiling, not running, is most of the suite's time on a CPU, and most compiled programs are
# the same from one run to the next; JAX's persistent cache keeps them on disk (keyed by the
# program, the JAX version and the backend, so a changed function compiles afresh). The first
# run fills it, later runs reuse it. ``OPTAX_LOPT_TEST_CACHE`` names another directory, or
# ``off`` disables it; a ``JAX_COMPILATION_CACHE_DIR`` the user set is left alone. JAX decides
# at the first compilation whether to use the cache, so this runs before anything else is
# imported.
_CACHE = os.environ.get(
    "OPTAX_LOPT_TEST_CACHE", str(pathlib.Path(__file__).resolve().parent.parent / ".jax_cache")
)
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and _CACHE.lower() != "off":
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

from _cases import CASES, perturbed_theta  # noqa: E402 (after the cache is set up)

import optax_lopt  # noqa: E402


@pytest.fixture(params=sorted(CASES), ids=sorted(CASES))
def case(request):
    """(lopt, theta, tx) for one architecture configuration."""
    name, kwargs = CASES[request.param]
    lopt = optax_lopt.architecture(name)(**kwargs)
    theta = perturbed_theta(lopt)
    return lopt, theta, lopt.transform(theta)

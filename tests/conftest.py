"""Shared fixtures: every registered architecture, with perturbed meta-parameters."""

from __future__ import annotations

import pytest
from _cases import CASES, perturbed_theta

import optax_lopt


@pytest.fixture(params=sorted(CASES), ids=sorted(CASES))
def case(request):
    """(lopt, theta, tx) for one architecture configuration."""
    name, kwargs = CASES[request.param]
    lopt = optax_lopt.architecture(name)(**kwargs)
    theta = perturbed_theta(lopt)
    return lopt, theta, lopt.transform(theta)

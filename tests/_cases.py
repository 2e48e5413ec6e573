"""Every registered architecture configuration, and perturbed meta-parameters for it.

A plain module (not ``conftest``) so test modules can import it unambiguously:
``tests/interpret`` has its own ``conftest``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import optax_lopt

# Extra configurations tested besides each architecture's defaults.
EXTRA_CONFIGS = {
    "ComponentwiseRNN-lstm": ("ComponentwiseRNN", {"cell": "lstm", "hidden_size": 8}),
    "ComponentwiseRNN-rnn-log1p": (
        "ComponentwiseRNN",
        {"cell": "rnn", "hidden_size": 8, "preprocessing": "log1p-sign"},
    ),
    # the shipped general's step adaptation, per tensor and per entry
    "MLPLOpt-adapted": ("MLPLOpt", {"step_adaptation": 0.05, "adaptation_decay": 0.01}),
    "MLPLOpt-adapted-per-entry": (
        "MLPLOpt",
        {"step_adaptation": 0.05, "adaptation_granularity": "coordinate"},
    ),
}


def _cases():
    cases = {name: (name, {}) for name in optax_lopt.architecture_names()}
    cases.update(EXTRA_CONFIGS)
    return cases


CASES = _cases()


def perturbed_theta(lopt, seed: int = 0, scale: float = 0.1):
    """Initial theta plus Gaussian noise, so no part of the network is trivially zero."""
    theta = lopt.init(jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [
        leaf + scale * jax.random.normal(k, jnp.shape(leaf), jnp.asarray(leaf).dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)

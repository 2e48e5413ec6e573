"""Benchmark: fixed points of a 256-unit GRU optimizer over 64 constant gradients.

Uses ``optax_lopt.ComponentwiseRNN(hidden_size=256)`` with its initial weights and a random,
non-zero readout (an untrained optimizer's readout is zero), so the update depends on the
state. Prints a table, then one JSON object as the last line.

Run: ``python benchmarks/fixed_points.py`` (``--help`` for flags).
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import interpret

_HIDDEN = flags.DEFINE_integer("hidden_size", 256, "GRU units.")
_INPUTS = flags.DEFINE_integer("num_inputs", 64, "Number of constant gradients g*.")
_STARTS = flags.DEFINE_integer("num_starts", 4, "Visited starting states per input.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights.")


def gru_transform(hidden_size: int, seed: int):
    """A ComponentwiseRNN GRU optimizer with a random readout."""
    import optax_lopt

    lopt = optax_lopt.ComponentwiseRNN(hidden_size=hidden_size)
    key_init, key_readout = jax.random.split(jax.random.key(seed))
    theta = lopt.init(key_init)
    w = jax.random.normal(key_readout, theta["readout"]["w"].shape) / np.sqrt(hidden_size)
    theta = {**theta, "readout": {**theta["readout"], "w": w}}
    return lopt.transform(theta)


def main(argv):
    del argv
    tx = gru_transform(_HIDDEN.value, _SEED.value)
    system = interpret.scalar_system(tx)
    inputs = np.linspace(-1.0, 1.0, _INPUTS.value)
    kwargs = dict(num_starts=_STARTS.value)

    t0 = time.perf_counter()
    fp = interpret.fixed_points(system, inputs, **kwargs)
    first = time.perf_counter() - t0
    # The same system again, other inputs: the compiled solver is reused.
    t0 = time.perf_counter()
    interpret.fixed_points(system, inputs + 1e-3, **kwargs)
    cached = time.perf_counter() - t0

    max_residual = float(np.max(fp.residuals))
    converged = int(fp.converged.sum())
    rows = [
        ("state size", f"{system.size}"),
        ("inputs g*", f"{inputs.size}"),
        ("starts per input", f"{_STARTS.value}"),
        ("first call (compile + solve) [s]", f"{first:.2f}"),
        ("second call, same system (solve only) [s]", f"{cached:.2f}"),
        ("converged", f"{converged}/{inputs.size}"),
        ("max residual q", f"{max_residual:.2e}"),
        ("machine", f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"),
        ("jax backend", jax.default_backend()),
    ]
    width = max(len(r[0]) for r in rows)
    print("Fixed points of a GRU optimizer (interpret.fixed_points)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(
        json.dumps(
            {
                "fixed_points_s": round(first, 3),
                "fixed_points_cached_s": round(cached, 3),
                "num_inputs": int(inputs.size),
                "hidden_size": int(_HIDDEN.value),
                "num_starts": int(_STARTS.value),
                "converged": converged,
                "max_residual": max_residual,
                "cpu_count": os.cpu_count(),
                "backend": jax.default_backend(),
            }
        )
    )


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    app.run(main)

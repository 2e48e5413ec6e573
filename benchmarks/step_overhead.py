"""Step overhead: jitted ``update`` time and state size of every architecture vs ``optax.adam``.

Setting (issue 2, item 7): an MLP-shaped pytree of ~1M float32 parameters (784-1024-256-10,
weights and biases: 1,068,810 parameters), default configuration of every architecture in
``optax_lopt.architecture_names()``, meta-parameters from ``init(jax.random.key(0))``. One timed
call is ``tx.update(grads, state, params, value=loss)`` under ``jax.jit`` (state and params
not donated), after a warm-up call. Adam and the architecture are timed in interleaved
repeats (adam, arch, adam, arch, ...) so that load from other processes hits both alike; the
ratio is the median of the per-repeat ratios. State size counts every array leaf of the
optimizer state, in bytes, divided by the parameters' bytes.

Prints a table, then one JSON object as the last line:
``{"ratio_to_adam": {...}, "state_ratio_to_params": {...}, "update_ms": {...}, ...}``.

Usage:
  python benchmarks/step_overhead.py [--architectures=MLPLOpt,FactoredMLPLOpt] [--repeats=15]

References:
  Metz et al., "Practical tradeoffs between memory, compute, and performance in learned
  optimizers", arXiv 2203.11860 (the step-time and memory comparison this reproduces).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

import optax_lopt

_ARCHS = flags.DEFINE_list(
    "architectures", [], "Architectures to time (class names); default: all registered."
)
_REPEATS = flags.DEFINE_integer("repeats", 15, "Interleaved timed repeats per architecture.")
_MIN_SECONDS = flags.DEFINE_float(
    "min_seconds", 0.05, "Each timed repeat loops calls until this many seconds have passed."
)
_LAYERS = flags.DEFINE_list("layers", ["784", "1024", "256", "10"], "MLP layer widths.")


def mlp_params(widths: list[int], key: jax.Array) -> dict:
    """Parameters of a dense MLP with the given layer widths (float32)."""
    params = {}
    keys = jax.random.split(key, len(widths) - 1)
    for i, (k, a, b) in enumerate(zip(keys, widths[:-1], widths[1:], strict=True)):
        params[f"layer_{i}"] = {
            "w": jax.random.normal(k, (a, b), jnp.float32) / a**0.5,
            "b": jnp.zeros((b,), jnp.float32),
        }
    return params


def _nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


class _Timed:
    """A jitted, warmed-up update of one transformation."""

    def __init__(self, tx, params, grads):
        self.params, self.grads = params, grads
        self.state = tx.init(params)
        self.state_bytes = _nbytes(self.state)
        step = jax.jit(lambda g, s, p: tx.update(g, s, p, value=jnp.float32(1.0)))
        start = time.perf_counter()
        self.step = step.lower(grads, self.state, params).compile()
        self.compile_s = time.perf_counter() - start
        self.calls = 1
        self.once()  # warm-up
        elapsed = self.once()
        self.calls = max(1, int(_MIN_SECONDS.value / max(elapsed, 1e-6)))

    def once(self) -> float:
        """Seconds per call, averaged over ``self.calls`` back-to-back calls."""
        start = time.perf_counter()
        for _ in range(self.calls):
            out = self.step(self.grads, self.state, self.params)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / self.calls


def main(argv) -> None:
    del argv
    names = _ARCHS.value or list(optax_lopt.architecture_names())
    widths = [int(w) for w in _LAYERS.value]
    params = mlp_params(widths, jax.random.key(0))
    grads = jax.tree.map(lambda p: 0.01 * jnp.cos(p), params)
    num_params = sum(x.size for x in jax.tree.leaves(params))
    param_bytes = _nbytes(params)
    adam = _Timed(optax.adam(1e-3), params, grads)
    rows = [_measure(name, adam, params, grads, param_bytes) for name in names]

    device = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    adam_state = adam.state_bytes / param_bytes
    _print_table(rows, adam, adam_state, num_params, widths, device)
    print(json.dumps(_summary(rows, adam_state, num_params, device)))


def _measure(name: str, adam: _Timed, params: dict, grads: dict, param_bytes: int) -> dict:
    """Times one architecture in interleaved repeats with ``adam``: one table row."""
    lopt = optax_lopt.architecture(name)()
    timed = _Timed(lopt.transform(lopt.init(jax.random.key(0))), params, grads)
    adam_t, arch_t, ratios = [], [], []
    for _ in range(_REPEATS.value):
        a = adam.once()
        b = timed.once()
        adam_t.append(a)
        arch_t.append(b)
        ratios.append(b / a)
    return {
        "name": name,
        "update_ms": 1e3 * statistics.median(arch_t),
        "adam_ms": 1e3 * statistics.median(adam_t),
        "ratio": statistics.median(ratios),
        "state_ratio": timed.state_bytes / param_bytes,
        "compile_s": timed.compile_s,
    }


def _print_table(
    rows: list[dict],
    adam: _Timed,
    adam_state: float,
    num_params: int,
    widths: list[int],
    device: str,
) -> None:
    """The human-readable table: setting, one line for adam, one per architecture."""
    print(f"Step overhead on {num_params:,} float32 parameters (MLP {widths}), {device}")
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {_REPEATS.value} repeats")
    header = (
        f"{'optimizer':<22}{'update ms':>11}{'adam ms':>9}{'x adam':>8}"
        f"{'state/params':>14}{'compile s':>11}"
    )
    print(header)
    print("-" * len(header))
    print(f"{'optax.adam':<22}{'':>11}{'':>9}{1.0:>8.2f}{adam_state:>14.2f}{adam.compile_s:>11.2f}")
    for r in rows:
        print(
            f"{r['name']:<22}{r['update_ms']:>11.2f}{r['adam_ms']:>9.2f}{r['ratio']:>8.1f}"
            f"{r['state_ratio']:>14.2f}{r['compile_s']:>11.2f}"
        )
    print(
        "x adam: median over interleaved repeats of (architecture time / adam time); "
        "other processes' load makes single timings noisy."
    )


def _summary(rows: list[dict], adam_state: float, num_params: int, device: str) -> dict:
    """The JSON object printed last."""
    return {
        "ratio_to_adam": {r["name"]: round(r["ratio"], 3) for r in rows},
        "state_ratio_to_params": {r["name"]: round(r["state_ratio"], 3) for r in rows},
        "update_ms": {r["name"]: round(r["update_ms"], 3) for r in rows},
        "adam_update_ms": round(statistics.median(x["adam_ms"] for x in rows), 3) if rows else None,
        "adam_state_ratio_to_params": round(adam_state, 3),
        "compile_s": {r["name"]: round(r["compile_s"], 2) for r in rows},
        "num_params": num_params,
        "device": device,
        "repeats": _REPEATS.value,
    }


if __name__ == "__main__":
    app.run(main)

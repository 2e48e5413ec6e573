"""Outliers: what one spiked gradient does to every architecture and every shipped optimizer.

Setting (issue 15): a 100-entry parameter vector ``w`` (zeros at the start) trained on a
noisy linear regression, ``0.5 * mean((X w - y)^2)`` with a fresh minibatch ``X`` of 32 rows
at every step and ``y = X w* + 0.1 noise``; the gradient of that loss is the "normal gradient".
At step ``--spike_step`` (0-based) one entry of the gradient (entry 0; ``--whole`` for every
entry) is replaced by the spike (1e6 and 1e30 by default), then normal gradients again for
``--steps_after`` steps. The step size of a step is ``max |update|`` over the vector.

Columns: the largest step before the spike; the step at the spike; the largest step over the
20 steps after it; the step 20 steps after it; the step just before the spike (the "pre-spike
size" that step 20 should be within 2x of) and the same step 20 in a run without the spike
(what the optimizer would have done anyway); the largest ``|w|`` at the end; the loss at the
end relative to the loss just before the spike (below 1: the loss kept falling), with and
without the spike (an optimizer meant for other tasks may not descend this one at all). Every
registered architecture runs in its default configuration (the untrained
``ComponentwiseRNN`` has a zero readout and so takes no steps; it is run with the readout
drawn at random as well, ``ComponentwiseRNN (random readout)``), then every shipped optimizer
(``pretrained(name)``).

Prints the table, then one JSON object as the last line: for each optimizer and spike, the
step ratios ``at_spike / largest_before``, ``max_after / largest_before``,
``step20_after / before`` and the final ``max |w|``.

Usage:
  python benchmarks/outliers.py [--spikes=1e6,1e30] [--whole] [--steps_after=50]
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import optax_lopt

_SPIKES = flags.DEFINE_list("spikes", ["1e6", "1e30"], "Spike magnitudes.")
_WHOLE = flags.DEFINE_bool("whole", False, "Spike every entry of the gradient, not one.")
_SPIKE_STEP = flags.DEFINE_integer("spike_step", 50, "Step (0-based) that gets the spike.")
_STEPS_AFTER = flags.DEFINE_integer("steps_after", 50, "Normal steps after the spike.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the regression problem and its minibatches.")

DIM = 100
BATCH = 32
WINDOW = 20


def _loss(w, x, y):
    return 0.5 * jnp.mean((x @ w - y) ** 2)


def run(tx, spike: float, *, whole: bool, spike_step: int, steps_after: int, seed: int):
    """Trains ``w`` with ``tx`` through one spike; returns ``(steps, losses, w_end)``.

    ``steps[t]`` is ``max |update|`` at step ``t``; ``losses[t]`` the expected loss (over fresh
    data) before it; ``spike=0`` runs without a spike.
    """
    num_steps = spike_step + 1 + steps_after
    k_true, k_steps = jax.random.split(jax.random.key(seed))
    w_true = jax.random.normal(k_true, (DIM,))
    takes_value = isinstance(tx, optax.GradientTransformationExtraArgs)

    def step(carry, inputs):
        w, state = carry
        t, key = inputs
        kx, kn = jax.random.split(key)
        x = jax.random.normal(kx, (BATCH, DIM))
        y = x @ w_true + 0.1 * jax.random.normal(kn, (BATCH,))
        loss, g = jax.value_and_grad(_loss)(w, x, y)
        mask = jnp.ones_like(g, bool) if whole else jnp.arange(DIM) == 0
        hit = jnp.logical_and(jnp.logical_and(t == spike_step, mask), spike != 0)
        g = jnp.where(hit, jnp.float32(spike), g)
        kwargs = {"value": loss} if takes_value else {}
        u, state = tx.update(g, state, w, **kwargs)
        # The expected loss over fresh data, 0.5 * (|w - w*|^2 + noise variance).
        expected = 0.5 * (jnp.sum((w - w_true) ** 2) + 0.01)
        return (optax.apply_updates(w, u), state), (jnp.max(jnp.abs(u)), expected)

    w0 = jnp.zeros((DIM,))
    inputs = (jnp.arange(num_steps), jax.random.split(k_steps, num_steps))
    (w, _), (steps, losses) = jax.jit(lambda: jax.lax.scan(step, (w0, tx.init(w0)), inputs))()
    return np.asarray(steps), np.asarray(losses), np.asarray(w)


def measure(tx, spike: float, **kwargs) -> dict:
    """The table's figures for one optimizer and one spike."""
    steps, losses, w = run(tx, spike, **kwargs)
    reference, ref_losses, _ = run(tx, 0.0, **kwargs)
    t = kwargs["spike_step"]
    after = steps[t + 1 : t + 1 + WINDOW]
    return {
        "largest_before": float(steps[:t].max()),
        "before": float(steps[t - 1]),
        "at_spike": float(steps[t]),
        "max_after": float(after.max()),
        "step20_after": float(steps[t + WINDOW]),
        "step20_unspiked": float(reference[t + WINDOW]),
        "max_abs_param": float(np.abs(w).max()),
        "loss_end_vs_before": float(losses[-1] / losses[t - 1]),
        "loss_end_vs_before_unspiked": float(ref_losses[-1] / ref_losses[t - 1]),
        "finite": bool(np.isfinite(steps).all() and np.isfinite(w).all()),
    }


def optimizers() -> dict:
    """Label -> transformation: every architecture's default, then every shipped optimizer."""
    out = {}
    for name in optax_lopt.architecture_names():
        lopt = optax_lopt.architecture(name)()
        out[f"{name}()"] = lopt.transform(lopt.init(jax.random.key(0)))
    rnn = optax_lopt.ComponentwiseRNN()
    theta = rnn.init(jax.random.key(0))
    theta["readout"]["w"] = jax.random.normal(jax.random.key(1), theta["readout"]["w"].shape)
    out["ComponentwiseRNN() (random readout)"] = rnn.transform(theta)
    for name in optax_lopt.pretrained_names():
        out[f'pretrained("{name}")'] = optax_lopt.pretrained(name)
    return out


def _fmt(x: float) -> str:
    return f"{x:.2g}" if math.isfinite(x) else str(x)


def main(argv: list[str]) -> None:
    del argv
    kwargs = {
        "whole": _WHOLE.value,
        "spike_step": _SPIKE_STEP.value,
        "steps_after": _STEPS_AFTER.value,
        "seed": _SEED.value,
    }
    header = (
        "optimizer",
        "spike",
        "largest before",
        "at spike",
        "max 20 after",
        "step 20 after",
        "step before",
        "step 20 unspiked",
        "max |w| end",
        "loss end/before",
        "unspiked",
    )
    print(
        f"{'whole tensor' if kwargs['whole'] else 'one entry'} spiked at step "
        f"{kwargs['spike_step']}; {DIM} parameters"
    )
    print(" | ".join(header))
    summary = {}
    for label, tx in optimizers().items():
        for spike_text in _SPIKES.value:
            spike = float(spike_text)
            m = measure(tx, spike, **kwargs)
            cells = (
                m["largest_before"],
                m["at_spike"],
                m["max_after"],
                m["step20_after"],
                m["before"],
                m["step20_unspiked"],
                m["max_abs_param"],
                m["loss_end_vs_before"],
                m["loss_end_vs_before_unspiked"],
            )
            print(" | ".join([label, spike_text, *map(_fmt, cells)]))
            ref = max(m["largest_before"], 1e-30)
            summary[f"{label} {spike_text}"] = {
                "at_spike_vs_largest_before": m["at_spike"] / ref,
                "max_after_vs_largest_before": m["max_after"] / ref,
                "step20_after_vs_before": m["step20_after"] / max(m["before"], 1e-30),
                "step20_after_vs_unspiked": m["step20_after"] / max(m["step20_unspiked"], 1e-30),
                "max_abs_param": m["max_abs_param"],
                "loss_end_vs_before": m["loss_end_vs_before"],
                "finite": m["finite"],
            }
    print(json.dumps({"setting": {**kwargs, "dim": DIM}, "results": summary}))


if __name__ == "__main__":
    app.run(main)

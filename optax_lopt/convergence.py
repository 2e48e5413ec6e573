"""Long-run convergence checks: does an optimizer settle at a minimum when run for long?

A learned optimizer is meta-trained on horizons of hundreds of steps; a user may run it for
tens of thousands. These checks run any optax transformation far past that on problems whose
minimum is known, and measure the step it keeps under a constant gradient (an optimizer whose
step never shrinks circles a minimum at that distance instead of converging).

  errors = optax_lopt.convergence.long_run_errors(optax_lopt.pretrained("general"))
  steps = optax_lopt.convergence.constant_gradient_steps(optax_lopt.pretrained("general"))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_lopt import _checks

LONG_RUN_STEPS = 30_000
"""Default length of a long run: 30 times the longest horizon ``general`` was trained on."""


def _rosenbrock(p: jax.Array) -> jax.Array:
    return (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


_VECTOR_CENTER = np.linspace(-2.0, 3.0, 10, dtype=np.float32)
_MATRIX_CENTER = (np.arange(12.0, dtype=np.float32).reshape(3, 4) / 4.0 - 1.0).astype(np.float32)
_FAR_CENTER = np.asarray([100.0, -50.0, 0.01], np.float32)


def _parabola(center: np.ndarray) -> Callable[[jax.Array], jax.Array]:
    return lambda p: jnp.sum((p - center) ** 2)


PROBLEMS: dict[str, tuple[Callable[[jax.Array], jax.Array], np.ndarray, np.ndarray]] = {
    "rosenbrock_from_origin": (_rosenbrock, np.zeros(2, np.float32), np.ones(2, np.float32)),
    "parabola_vector": (_parabola(_VECTOR_CENTER), np.ones(10, np.float32), _VECTOR_CENTER),
    "parabola_matrix": (_parabola(_MATRIX_CENTER), np.ones((3, 4), np.float32), _MATRIX_CENTER),
    "parabola_far_center": (_parabola(_FAR_CENTER), np.zeros(3, np.float32), _FAR_CENTER),
}
"""Name -> (loss, start point, minimiser): the 2-D Rosenbrock function
``(1-x)^2 + 100 (y-x^2)^2`` from the origin, and ``sum((x - c)^2)`` for a vector ``c``, a
matrix ``c`` and a ``c`` with entries from 0.01 to 100."""


def minimize(
    tx: optax.GradientTransformation, loss: Callable, x0: jax.Array, num_steps: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Runs ``tx`` on ``loss`` from ``x0`` for ``num_steps`` (one jitted ``lax.scan``).

    Args:
      tx: any optax transformation (``value=`` is passed when it takes extra args).
      loss: a scalar function of the parameters.
      x0: the start point.
      num_steps: how many updates.

    Returns:
      ``(x, values, late)``: the final point, the loss before every step and the last (at most
      1,000) iterates.
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    value_and_grad = jax.value_and_grad(loss)
    takes_value = isinstance(tx, optax.GradientTransformationExtraArgs)

    def step(carry, _):
        x, state = carry
        value, grads = value_and_grad(x)
        kwargs = {"value": value} if takes_value else {}
        updates, state = tx.update(grads, state, x, **kwargs)
        return (optax.apply_updates(x, updates), state), (value, x)

    @jax.jit
    def run(x0):
        (x, _), (values, xs) = jax.lax.scan(step, (x0, tx.init(x0)), None, length=num_steps)
        return x, values, xs[-1000:]

    return run(jnp.asarray(x0))


def long_run_errors(
    tx: optax.GradientTransformation, num_steps: int = LONG_RUN_STEPS
) -> dict[str, dict[str, float]]:
    """Runs ``tx`` on every problem of `PROBLEMS` for ``num_steps`` steps.

    Returns:
      Per problem: ``final_error``, the largest absolute error of the final point from the
      minimiser (the Euclidean distance for Rosenbrock); ``late_error``, the same over the
      last 1,000 iterates; and ``finite``, whether every loss stayed finite.
    """
    out = {}
    for name, (loss, x0, minimiser) in PROBLEMS.items():
        x, values, late = minimize(tx, loss, x0, num_steps)
        axes = tuple(range(1, late.ndim))
        if name.startswith("rosenbrock"):
            final = jnp.linalg.norm(x - minimiser)
            late_err = jnp.max(jnp.sqrt(jnp.sum((late - minimiser) ** 2, axis=axes)))
        else:
            final = jnp.max(jnp.abs(x - minimiser))
            late_err = jnp.max(jnp.abs(late - minimiser))
        out[name] = {
            "final_error": float(final),
            "late_error": float(late_err),
            "finite": bool(np.all(np.isfinite(np.asarray(values)))),
        }
    return out


def constant_gradient_steps(
    tx: optax.GradientTransformation, at: Sequence[int] = (10, 100, 1_000, 3_000, 30_000)
) -> dict[int, float]:
    """``max |update|`` at the steps ``at`` (1-based) when every gradient is 1.

    Args:
      tx: any optax transformation.
      at: the steps to report, positive integers.

    Returns:
      Step -> the largest absolute update of a 3-entry parameter vector held at 0.
    """
    at = tuple(_checks.positive_int("at", t) for t in at)
    params = jnp.zeros(3)
    grads = jnp.ones(3)

    def step(state, _):
        updates, state = tx.update(grads, state, params)
        return state, jnp.max(jnp.abs(updates))

    sizes = jax.jit(lambda: jax.lax.scan(step, tx.init(params), None, length=max(at))[1])()
    return {t: float(sizes[t - 1]) for t in at}

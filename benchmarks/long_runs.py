"""Long runs: does a shipped optimizer converge when run 30 times longer than it was trained?

For each optimizer (``pretrained("general")`` by default, and the same weights with the
post-horizon anneal turned off, ``anneal_after=None``, the optimizer as it was first shipped):
the error after 30,000 steps on the problems of ``optax_lopt.convergence.PROBLEMS`` (2-D
Rosenbrock from the origin; parabolas with a vector, a matrix and a far centre), and the step
it takes under a constant gradient at steps 10 to 30,000. Target (issue 17): every final
error at most 1e-3, and a step that shrinks.

Prints a table, then one JSON object as the last line.

Usage:
  python benchmarks/long_runs.py [--optimizers=general] [--num_steps=30000]
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags

import optax_lopt
from optax_lopt import convergence

_OPTIMIZERS = flags.DEFINE_list("optimizers", ["general"], "Shipped optimizers to run.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", convergence.LONG_RUN_STEPS, "Steps per run.")


def variants(name: str) -> dict:
    """Label -> transformation: the shipped optimizer and, if it anneals, the same without."""
    lopt, theta = optax_lopt.load_pretrained(name)
    out = {name: lopt.transform(theta)}
    if getattr(lopt, "anneal_after", None) is not None:
        plain = dataclasses.replace(lopt, anneal_after=None)
        out[f"{name} (anneal_after=None)"] = plain.transform(theta)
    return out


def main(argv: list[str]) -> None:
    del argv
    results = {}
    names = list(convergence.PROBLEMS)
    print(f"error after {_NUM_STEPS.value} steps; step under a constant gradient")
    print(" | ".join(["optimizer", *names, "constant-gradient step at 10/100/1k/3k/30k"]))
    for name in _OPTIMIZERS.value:
        for label, tx in variants(name).items():
            errors = convergence.long_run_errors(tx, _NUM_STEPS.value)
            steps = convergence.constant_gradient_steps(tx)
            cells = [f"{errors[p]['final_error']:.2g}" for p in names]
            cells.append(" / ".join(f"{s:.2g}" for s in steps.values()))
            print(" | ".join([label, *cells]))
            results[label] = {
                "errors": errors,
                "constant_gradient_steps": steps,
                "max_final_error": max(e["final_error"] for e in errors.values()),
            }
    print(json.dumps({"num_steps": _NUM_STEPS.value, "results": results}))


if __name__ == "__main__":
    app.run(main)

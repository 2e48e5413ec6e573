"""Reverse-engineer an optimizer on its own task: a small absl main around the library.

Runs `interpret.reverse_engineer` (record the optimizer on instances of an ``optax_lopt``
task family, scale every probe from the gradients it saw, fit and distill its mechanisms)
and writes ``report.md``, ``report.json`` and the figures into ``--workdir``.

Examples::

  python examples/reverse_engineer.py --optimizer=pretrained:rosenbrock --task=rosenbrock
  python examples/reverse_engineer.py --optimizer=pretrained:two_moons --task=two_moons
  python examples/reverse_engineer.py --optimizer=optax:sgd:learning_rate=0.1,momentum=0.9 \\
      --task=linear_regression --baseline=optax:adam:learning_rate=0.1

``--optimizer`` is ``optax:NAME[:key=value,...]`` (a missing ``learning_rate`` defaults to
``--learning_rate``) or ``pretrained:NAME`` (``optax_lopt.pretrained(NAME)``). ``--baseline``
is ``auto`` (a shipped optimizer's best tuned baseline on its own family, from its metadata;
none otherwise), ``none`` or an ``optax:`` spec.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any

import optax
from absl import app

import interpret
import optax_lopt
from optax_lopt import tasks
from optax_lopt.meta.config_flags import config_from_flags, define_flags, setting
from optax_lopt.reverse_engineering import make_problem, pretrained_baseline


@dataclasses.dataclass(frozen=True)
class Config:
    """The script's settings; the flags are generated from it."""

    optimizer: str = setting("optax:adam", "optax:NAME[:key=value,...] or pretrained:NAME.")
    learning_rate: float = setting(0.01, "learning_rate for optax:NAME when not in the spec.")
    task: str = setting("rosenbrock", "Task family to run on.", choices=tasks.family_names())
    workdir: str = setting("/tmp/reverse_engineer", "Output folder.")
    num_steps: int | None = setting(None, "Horizon (default: the family's).")
    baseline: str = setting("auto", "auto, none or optax:NAME[:key=value,...].")
    num_instances: int = setting(8, "Instances recorded.")
    coordinates: int = setting(16, "Coordinates recorded per instance.")
    num_held_out: int = setting(16, "Held-out instances for the advantage.")
    ablations: bool = setting(False, "Also measure each ablation's held-out advantage.")
    seed: int = setting(0, "Seed of the instances and probes.")


# ----------------------------------------------------------------------------- optimizers
def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _is_numeric(parameter: inspect.Parameter) -> bool:
    """Whether an optax factory's parameter takes a number (by its default or annotation)."""
    default = parameter.default
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return True
    annotation = str(parameter.annotation)
    return any(word in annotation for word in ("float", "int", "Scalar", "Numeric"))


def parse_optimizer(
    spec: str, default_learning_rate: float = Config.learning_rate
) -> optax.GradientTransformation:
    """Builds a transformation from ``optax:NAME[:k=v,...]`` or ``pretrained:NAME``.

    Args:
      spec: the specification.
      default_learning_rate: used when an optax factory takes ``learning_rate`` and the spec
        does not give it.

    Returns:
      An optax transformation.

    Raises:
      ValueError: for a malformed spec or an unknown optax or shipped optimizer name.
    """
    kind, _, rest = spec.partition(":")
    if kind == "pretrained":
        if not rest:
            raise ValueError(f"optimizer: expected pretrained:NAME, got {spec!r}.")
        return optax_lopt.pretrained(rest)
    if kind != "optax" or not rest:
        raise ValueError(
            f"optimizer: expected optax:NAME[:key=value,...] or pretrained:NAME, got {spec!r}."
        )
    name, _, args = rest.partition(":")
    factory = getattr(optax, name, None)
    if not callable(factory):
        raise ValueError(f"optimizer: optax has no optimizer named {name!r} (from {spec!r}).")
    kwargs = {}
    for item in filter(None, args.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"optimizer: expected key=value, got {item!r} in {spec!r}.")
        kwargs[key.strip()] = _parse_value(value.strip())
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "learning_rate" in params and "learning_rate" not in kwargs:
        kwargs["learning_rate"] = default_learning_rate
    for key, value in kwargs.items():
        if isinstance(value, str) and key in params and _is_numeric(params[key]):
            raise ValueError(f"optimizer: {key} of optax.{name} expects a number, got {value!r}.")
    try:
        tx = factory(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"optimizer: optax.{name}(**{kwargs}) failed: {err}") from err
    if not isinstance(tx, optax.GradientTransformation):
        raise ValueError(
            f"optimizer: optax.{name} returned a {type(tx).__name__}, expected an "
            "optax.GradientTransformation."
        )
    return tx


# ----------------------------------------------------------------------------- baseline
def make_baseline(spec: str, optimizer: str, task: str) -> optax.GradientTransformation | None:
    """``--baseline``: auto (a shipped optimizer's tuned best on its family), none, or optax:."""
    if spec == "none":
        return None
    if spec != "auto":
        return parse_optimizer(spec)
    kind, _, name = optimizer.partition(":")
    return pretrained_baseline(name, task) if kind == "pretrained" else None


def main(argv):
    del argv
    config = config_from_flags(Config)
    start = time.perf_counter()
    tx = parse_optimizer(config.optimizer, config.learning_rate)
    problem, hessian_range = make_problem(config.task, config.num_steps)
    report = interpret.reverse_engineer(
        tx,
        problem,
        config.workdir,
        name=config.optimizer,
        baseline=make_baseline(config.baseline, config.optimizer, config.task),
        hessian_range=hessian_range,
        num_instances=config.num_instances,
        coordinates=config.coordinates,
        num_held_out=config.num_held_out,
        held_out_ablations=config.ablations,
        seed=config.seed,
    )
    seconds = time.perf_counter() - start
    print(report.distilled.description)
    print(f"wrote the report to {config.workdir} in {seconds:.1f} s")


if __name__ == "__main__":
    define_flags(Config)
    app.run(main)

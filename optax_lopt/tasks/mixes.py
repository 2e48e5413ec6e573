"""Named mixes of task families for meta-training general-purpose learned optimizers.

A mix is a tuple of `MixComponent`: a family name, its constructor arguments, whether it is
augmented with random per-tensor scales (`optax_lopt.tasks.Reparameterized`) and a weight.
``optax_lopt.meta.Mixture`` turns one estimator per component into one meta-gradient;
``examples/meta_train.py --task_mix=general`` (or a JSON list of components) does that.

  components = optax_lopt.tasks.task_mix("general")
  families = [c.build() for c in components]

References:
  Metz et al., "Tasks, stability, architecture, and compute: Training more effective learned
  optimizers, and using them to train themselves", arXiv 2009.11243.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from optax_lopt.tasks.base import TaskFamily
from optax_lopt.tasks.registry import family, family_names


@dataclasses.dataclass(frozen=True)
class MixComponent:
    """One task family of a mix.

    Args:
      family: a name in ``optax_lopt.tasks.family_names()``.
      kwargs: the family's constructor arguments, as ``(name, value)`` pairs (hashable);
        lists are turned into tuples.
      reparameterize: augment with random per-tensor scales (see
        `optax_lopt.tasks.Reparameterized`): True for the default range ``(1e-2, 1e2)``, or
        a ``(low, high)`` range.
      weight: non-negative weight of this component's meta-gradient in the mix.
      name: label of the component in metrics (``family`` when empty).

    Raises:
      ValueError: naming the field, for an unknown family, a negative or non-finite weight,
        or ``kwargs`` that are not name/value pairs.
    """

    family: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    reparameterize: bool | tuple[float, float] = False
    weight: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.family not in family_names():
            raise ValueError(
                f"family: expected one of {list(family_names())}, got {self.family!r}."
            )
        kwargs = self.kwargs
        if isinstance(kwargs, Mapping):
            kwargs = tuple(sorted(kwargs.items()))
        try:
            pairs = tuple((str(k), _hashable(v)) for k, v in kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"kwargs: expected (name, value) pairs or a dict, got {self.kwargs!r}."
            ) from err
        object.__setattr__(self, "kwargs", pairs)
        rep = self.reparameterize
        if isinstance(rep, list | tuple):
            rep = tuple(rep)
            if not (
                len(rep) == 2
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in rep)
                and 0 < rep[0] <= rep[1]
            ):
                raise ValueError(
                    f"reparameterize: expected a bool or a (low, high) range with "
                    f"0 < low <= high, got {self.reparameterize!r}."
                )
            object.__setattr__(self, "reparameterize", tuple(float(x) for x in rep))
        elif not isinstance(rep, bool):
            raise ValueError(
                f"reparameterize: expected a bool or a (low, high) range, got {rep!r}."
            )
        try:
            weight = float(self.weight)
        except (TypeError, ValueError) as err:
            raise ValueError(f"weight: expected a number >= 0, got {self.weight!r}.") from err
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight: expected a finite number >= 0, got {self.weight!r}.")
        object.__setattr__(self, "weight", weight)
        if not self.name:
            suffix = "_aug" if self.reparameterize else ""
            object.__setattr__(self, "name", f"{self.family}{suffix}")

    def build(self) -> TaskFamily:
        """The task family this component describes."""
        return family(self.family, reparameterize=self.reparameterize, **dict(self.kwargs))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict that :func:`parse_mix` reads back."""
        return {
            "family": self.family,
            "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs},
            "reparameterize": (
                list(self.reparameterize)
                if isinstance(self.reparameterize, tuple)
                else self.reparameterize
            ),
            "weight": self.weight,
            "name": self.name,
        }


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


GENERAL_MIX: tuple[MixComponent, ...] = (
    MixComponent("quadratic", (("dim", 10), ("num_steps", 1000)), True, 1.0, "quadratic"),
    MixComponent(
        "quadratic",
        (("dim", 20), ("noise_scale", 0.1), ("num_steps", 300)),
        True,
        0.5,
        "noisy_quadratic",
    ),
    MixComponent("linear_regression", (("num_steps", 500),), True, 1.0),
    MixComponent("rosenbrock", (("num_steps", 1000),), False, 1.0),
    MixComponent("two_moons", (("hidden_sizes", (16, 16)),), (0.1, 10.0), 1.0, "two_moons_aug"),
    MixComponent("digits_mlp", (("widths", (8, 16, 32)),), (0.3, 3.0), 2.0, "digits_mlp_aug"),
)
"""The base mix of the general recipe (``pretrained("general")`` was meta-trained on
``GENERAL_WIDE_MIX``, this plus generated supervised problems): quadratics (noiseless,
long horizon, and noisy), linear regression, the 2-D Rosenbrock function, a small two-moons
MLP and digits MLPs of varied widths and batch sizes (weight 2), every family except
Rosenbrock (whose start point already sets its scale) augmented with random per-tensor scales
(in ``(1e-2, 1e2)`` for the quadratic problems, narrower ranges for the networks). Horizons are
longer than the families' defaults where steps are cheap, so the optimizer sees late-training
behaviour."""


GENERAL_WIDE_MIX: tuple[MixComponent, ...] = GENERAL_MIX + (
    MixComponent("gaussian_softmax", (("num_steps", 300),), (0.3, 3.0), 1.0, "softmax_aug"),
    MixComponent(
        "gaussian_softmax",
        (("separation", 8.0), ("batch_size", 32), ("num_steps", 300)),
        False,
        1.0,
        "separable_softmax",
    ),
    MixComponent("teacher_regression", (("num_steps", 300),), (0.3, 3.0), 1.0, "teacher_aug"),
)
"""The mix ``optax_lopt.pretrained("general")`` was meta-trained on: ``GENERAL_MIX`` widened
with generated supervised problems, softmax regression on Gaussian classes (augmented, and a
nearly separable minibatch variant whose loss goes to zero) and a full-batch ReLU MLP
regressing a random teacher network (augmented)."""


def self_training_mix(
    horizon: int = 200,
    two_moons_points: int = 128,
    aux_quadratic_dim: int = 0,
    aux_quadratic_noise: float = 0.3,
) -> tuple[MixComponent, ...]:
    """The self-training mix: ``linear_regression`` and a small ``two_moons``, equal weights.

    ``two_moons`` has one hidden layer of 16 units and ``two_moons_points`` points. With
    ``aux_quadratic_dim > 0`` a noisy quadratic of that dimension (gradient noise
    ``aux_quadratic_noise``), named ``"aux_quadratic"``, is appended: a more diverse task
    distribution to meta-train on, while evaluation stays on the first two families.

    Args:
      horizon: every family's ``num_steps``.
      two_moons_points: points per ``two_moons`` instance.
      aux_quadratic_dim: dimension of the auxiliary quadratic (0: none).
      aux_quadratic_noise: its gradient-noise scale.

    Returns:
      The components (``task_mix("self_training")`` is this with the defaults).
    """
    mix = (
        MixComponent("linear_regression", (("num_steps", horizon),)),
        MixComponent(
            "two_moons",
            (("hidden_sizes", (16,)), ("num_points", two_moons_points), ("num_steps", horizon)),
        ),
    )
    if aux_quadratic_dim:
        kwargs = (
            ("dim", aux_quadratic_dim),
            ("noise_scale", aux_quadratic_noise),
            ("num_steps", horizon),
        )
        mix += (MixComponent("quadratic", kwargs, name="aux_quadratic"),)
    return mix


SELF_TRAINING_EVALUATED = ("linear_regression", "two_moons")
"""The components of `self_training_mix` that self-training is evaluated on."""

_MIXES: dict[str, tuple[MixComponent, ...]] = {
    "general": GENERAL_MIX,
    "general_wide": GENERAL_WIDE_MIX,
    "self_training": self_training_mix(),
}


def task_mix_names() -> tuple[str, ...]:
    """Names accepted by :func:`task_mix`, sorted."""
    return tuple(sorted(_MIXES))


def task_mix(name: str) -> tuple[MixComponent, ...]:
    """The preset mix ``name`` (see :func:`task_mix_names`).

    Raises:
      ValueError: ``name`` is not a preset (the message lists those that are).
    """
    if name not in _MIXES:
        raise ValueError(f"name: expected one of {list(task_mix_names())}, got {name!r}.")
    return _MIXES[name]


def parse_mix(spec: str | Sequence[Mapping[str, Any]]) -> tuple[MixComponent, ...]:
    """A mix from a preset name or a JSON list of components.

    Args:
      spec: a name in :func:`task_mix_names`, or a JSON list (or a list) of objects with keys
        ``family`` (required), ``kwargs``, ``reparameterize``, ``weight`` and ``name``, e.g.
        ``'[{"family": "quadratic", "reparameterize": true}, {"family": "rosenbrock"}]'``.

    Returns:
      The components, with distinct names.

    Raises:
      ValueError: naming ``spec``, for an unknown preset, text that is not a JSON list of
        objects, unknown keys, an empty list, repeated names or weights that are all zero.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if not text.startswith("["):
            return task_mix(text)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"spec: expected a preset in {list(task_mix_names())} or a JSON list of "
                f"components, got {spec!r} ({err})."
            ) from err
    else:
        items = list(spec)
    fields = {f.name for f in dataclasses.fields(MixComponent)}
    if not isinstance(items, list) or not items:
        raise ValueError(f"spec: expected a non-empty list of components, got {spec!r}.")
    components = []
    for item in items:
        if not isinstance(item, Mapping) or "family" not in item or set(item) - fields:
            raise ValueError(
                f"spec: expected objects with key 'family' and optional keys "
                f"{sorted(fields - {'family'})}, got {item!r}."
            )
        components.append(MixComponent(**item))
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise ValueError(f"spec: expected distinct component names, got {names}.")
    if sum(c.weight for c in components) <= 0:
        raise ValueError(f"spec: expected weights not all zero, got {spec!r}.")
    return tuple(components)

"""`Task` and `TaskFamily`: the inner problems a learned optimizer is trained on.

A `TaskFamily` is a frozen, hashable configuration (sizes, ranges, the default horizon
``num_steps``) that draws task instances with :meth:`TaskFamily.sample`. A `Task` pairs the
family (static) with the instance's ``data`` (a pytree of arrays), so ``jax.vmap(family.sample)``
returns one `Task` whose data carry a leading batch axis, and a batch of tasks can be vmapped
over like any pytree. Everything a task computes is a pure function of ``(data, params, key)``.

References:
  Metz et al., "Tasks, stability, architecture, and compute: Training more effective learned
  optimizers, and using them to train themselves", arXiv 2009.11243.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

import chex
import jax

from optax_lopt import _checks

Params = Any
"""Inner parameters of a task: a pytree of arrays."""


class TaskFamily(abc.ABC):
    """A distribution over tasks; subclasses are frozen dataclasses.

    Subclasses implement :meth:`sample_data`, :meth:`init_params` and :meth:`loss_fn` (and may
    override :meth:`validation_loss_fn`), and expose ``num_steps``, the default inner horizon.
    All three functions must be traceable, so that ``jax.vmap(family.sample)(keys)`` and
    vmapped losses work.
    """

    num_steps: int

    @abc.abstractmethod
    def sample_data(self, key: chex.PRNGKey) -> Any:
        """Draws the arrays that define one task instance.

        Args:
          key: a ``jax.random`` key.

        Returns:
          A pytree of arrays with shapes fixed by the family's configuration.
        """

    @abc.abstractmethod
    def init_params(self, data: Any, key: chex.PRNGKey) -> Params:
        """Initial inner parameters of the instance ``data``."""

    @abc.abstractmethod
    def loss_fn(self, data: Any, params: Params, key: chex.PRNGKey) -> chex.Array:
        """Scalar training loss of ``params`` on instance ``data`` (``key`` picks a minibatch)."""

    def validation_loss_fn(self, data: Any, params: Params, key: chex.PRNGKey) -> chex.Array:
        """Scalar validation loss; the training loss unless a family has held-out data."""
        return self.loss_fn(data, params, key)

    def sample(self, key: chex.PRNGKey) -> Task:
        """Draws one task instance.

        Args:
          key: a ``jax.random`` key.

        Returns:
          A `Task`; vmap this method over keys for a batch.
        """
        return Task(family=self, data=self.sample_data(key))


@dataclasses.dataclass(frozen=True)
class Task:
    """One task instance: a static `TaskFamily` and the instance's data arrays.

    A pytree whose only leaves are ``data``'s arrays (``family`` is static metadata).

    Attributes:
      family: the `TaskFamily` that drew the instance.
      data: the instance's arrays.
    """

    family: TaskFamily
    data: Any

    @property
    def num_steps(self) -> int:
        """The family's default horizon."""
        return self.family.num_steps

    def init(self, key: chex.PRNGKey) -> Params:
        """Initial inner parameters.

        Args:
          key: a ``jax.random`` key (families with a fixed start point ignore it).

        Returns:
          A pytree of arrays.
        """
        return self.family.init_params(self.data, key)

    def loss(self, params: Params, key: chex.PRNGKey) -> chex.Array:
        """Scalar training loss of ``params``; ``key`` draws the minibatch, if any."""
        return self.family.loss_fn(self.data, params, key)

    def validation_loss(self, params: Params, key: chex.PRNGKey) -> chex.Array:
        """Scalar validation loss of ``params``."""
        return self.family.validation_loss_fn(self.data, params, key)


jax.tree_util.register_dataclass(Task, data_fields=["data"], meta_fields=["family"])


def set_checked(
    family: Any, name: str, check: Callable[..., Any] = _checks.positive_int, **kwargs: Any
) -> None:
    """Replaces field ``name`` of the frozen dataclass ``family`` by its checked value.

    ``check(name, value, **kwargs)`` is one of `optax_lopt._checks`'s checks (a positive int
    by default, or its ``value_range`` / ``positive_ints``); it raises a ValueError naming
    the field, or returns the value normalised to Python types (``np.int64(5)`` becomes
    ``5``), which is stored so that families compare, hash and print alike however they were
    built.

    Args:
      family: a frozen dataclass (called from its ``__post_init__``).
      name: the field's name.
      check: the check to apply.
      **kwargs: passed on to ``check``.
    """
    object.__setattr__(family, name, check(name, getattr(family, name), **kwargs))

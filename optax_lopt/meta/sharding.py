"""Scale-out of meta-training over devices with JAX's own sharding.

The estimator's batch of inner runs is split over a 1-D device mesh whose single axis is
named ``"tasks"``: every leaf of the estimator state whose leading dimension is the number of
tasks is sharded along that axis, and everything else (meta-parameters, meta-optimizer state,
scalars) is replicated. The outer step is then compiled once for the whole mesh; XLA's SPMD
partitioner runs each device's share of the ``vmap``-ed inner unrolls locally and inserts the
all-reduce that averages the per-task meta-gradients. Nothing in the estimators changes.

On several hosts, call ``jax.distributed.initialize()`` first in every process: ``jax.devices()``
then lists every process's devices and :func:`task_mesh` spans them all.

References:
  Xu et al., "GSPMD: General and Scalable Parallelization for ML Computation Graphs",
  arXiv 2105.04663.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from optax_lopt import _checks

TASK_AXIS = "tasks"
"""Name of the mesh axis the task batch is split over."""


def task_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"tasks"``.

    Args:
      devices: the devices to use; all devices of all processes (``jax.devices()``) when None.

    Returns:
      A ``jax.sharding.Mesh``.

    Raises:
      ValueError: if ``devices`` is empty.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got an empty sequence.")
    return Mesh(np.asarray(devices), (TASK_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that places a full copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def task_shardings(tree: Any, mesh: Mesh, num_tasks: int) -> Any:
    """Shardings for ``tree``: split leaves with leading dimension ``num_tasks``, copy the rest.

    Args:
      tree: a pytree of arrays or ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape``).
      mesh: a mesh with a ``"tasks"`` axis, from :func:`task_mesh`.
      num_tasks: the size of the task batch; must be divisible by the number of devices on
        the ``"tasks"`` axis.

    Returns:
      A pytree of ``NamedSharding`` with ``tree``'s structure.

    Raises:
      ValueError: if ``mesh`` has no ``"tasks"`` axis, or ``num_tasks`` is not a positive
        multiple of its size.
    """
    if TASK_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh: expected a mesh with a {TASK_AXIS!r} axis, got axes {mesh.axis_names}."
        )
    size = mesh.shape[TASK_AXIS]
    num_tasks = _checks.positive_int("num_tasks", num_tasks)
    if num_tasks % size:
        raise ValueError(
            f"num_tasks: expected a positive multiple of the {size} devices on the "
            f"{TASK_AXIS!r} axis, got {num_tasks!r}."
        )
    split = NamedSharding(mesh, PartitionSpec(TASK_AXIS))
    copy = replicated(mesh)

    def choose(leaf: Any) -> NamedSharding:
        shape = getattr(leaf, "shape", ())
        return split if len(shape) >= 1 and shape[0] == num_tasks else copy

    return jax.tree.map(choose, tree)

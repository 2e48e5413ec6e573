"""Atomic training checkpoints for the meta-trainer, written with orbax.

A checkpoint holds the whole training state (meta-parameters, meta-optimizer state, the
estimator's persistent inner runs, the step and the skip counter) plus a small JSON metadata
dict. Orbax writes each checkpoint into a temporary directory and renames it only once every
file is on disk, so a run killed at any moment (even by SIGKILL) leaves either a complete
checkpoint or none; leftover temporary directories are removed when the manager next opens
the directory. Only the last ``max_to_keep`` checkpoints are kept.

References:
  Orbax checkpointing, https://orbax.readthedocs.io (CheckpointManager).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from optax_lopt import _checks

CHECKPOINT_DIRNAME = "checkpoints"
UNREADABLE_DIRNAME = "unreadable_checkpoints"


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    """Returns ``<workdir>/checkpoints`` as an absolute path."""
    return os.path.abspath(os.path.join(os.fspath(workdir), CHECKPOINT_DIRNAME))


class Checkpointer:
    """Saves and restores training states under ``<workdir>/checkpoints/<step>``.

    Args:
      workdir: the run's working directory.
      max_to_keep: how many of the most recent checkpoints to keep (>= 1).
      async_save: write in a background thread (the device-to-host copy still happens
        before :meth:`save` returns, so the caller may go on updating its state).

    Raises:
      ValueError: if ``max_to_keep`` is not a positive integer.
    """

    def __init__(
        self, workdir: str | os.PathLike, max_to_keep: int = 3, async_save: bool = True
    ) -> None:
        max_to_keep = _checks.positive_int("max_to_keep", max_to_keep)
        self.directory = checkpoint_dir(workdir)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> tuple[int, ...]:
        """The steps of all complete checkpoints kept, ascending."""
        return tuple(sorted(self._manager.all_steps()))

    def save(self, step: int, state: Any, metadata: dict[str, Any]) -> None:
        """Writes ``state`` (a pytree of arrays) and JSON ``metadata`` as checkpoint ``step``.

        Args:
          step: the outer step the state is at.
          state: the training state.
          metadata: a JSON-serialisable dict stored beside it (e.g. the seed).
        """
        if step in self._manager.all_steps():
            return
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                metadata=ocp.args.JsonSave(metadata),
            ),
            force=True,
        )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Reads a checkpoint into the structure, dtypes and shardings of ``abstract_state``.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` (with ``sharding`` set to place
            the arrays), e.g. from ``jax.eval_shape``.
          step: which checkpoint; the latest when None.

        Returns:
          ``(state, metadata)``.

        Raises:
          FileNotFoundError: if there is no such checkpoint.
        """
        if step is None:
            step = self.latest_step()
        if step is None or step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"step: expected one of the checkpoints {self.all_steps()} in "
                f"{self.directory}, got {step!r}."
            )
        restored = self._manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                metadata=ocp.args.JsonRestore(),
            ),
        )
        return restored.state, dict(restored.metadata)

    def read_metadata(self, step: int) -> dict[str, Any]:
        """Reads only the JSON metadata of checkpoint ``step`` (no array is read)."""
        restored = self._manager.restore(
            int(step), args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
        )
        return dict(restored.metadata)

    def set_aside(self, step: int) -> str:
        """Moves an unreadable checkpoint ``step`` to ``<workdir>/unreadable_checkpoints``.

        Returns:
          Where it went (it is kept for inspection, never deleted).
        """
        source = os.path.join(self.directory, str(int(step)))
        target_dir = os.path.join(os.path.dirname(self.directory), UNREADABLE_DIRNAME)
        os.makedirs(target_dir, exist_ok=True)
        target = os.path.join(target_dir, str(int(step)))
        suffix = 0
        while os.path.exists(target):
            suffix += 1
            target = os.path.join(target_dir, f"{int(step)}_{suffix}")
        shutil.move(source, target)
        self._manager.reload()
        return target

    def wait(self) -> None:
        """Blocks until pending asynchronous writes are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_like(tree: Any, shardings: Any | None = None) -> Any:
    """``jax.ShapeDtypeStruct`` leaves for ``tree``, optionally with ``shardings``.

    Args:
      tree: a pytree of arrays or ``ShapeDtypeStruct``.
      shardings: None (leaves go to the first local device) or a matching pytree of
        ``jax.sharding.Sharding``.

    Returns:
      The abstract pytree to pass to :meth:`Checkpointer.restore`.
    """
    if shardings is None:
        device = jax.local_devices()[0]
        shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(device), tree)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )

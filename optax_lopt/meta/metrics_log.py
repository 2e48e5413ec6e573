"""The meta-trainer's metrics log: ``<workdir>/metrics.jsonl``, one JSON object per line.

Every outer step appends one object with at least ``"step"`` (the number of outer steps done,
starting at 1) and ``"meta_loss"``. Non-finite numbers are written as ``null`` so that every
line is strict JSON. A line is flushed as soon as it is written; a run killed mid-write may
leave a partial last line, which :func:`truncate_metrics` (called on resume) drops along with
every line past the restored checkpoint, so a resumed run's log has no duplicates.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

METRICS_FILENAME = "metrics.jsonl"


def metrics_path(workdir: str | os.PathLike) -> str:
    """Returns ``<workdir>/metrics.jsonl``."""
    return os.path.join(os.fspath(workdir), METRICS_FILENAME)


def _jsonable(value: Any) -> Any:
    """Converts numpy / jax scalars to Python numbers; non-finite floats to None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _parse_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a partial line left by a killed run
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads ``<workdir>/metrics.jsonl``.

    Args:
      workdir: the meta-trainer's working directory.

    Returns:
      One dict per outer step, in file order; an empty list when there is no log. Malformed
      lines (a partial last line from a killed run) are skipped.
    """
    path = metrics_path(workdir)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return _parse_lines(f.read())


def truncate_metrics(workdir: str | os.PathLike, last_step: int) -> int:
    """Keeps only the well-formed lines with ``step <= last_step``; rewrites atomically.

    Args:
      workdir: the meta-trainer's working directory.
      last_step: the outer step of the checkpoint the run resumes from (0 for a fresh run).

    Returns:
      The number of lines kept.
    """
    path = metrics_path(workdir)
    if not os.path.exists(path):
        return 0
    kept = [r for r in read_metrics(workdir) if r["step"] <= last_step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for record in kept:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(kept)


class MetricsWriter:
    """Appends one JSON line per outer step to ``<workdir>/metrics.jsonl``.

    Args:
      workdir: the meta-trainer's working directory (created if missing).
    """

    def __init__(self, workdir: str | os.PathLike) -> None:
        os.makedirs(os.fspath(workdir), exist_ok=True)
        self._file = open(metrics_path(workdir), "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        """Appends ``record`` (which must hold an integer ``"step"``) and flushes."""
        if not isinstance(record.get("step"), int):
            raise ValueError(f"record: expected an integer 'step' entry, got {record!r}.")
        self._file.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def summarize(records: list[dict[str, Any]], window: int = 20) -> dict[str, Any]:
    """Mean meta-loss over the first and last ``window`` outer steps, and the cut between.

    Args:
      records: the records of ``metrics.jsonl`` (`read_metrics`).
      window: outer steps averaged at each end (at most half the finite meta-losses).

    Returns:
      ``{"steps", "meta_loss_first", "meta_loss_last", "reduction", "num_skipped"}``; only
      ``"steps"`` when no meta-loss is finite. ``reduction`` is ``1 - last / first``.
    """
    losses = [r["meta_loss"] for r in records if r.get("meta_loss") is not None]
    if not losses or not all(isinstance(v, (int, float)) for v in losses):
        return {"steps": len(records)}
    values = np.asarray(losses, np.float64)
    window = max(1, min(window, values.size // 2 or 1))
    first, last = float(values[:window].mean()), float(values[-window:].mean())
    return {
        "steps": len(records),
        "meta_loss_first": first,
        "meta_loss_last": last,
        "reduction": 1.0 - last / first if first else None,
        "num_skipped": records[-1].get("num_skipped", 0),
    }

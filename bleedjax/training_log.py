"""Training metrics: one JSON line per logged step in ``WORKDIR/metrics.jsonl`` and TensorBoard
event files in ``WORKDIR/tensorboard`` (written with tensorboardX, which needs no TensorFlow).

Only process 0 writes. On resume, lines for steps after the restored checkpoint (written before
the process was killed) are dropped, so the file holds one uninterrupted curve.
"""

from __future__ import annotations

import json
import math
import os

import jax
from etils import epath

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The records of ``metrics.jsonl`` (a torn last line, from a killed process, is skipped)."""
    path = epath.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _json_value(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


class MetricsWriter:
    """Appends ``{"step": s, "split": "train"|"eval", name: value, ...}`` records.

    Args:
        workdir: training folder (local or ``gs://``).
        start_step: the step training resumes from; records after it are removed.
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, workdir: str | os.PathLike, *, start_step: int = 0, tensorboard: bool = True):
        self.path = epath.Path(workdir) / METRICS_FILE
        self.active = jax.process_index() == 0
        self.records = []
        self.summary = None
        if not self.active:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = [r for r in read_metrics(workdir) if r["step"] <= start_step]
        self._rewrite()
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.summary = SummaryWriter(str(epath.Path(workdir) / TENSORBOARD_DIR),
                                         purge_step=start_step + 1 if start_step else None)

    def _rewrite(self) -> None:
        text = "".join(json.dumps(r) + "\n" for r in self.records)
        if self.path.as_posix().startswith("gs://"):
            self.path.write_text(text)
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.active:
            return
        values = {name: float(value) for name, value in values.items()}
        record = {"step": int(step), "split": split} | {k: _json_value(v) for k, v in values.items()}
        self.records.append(record)
        if self.path.as_posix().startswith("gs://"):
            self._rewrite()  # object stores cannot append
        else:
            with open(self.path, "a") as file:
                file.write(json.dumps(record) + "\n")
        if self.summary is not None:
            for name, value in values.items():
                self.summary.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.summary is not None:
            self.summary.close()

"""One data-parallel device mesh for training, on one CPU or a TPU pod.

Every device in every process sits on one axis, ``'data'``: batches are split along it
(``P('data')``), parameters and optimiser state are replicated (``P()``). Each process feeds only
its own part of the global batch (``jax.make_array_from_process_local_data``). Multi-process runs
call ``jax.distributed.initialize()`` first, behind ``config.training.distributed`` or the
environment variable ``BLEEDJAX_DISTRIBUTED=1`` (on Cloud TPU it finds the coordinator itself;
elsewhere set ``BLEEDJAX_COORDINATOR``, ``BLEEDJAX_NUM_PROCESSES`` and ``BLEEDJAX_PROCESS_ID``).
There is no pmap: the train step is one ``jax.jit`` with these shardings.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
ENV_DISTRIBUTED = "BLEEDJAX_DISTRIBUTED"


def distributed_requested(flag: bool = False) -> bool:
    """Whether to start ``jax.distributed``: the config flag or ``BLEEDJAX_DISTRIBUTED=1``."""
    return bool(flag) or os.environ.get(ENV_DISTRIBUTED, "") not in ("", "0", "false", "False")


def initialize_distributed(flag: bool = False) -> bool:
    """Calls ``jax.distributed.initialize()`` once when requested; returns whether it did.

    ``BLEEDJAX_COORDINATOR`` (host:port), ``BLEEDJAX_NUM_PROCESSES`` and ``BLEEDJAX_PROCESS_ID``
    are passed on when set (local multi-process runs); on Cloud TPU all three are found
    automatically.
    """
    if not distributed_requested(flag):
        return False
    if jax.distributed.is_initialized():
        return True
    kwargs = {}
    if address := os.environ.get("BLEEDJAX_COORDINATOR"):
        kwargs["coordinator_address"] = address
    if count := os.environ.get("BLEEDJAX_NUM_PROCESSES"):
        kwargs["num_processes"] = int(count)
    if index := os.environ.get("BLEEDJAX_PROCESS_ID"):
        kwargs["process_id"] = int(index)
    jax.distributed.initialize(**kwargs)
    return True


def make_mesh(devices: list | None = None) -> Mesh:
    """A one-axis ``('data',)`` mesh over all devices (or the given ones, for tests).

    The axis is ``Auto``: shardings are given at the jit boundary and XLA propagates them inside
    (model code needs no sharding annotations).
    """
    if devices is None:
        return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``'data'``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full copy on every device (parameters, optimiser state, scalars)."""
    return NamedSharding(mesh, P())


def local_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """This process's share of the global batch; the batch must divide evenly over devices."""
    devices = mesh.devices.size
    if global_batch_size % devices:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not a multiple of the {devices} devices "
            "of the mesh"
        )
    local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    return global_batch_size // devices * local


def replicate(tree, mesh: Mesh):
    """Puts every array of a pytree on every device of the mesh (``P()``); each process must
    hold the same values."""
    sharding = replicated(mesh)

    def put(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)

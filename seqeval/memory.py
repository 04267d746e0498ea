"""Memory a run will need, estimated before anything large is allocated, so an impossible run is
refused in one line instead of dying of an out-of-memory error (or swapping) minutes later.

`estimate_memory` sizes each part of a run from shapes alone (`jax.eval_shape`), as the mode
and settings will hold it; `available_memory` is what the device or host has free;
`check_memory` compares them and names the flag that shrinks the largest part.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqeval.algorithms.base import Agent, DatasetStats, Spaces
from seqeval.algorithms.checks import abstract_batch
from seqeval.data import OfflineData
from seqeval.errors import UserError
from seqeval.settings import RunSettings

FLOAT_BYTES = 4
# A run is refused when the estimate exceeds the free memory: one that starts anyway dies in
# XLA with a traceback and a half-made run directory.
MEMORY_MARGIN = 1
# What each part of the estimate grows with, for the message.
MEMORY_FLAGS = {
    "the dataset and its orders": "--seeds",
    "agent states": "--seeds or smaller networks (--agent.*hidden_dims)",
    "training batches": "--batch-size or --seeds",
    "per-step metrics": "--steps-per-increment / --updates-per-env-step",
    "prequential scoring": "--eval-every, or pass --no-prequential",
    "the online buffer": "--online-steps or --seeds",
}


def _bytes(tree: Any) -> int:
    return sum(int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree))


def _activation_width(state: Any) -> int:
    """Floats an update computes per batch row, estimated from the state: the output width of
    every weight matrix (ensembles count each member; the optimizer's and target networks'
    copies stand in for the backward pass)."""
    return sum(int(np.prod(leaf.shape)) // int(leaf.shape[-2])
               for leaf in jax.tree.leaves(state) if len(leaf.shape) >= 2 and leaf.shape[-2])


def estimate_memory(settings: RunSettings, agent: Agent, config: Any, data: OfflineData,
                    batch_size: int, initial_size: int) -> dict[str, int]:
    """Bytes the run will hold at once, by part (`MEMORY_FLAGS`), from shapes alone: the agent's
    `init` and `update` are traced with `jax.eval_shape` (nothing is allocated)."""
    spaces = Spaces(data.observation_dim, data.action_dim)
    row_floats = 2 * data.observation_dim + 2 * data.action_dim + 3  # a Batch row
    sizes = 1
    if settings.mode == "retrain":
        sizes = len(settings.sizes) if settings.sizes else 8
    members = settings.num_seeds * sizes
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    stats = DatasetStats.identity(data.observation_dim)
    try:
        state = jax.eval_shape(lambda k: agent.init(config, k, spaces, stats, 1_000), key)
        _, metrics = jax.eval_shape(lambda s, b, k: agent.update(config, s, b, k), state,
                                    abstract_batch(spaces, 1), key)
        state_bytes, width = _bytes(state), _activation_width(state)
        metric_count = len(jax.tree.leaves(metrics))
    except Exception:  # a broken agent: check_agent names its problem next
        state_bytes, width, metric_count = 0, 0, 0
    steps_stacked = max(settings.steps_per_increment, settings.updates_per_env_step)
    estimate = {
        # rows and their next-action rows; each seed's order; each member's inverse order
        "the dataset and its orders": data.size * (row_floats + 1 + settings.num_seeds + members)
        * FLOAT_BYTES,
        # the states, their updated copies, and the checkpoint's copy
        "agent states": 3 * members * state_bytes,
        "training batches": members * batch_size * (row_floats + width) * FLOAT_BYTES,
        "per-step metrics": members * steps_stacked * metric_count * FLOAT_BYTES,
        "prequential scoring": 0,
        "the online buffer": settings.num_seeds * (settings.online_steps + settings.online_block)
        * row_floats * FLOAT_BYTES if settings.online_steps else 0,
    }
    if settings.prequential and settings.mode == "sequential" and agent.score is not None:
        chunk = min(settings.eval_every + settings.increment, max(data.size - initial_size, 1))
        # forward passes only: about a third of the width (no optimizer or target copies)
        estimate["prequential scoring"] = members * chunk * (row_floats + width // 3) \
            * FLOAT_BYTES
    return estimate


def available_memory() -> tuple[int | None, str]:
    """(bytes free for the run, where): the accelerator's free memory when JAX reports it,
    else the host's available memory (within a container's limit). None when unknown."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"{device.platform} " \
                f"device {device.id}"
    free = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            free = None
    try:  # a cgroup (v2) limit below the host's memory
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = int(limit) - used if free is None else min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free, "this machine"


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000
    raise AssertionError


def check_memory(estimate: dict[str, int], available: tuple[int | None, str]) -> None:
    """Refuse a run whose estimated memory exceeds what is free (times `MEMORY_MARGIN`),
    naming the largest part and the flag that shrinks it."""
    free, where = available
    total = sum(estimate.values())
    if free is None or total <= MEMORY_MARGIN * free:
        return
    largest = max(estimate, key=estimate.__getitem__)
    raise UserError(
        f"this run needs about {_size(total)} of memory ({largest}: "
        f"{_size(estimate[largest])}) but about {_size(max(free, 0))} is free on {where}; "
        f"lower {MEMORY_FLAGS[largest]}")

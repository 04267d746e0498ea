"""Every built-in agent declares each metric it records (Agent.metrics): its direction, which
`seqeval select` uses, and its meaning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from seqeval.agents import DatasetStats, Metric, Spaces, get_agent
from seqeval.algorithms.checks import abstract_batch
from seqeval.algorithms.registry import BUILTIN_AGENTS


@pytest.mark.parametrize("name", sorted(BUILTIN_AGENTS))
def test_every_recorded_metric_is_declared(name):
    agent = get_agent(name)
    config = agent.make_config({})
    spaces = Spaces(3, 1)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    state = jax.eval_shape(lambda k: agent.init(config, k, spaces, DatasetStats.identity(3),
                                                 100), key)
    _, updated = jax.eval_shape(lambda s, b, k: agent.update(config, s, b, k), state,
                                abstract_batch(spaces, 4), key)
    recorded = set(updated)
    if agent.score is not None:
        recorded |= set(jax.eval_shape(lambda s, b: agent.score(config, s, b), state,
                                       abstract_batch(spaces, 1)))
    assert recorded == set(agent.metrics)
    for metric in agent.metrics.values():
        assert metric.direction in ("lower", "higher", None) and metric.meaning


def test_a_direction_is_lower_higher_or_none():
    with pytest.raises(ValueError, match="'lower', 'higher' or None"):
        Metric("down", "a loss")

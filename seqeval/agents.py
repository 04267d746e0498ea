"""The public plug-in API: everything an agent file or package imports from seqeval.

    from seqeval.agents import Agent, Batch, DatasetStats, Spaces, MLP, adam, polyak, ...

An agent is a config dataclass plus pure functions (`init`, `update`, `act`, and optionally
`explore` and `score`) wrapped in an `Agent`; docs/agents.md describes the contract and the
helpers. The built-in agents (seqeval/algorithms in the installed package, `algorithms/` in the
repository) are written against exactly this module's names.
"""

from seqeval.algorithms.base import (
    ENTRY_POINT_GROUP,
    Agent,
    Batch,
    DatasetStats,
    Spaces,
    available_agents,
    config_to_dict,
    get_agent,
    make_config,
)
from seqeval.algorithms.nets import (
    MLP,
    Dense,
    DeterministicActor,
    EnsembleMLP,
    GaussianActor,
    StateActionEnsemble,
    StateActionValue,
    StateValue,
    TanhGaussianActor,
    adam,
    ensemble_mse,
    gaussian_explore,
    gaussian_log_prob,
    member,
    normalize,
    observation_stats,
    polyak,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
    td_target,
)

__all__ = [
    "ENTRY_POINT_GROUP", "Agent", "Batch", "DatasetStats", "Spaces", "available_agents",
    "config_to_dict", "get_agent", "make_config",
    "MLP", "Dense", "DeterministicActor", "EnsembleMLP", "GaussianActor", "StateActionEnsemble",
    "StateActionValue", "StateValue", "TanhGaussianActor", "adam", "ensemble_mse",
    "gaussian_explore", "gaussian_log_prob", "member", "normalize", "observation_stats",
    "polyak", "tanh_gaussian_log_prob", "tanh_gaussian_sample", "td_target",
]

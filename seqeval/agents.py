"""The public plug-in API: everything an agent file or package imports from seqeval.

    from seqeval.agents import Agent, Batch, DatasetStats, Spaces, MLP, adam, polyak, ...

An agent is a config dataclass plus pure functions (`init`, `update`, `act`, and optionally
`explore` and `score`) wrapped in an `Agent`; docs/agents.md describes the contract and lists
every helper with its signature. The built-in agents (seqeval/algorithms in the installed
package, `algorithms/` in the repository) are written against exactly this module's names.
"""

from seqeval.algorithms.base import (
    AT_LEAST_ONE,
    DEFAULT_BATCH_SIZE,
    NON_NEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    Agent,
    Batch,
    DatasetStats,
    Metric,
    Range,
    Spaces,
    check_config_conventions,
    check_log_std_bounds,
    check_ranges,
    config_error,
    config_to_dict,
    make_config,
    resolve_batch_size,
)
from seqeval.algorithms.checks import agent_fingerprint, check_agent
from seqeval.algorithms.nets import (
    MLP,
    Dense,
    DeterministicActor,
    EnsembleMLP,
    GaussianActor,
    MLPOptions,
    StateActionEnsemble,
    StateActionValue,
    StateValue,
    TanhGaussianActor,
    adam,
    advantage_weights,
    awr_actor_loss,
    clipped_gaussian_sample,
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
from seqeval.algorithms.registry import (
    ENTRY_POINT_GROUP,
    agent_display_name,
    available_agents,
    get_agent,
)

__all__ = [
    "DEFAULT_BATCH_SIZE", "ENTRY_POINT_GROUP", "Agent", "Batch", "Metric", "DatasetStats", "Spaces",
    "agent_display_name", "available_agents", "check_config_conventions", "config_error",
    "check_ranges", "check_log_std_bounds", "Range", "POSITIVE", "NON_NEGATIVE", "AT_LEAST_ONE",
    "OPEN_UNIT",
    "config_to_dict", "get_agent", "make_config",
    "resolve_batch_size", "agent_fingerprint", "check_agent",
    "MLP", "Dense", "DeterministicActor", "EnsembleMLP", "GaussianActor", "MLPOptions",
    "StateActionEnsemble", "StateActionValue", "StateValue", "TanhGaussianActor", "adam",
    "advantage_weights", "awr_actor_loss", "clipped_gaussian_sample", "ensemble_mse",
    "gaussian_explore", "gaussian_log_prob", "member", "normalize", "observation_stats",
    "polyak", "tanh_gaussian_log_prob", "tanh_gaussian_sample", "td_target",
]

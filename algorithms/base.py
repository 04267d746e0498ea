"""The agent interface every algorithm implements (the registry that finds agents by name is
seqeval.algorithms.registry).

An agent is a frozen config dataclass plus pure, jittable, vmappable functions:

    init(config, key, spaces, stats, total_steps) -> state
    update(config, state, batch, key)             -> (state, metrics)
    act(config, state, observations, key, deterministic) -> actions
    explore(config, state, observations, key)     -> actions      (optional; online phase)
    score(config, state, batch)                   -> metrics      (optional; prequential signal)
    check_config(config)                          -> None         (optional; raise UserError)

The evaluator only ever calls these functions; it never looks inside a state. Conventions:
- actions are in [-1, 1] on every axis (the evaluator rescales to the environment's bounds);
- `state` is a pytree (static parts, such as apply functions, may sit in non-pytree fields);
- `metrics` is a flat dict of scalar arrays; the evaluator treats any non-finite value as
  divergence, so report the losses there;
- all randomness comes from the `key` arguments.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqeval.errors import UserError


class _BatchFields(NamedTuple):
    observations: jax.Array  # (B, observation_dim) float32
    actions: jax.Array  # (B, action_dim) float32, in [-1, 1]
    rewards: jax.Array  # (B,) float32
    next_observations: jax.Array  # (B, observation_dim) float32
    terminals: jax.Array  # (B,) float32, 1.0 where the episode terminated (not truncated)
    # (B, action_dim) float32: the dataset's action at next_observations (the next step of the
    # same episode, in logged order); zeros where next_action_valid is 0.
    next_actions: jax.Array
    # (B,) float32: 1.0 where next_actions holds that action; 0.0 where none exists: at the
    # end of an episode (terminated, truncated, or the last logged step) and for online
    # transitions (the agent's next action is not yet known when they are stored).
    next_action_valid: jax.Array


_NOT_GIVEN: Any = object()


def _zeros_like(like: Any) -> Any:
    """float32 zeros shaped like `like`, of the same kind: a jax array (or tracer), a
    jax.ShapeDtypeStruct, or a numpy array."""
    if isinstance(like, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(tuple(like.shape), jnp.float32)
    if isinstance(like, jax.Array):
        return jnp.zeros(like.shape, jnp.float32)
    return np.zeros(np.shape(like), np.float32)


class Batch(_BatchFields):
    """A batch of transitions; leading axis is the batch (a pytree: a named tuple of arrays).

    Built without `next_actions`/`next_action_valid` (online collection, tests, synthetic
    data), those are zeros: no next action is known for any transition.
    """

    __slots__ = ()

    def __new__(cls, observations: Any, actions: Any, rewards: Any, next_observations: Any,
                terminals: Any, next_actions: Any = _NOT_GIVEN,
                next_action_valid: Any = _NOT_GIVEN) -> Batch:
        if next_actions is _NOT_GIVEN:
            next_actions = _zeros_like(actions)
        if next_action_valid is _NOT_GIVEN:
            next_action_valid = _zeros_like(rewards)
        return super().__new__(cls, observations, actions, rewards, next_observations,
                               terminals, next_actions, next_action_valid)


@dataclasses.dataclass(frozen=True)
class Spaces:
    """Static shapes of the problem (hashable, so it can be closed over by jit)."""

    observation_dim: int
    action_dim: int


class DatasetStats(NamedTuple):
    """Statistics of the whole offline dataset, offered to `init` (a pytree of arrays)."""

    observation_mean: jax.Array  # (observation_dim,)
    observation_std: jax.Array  # (observation_dim,), already floored away from zero
    reward_mean: jax.Array  # ()
    reward_std: jax.Array  # ()
    episode_return_min: jax.Array  # () smallest return of a complete episode
    episode_return_max: jax.Array  # () largest return of a complete episode

    @staticmethod
    def identity(observation_dim: int) -> DatasetStats:
        """Neutral statistics (no normalisation), for tests and synthetic data."""
        return DatasetStats(
            observation_mean=jnp.zeros(observation_dim, jnp.float32),
            observation_std=jnp.ones(observation_dim, jnp.float32),
            reward_mean=jnp.float32(0.0),
            reward_std=jnp.float32(1.0),
            episode_return_min=jnp.float32(0.0),
            episode_return_max=jnp.float32(1000.0),
        )


InitFn = Callable[[Any, jax.Array, Spaces, DatasetStats, int], Any]
UpdateFn = Callable[[Any, Any, Batch, jax.Array], tuple[Any, dict[str, jax.Array]]]
ActFn = Callable[[Any, Any, jax.Array, jax.Array, bool], jax.Array]
ExploreFn = Callable[[Any, Any, jax.Array, jax.Array], jax.Array]
ScoreFn = Callable[[Any, Any, Batch], dict[str, jax.Array]]
CheckConfigFn = Callable[[Any], None]


@dataclasses.dataclass(frozen=True)
class Metric:
    """What a metric an agent records (in `update`'s or `score`'s dict) means, and which way
    it points: "lower" or "higher" when that value is expected to go with a better policy (a
    loss, a predicted return), None when it has no such direction (an entropy coefficient,
    its tuning loss, an entropy). `seqeval select` offers only metrics with a direction as
    environment-free criteria."""

    direction: str | None
    meaning: str

    def __post_init__(self) -> None:
        if self.direction not in ("lower", "higher", None):
            raise ValueError(f"Metric direction must be 'lower', 'higher' or None, got "
                             f"{self.direction!r}")


# The prequential `score` metrics of a Gaussian policy with twin critics (IQL, CQL, SAC, AWAC).
GAUSSIAN_ACTOR_CRITIC_SCORES = {
    "action_nll": Metric("lower", "policy's negative log-likelihood of the dataset's actions"),
    "action_mse": Metric("lower", "policy mean's squared error on the dataset's actions"),
    "td_error": Metric("lower", "critics' squared TD error on unseen transitions"),
    "q_value": Metric("higher", "critics' minimum Q of the dataset's actions (a predicted "
                                "return)"),
}


@dataclasses.dataclass(frozen=True)
class Agent:
    """An algorithm: its config class and its pure functions."""

    name: str
    config_class: type  # a frozen dataclass; every field has a default
    init: InitFn
    update: UpdateFn
    act: ActFn
    explore: ExploreFn | None = None  # default: act(..., deterministic=False)
    score: ScoreFn | None = None  # losses on unseen transitions, without training
    description: str = ""
    # The algorithm's own batch size (ReBRAC: 1024), used unless the run sets --batch-size;
    # None: the protocol's DEFAULT_BATCH_SIZE.
    default_batch_size: int | None = None
    # The agent's own constraints on its config (e.g. IQL's expectile in (0, 1)), beyond the
    # conventions every config is checked against (`check_config_conventions`); raises a
    # UserError naming the field and its allowed range (`config_error`).
    check_config: CheckConfigFn | None = None
    # What each metric of `update` and `score` means and which way it points (`Metric`); the
    # evaluator reads directions from here and names no agent's metric itself.
    metrics: Mapping[str, Metric] = dataclasses.field(default_factory=dict, hash=False,
                                                      compare=False)
    # Settings renamed since an earlier seqeval, old name -> current name (IQL: temperature ->
    # beta): an old name is refused with one line naming the current one, wherever settings
    # are read (`--agent.KEY`, a study spec), never silently taken.
    renamed_settings: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False,
                                                            compare=False)

    def explore_actions(self, config: Any, state: Any, observations: jax.Array,
                        key: jax.Array) -> jax.Array:
        """Actions for collecting online data: the agent's own exploration."""
        if self.explore is not None:
            return self.explore(config, state, observations, key)
        return self.act(config, state, observations, key, False)

    def network_overrides(self, hidden_dims: str) -> tuple[tuple[str, str], ...]:
        """Overrides setting every `*hidden_dims` field (e.g. small networks for CPU demos)."""
        return tuple((f.name, hidden_dims) for f in dataclasses.fields(self.config_class)
                     if f.name.endswith("hidden_dims"))

    def make_config(self, overrides: Mapping[str, str] | None = None) -> Any:
        """The default config with `overrides` (key -> string value) applied and checked: its
        types, the conventions on field names, and the agent's own `check_config`."""
        config = make_config(self.config_class, overrides or {}, agent_name=self.name,
                             renamed=self.renamed_settings)
        check_config_conventions(config, self.name)
        if self.check_config is not None:
            self.check_config(config)
        return config

    def unknown_setting(self, key: str) -> UserError:
        """The error for a setting this agent does not have (`unknown_setting_error`)."""
        return unknown_setting_error(self.name, self.config_class, key, self.renamed_settings)


DEFAULT_BATCH_SIZE = 256  # the protocol's batch size (the SeqEval paper's) when neither the
# run nor the agent chooses one


def resolve_batch_size(agent: Agent, requested: int | None = None) -> int:
    """The batch size a run uses: `requested` (--batch-size) when given, else the agent's
    `default_batch_size`, else DEFAULT_BATCH_SIZE."""
    if requested is not None:
        return int(requested)
    if agent.default_batch_size is not None:
        return int(agent.default_batch_size)
    return DEFAULT_BATCH_SIZE


# ---------------------------------------------------------------------------------------------
# Configs from strings (command line) and back to JSON.


def _parse_value(text: str, annotation: Any, key: str, agent_name: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    bad = UserError(
        f"agent '{agent_name}': --agent.{key} expects {_type_name(annotation)}, got '{text}'"
    )
    if origin in (types.UnionType, typing.Union):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(text, arg, key, agent_name)
            except UserError:
                continue
        raise bad
    if origin is tuple:
        inside = text.replace(" ", "").strip("()[]")
        items = inside.split(",") if inside else []  # "()" or "": the empty tuple
        if items and items[-1] == "" and len(items) > 1:
            items.pop()  # one trailing comma, as in "(256,)"
        if "" in items:
            raise UserError(f"agent '{agent_name}': --agent.{key} expects comma-separated "
                            f"values such as 256,256, got '{text}'")
        inner = args[0] if args else str
        return tuple(_parse_value(t, inner, key, agent_name) for t in items)
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise bad
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise bad from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise bad from None
    if annotation is str:
        return text
    raise bad


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def unknown_setting_error(agent_name: str, config_class: type, key: str,
                          renamed: Mapping[str, str] | None = None) -> UserError:
    """The one-line error for a setting `config_class` does not have: for a name in `renamed`
    (old -> current), the current name; else the settings there are."""
    if renamed and key in renamed:
        return UserError(f"agent '{agent_name}' has no setting '{key}': it is now "
                         f"'{renamed[key]}' (renamed so that a setting's name means one thing "
                         f"in every agent); set '{renamed[key]}' instead")
    known = ", ".join(sorted(f.name for f in dataclasses.fields(config_class)))
    return UserError(f"agent '{agent_name}' has no setting '{key}'; its settings are: {known}")


def make_config(config_class: type, overrides: Mapping[str, Any], agent_name: str = "agent",
                renamed: Mapping[str, str] | None = None):
    """Build `config_class` from string (CLI) or already-typed (JSON) override values; a key
    that is no field is refused (`unknown_setting_error`, naming the current name of a
    `renamed` one)."""
    hints = typing.get_type_hints(config_class)
    fields = {f.name for f in dataclasses.fields(config_class)}
    values = {}
    for key, value in overrides.items():
        if key not in fields:
            raise unknown_setting_error(agent_name, config_class, key, renamed)
        if isinstance(value, str):
            values[key] = _parse_value(value, hints[key], key, agent_name)
        elif isinstance(value, list):  # from JSON
            values[key] = tuple(value)
        else:
            values[key] = value
    return config_class(**values)


def config_error(agent_name: str, field: str, allowed: str, value: Any) -> UserError:
    """The error for a config value outside its range, e.g.
    `config_error("iql", "expectile", "in (0, 1)", 2.0)`."""
    return UserError(f"agent '{agent_name}': --agent.{field} must be {allowed} (got {value!r}); "
                     "pass a value in that range")


@dataclasses.dataclass(frozen=True)
class Range:
    """An interval a config value must lie in (for `check_ranges`)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False  # the low end itself is excluded
    high_open: bool = False

    def __contains__(self, value: Any) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return bool(above and below)

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


POSITIVE = Range(0.0, low_open=True)
NON_NEGATIVE = Range(0.0)
AT_LEAST_ONE = Range(1.0)
OPEN_UNIT = Range(0.0, 1.0, low_open=True, high_open=True)


def check_ranges(agent_name: str, config: Any, **ranges: Range) -> None:
    """Raise `config_error` for the first field outside its range (None values pass), e.g.
    `check_ranges("iql", config, expectile=OPEN_UNIT, beta=NON_NEGATIVE)`."""
    for field, allowed in ranges.items():
        value = getattr(config, field)
        if value is not None and value not in allowed:
            raise config_error(agent_name, field, str(allowed), value)


def check_log_std_bounds(agent_name: str, config: Any) -> None:
    """`log_std_min` must lie below `log_std_max`."""
    if not config.log_std_min < config.log_std_max:
        raise config_error(agent_name, "log_std_min", f"below log_std_max ({config.log_std_max})",
                           config.log_std_min)


def check_config_conventions(config: Any, agent_name: str = "agent") -> None:
    """What every agent's config must satisfy, by field name: numbers are finite; a
    `*learning_rate` is > 0; `*hidden_dims` widths are >= 1; `discount` and `tau` are in
    (0, 1]. Raises the UserError of `config_error`."""
    for field in dataclasses.fields(config):
        name, value = field.name, getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise config_error(agent_name, name, "a finite number", value)
        if name.endswith("learning_rate") and isinstance(value, int | float) and value <= 0:
            raise config_error(agent_name, name, "> 0", value)
        if name.endswith("hidden_dims") and isinstance(value, tuple) and any(
                not isinstance(width, int) or width < 1 for width in value):
            raise config_error(agent_name, name, "layer widths of at least 1, e.g. 256,256",
                               ",".join(map(str, value)))
        if name in ("discount", "tau") and isinstance(value, int | float) and not 0 < value <= 1:
            raise config_error(agent_name, name, "in (0, 1]", value)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    items = dataclasses.asdict(config).items()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in items}

"""The agent interface every algorithm implements, and the registry that finds agents by name.

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

import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import io
import math
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqeval.errors import UserError

ENTRY_POINT_GROUP = "seqeval.agents"

# Built-in agents: name -> module defining a module-level `AGENT`. Imported lazily so that a
# run only pays for the agent it uses.
BUILTIN_AGENTS: dict[str, str] = {
    "bc": "seqeval.algorithms.bc",
    "td3_bc": "seqeval.algorithms.td3_bc",
    "iql": "seqeval.algorithms.iql",
    "cql": "seqeval.algorithms.cql",
    "sac": "seqeval.algorithms.sac",
    "rebrac": "seqeval.algorithms.rebrac",
    "awac": "seqeval.algorithms.awac",
}


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


# ---------------------------------------------------------------------------------------------
# Registry.


def _agent_from(obj: Any, where: str) -> Agent:
    if isinstance(obj, types.ModuleType):
        obj = getattr(obj, "AGENT", None)
    if not isinstance(obj, Agent):
        raise UserError(
            f"{where} is not a seqeval Agent; define AGENT = seqeval.agents.Agent(...)"
        )
    config_class = obj.config_class
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        shown = getattr(config_class, "__name__", type(config_class).__name__)
        raise UserError(f"{where}: its config_class {shown} is not a dataclass; decorate it "
                        "with @dataclasses.dataclass(frozen=True), every field with a default")
    return obj


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or (":" in spec and spec.rpartition(":")[0].endswith(".py"))


USER_AGENT_PREFIX = "seqeval_user_agent_"  # module names of agents loaded from files


def _forget_modules_in(folder: str) -> None:
    """Drop modules loaded from `folder` (and below) from the import cache, so that an agent
    file importing its neighbours gets their current code, and two agent folders with a
    module of the same name each get their own."""
    inside = folder.rstrip("/") + "/"
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if (origin.startswith(inside) and not origin.startswith(sys.prefix)
                and name.split(".")[0] != "seqeval" and not name.startswith(USER_AGENT_PREFIX)):
            del sys.modules[name]


def _load_from_file(spec: str) -> Agent:
    """`path/to/file.py:NAME`, or `path/to/file.py` for its `AGENT`."""
    path_text, attribute = (spec, "AGENT") if spec.endswith(".py") else spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"agent file '{path}' does not exist; use --agent path/to/file.py[:NAME]")
    module_name = f"{USER_AGENT_PREFIX}{abs(hash(path.resolve()))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    printed, warned = io.StringIO(), io.StringIO()
    argv = sys.argv
    folder = str(path.resolve().parent)
    _forget_modules_in(folder)  # modules beside the file are read afresh, as the file is
    sys.path.insert(0, folder)  # an agent file may import modules beside it
    try:
        # The file's own command line is not seqeval's: a script that parses sys.argv at
        # import sees only its own name, and what it prints is held until it imported well.
        sys.argv = [str(path)]
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(warned):
            module_spec.loader.exec_module(module)
    except SystemExit as error:  # sys.exit() or a script's argparse, at import
        sys.modules.pop(module_name, None)
        said = (printed.getvalue() + warned.getvalue()).strip().splitlines()
        raise UserError(f"agent file '{path}' exited while being imported (SystemExit "
                        f"{error.code!r}{': ' + said[-1] if said else ''}); an agent file must "
                        "define an Agent without running a program (put a script's code under "
                        "if __name__ == '__main__':)") from None
    except Exception as error:  # the file's own mistake: one line naming where it failed
        sys.modules.pop(module_name, None)
        raise UserError(f"agent file '{path}' cannot be loaded: {_where_it_failed(error, path)}; "
                        "fix the file") from None
    finally:
        sys.argv = argv
        sys.path.remove(folder)
    sys.stdout.write(printed.getvalue())
    sys.stderr.write(warned.getvalue())
    if not hasattr(module, attribute):
        raise UserError(f"agent file '{path}' defines no '{attribute}'; use --agent {path}:NAME "
                        "with the name of its Agent")
    return _agent_from(getattr(module, attribute), f"agent file '{spec}'")


def _where_it_failed(error: Exception, path: Path) -> str:
    """'line N: ErrorType: message' of an exception raised while executing the file `path`
    (the file's last line in the traceback; a SyntaxError carries its own)."""
    if isinstance(error, SyntaxError):  # in the file, or in a module it imports
        elsewhere = error.filename and Path(error.filename).resolve() != path.resolve()
        where = f"{error.filename} line" if elsewhere else "line"
        return f"{where} {error.lineno}: {type(error).__name__}: {error.msg}"
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    message = str(error).splitlines()[0] if str(error) else ""
    where = f"line {line}: " if line is not None else ""
    return f"{where}{type(error).__name__}" + (f": {message}" if message else "")


def agent_code_error(agent: Agent, spec: str, error: Exception) -> UserError | None:
    """The one-line UserError for an exception raised inside the agent's own code (its hooks'
    files: a `check_config`, `init` or `update` that raises), naming the file, the line, the
    function and the error; None when no frame of the agent's code is in the traceback (the
    error is seqeval's own)."""
    hooks = (agent.init, agent.update, agent.act, agent.explore, agent.score,
             agent.check_config)
    files = {Path(hook.__code__.co_filename).resolve() for hook in hooks
             if hook is not None and hasattr(hook, "__code__")}
    inside = [frame for frame in traceback.extract_tb(error.__traceback__)
              if Path(frame.filename).resolve() in files]
    if not inside:
        return None
    frame = inside[-1]
    message = str(error).splitlines()[0] if str(error) else ""
    return UserError(f"agent '{spec}' failed in {frame.name} ({frame.filename} line "
                     f"{frame.lineno}): {type(error).__name__}"
                     f"{': ' + message if message else ''}; fix the agent's code")


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_agents() -> list[str]:
    """Names usable with `--agent`: built-ins first, then installed entry points."""
    builtin = [n for n, m in BUILTIN_AGENTS.items() if importlib.util.find_spec(m) is not None]
    return builtin + sorted(set(_entry_points()) - set(builtin))


def get_agent(name: str) -> Agent:
    """Find an agent: a built-in name, an entry point name, `path/to/file.py:NAME`, or
    `path/to/file.py` (its `AGENT`)."""
    if _is_file_spec(name):
        return _load_from_file(name)
    if name in BUILTIN_AGENTS and importlib.util.find_spec(BUILTIN_AGENTS[name]) is not None:
        return _agent_from(importlib.import_module(BUILTIN_AGENTS[name]), f"agent '{name}'")
    entry_points = _entry_points()
    if name in entry_points:
        try:
            loaded = entry_points[name].load()
        except Exception as error:  # the package's own mistake: one line naming it
            message = str(error).splitlines()[0] if str(error) else ""
            raise UserError(f"agent '{name}' (entry point {entry_points[name].value}) cannot be "
                            f"loaded: {type(error).__name__}{': ' + message if message else ''}"
                            "; fix or reinstall its package") from None
        return _agent_from(loaded, f"entry point '{name}'")
    known = ", ".join(available_agents())
    raise UserError(
        f"unknown agent '{name}'; choose one of: {known} (or --agent path/to/file.py[:NAME])"
    )


def agent_display_name(spec: str) -> str:
    """The label of the agent `spec` names (in plots, reports, progress): its `Agent.name`,
    whether it comes built in, from a package or from a file."""
    return get_agent(spec).name

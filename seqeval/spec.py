"""A study spec: the TOML of agents x datasets x settings x seeds, read, checked key by key
and expanded into planned runs, each with the identity (settings, defaults included, data and
code) whose hash names its run directory. docs/sweeps.md is the spec reference; seqeval.study
keeps the plan in a study directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from seqeval.errors import UserError

MAX_RUNS = 10_000  # a larger grid is refused before it is expanded (a typo like 10**9 runs)
STUDY_KEYS = ("agents", "datasets", "seeds", "mode", "log", "wandb_project")
TABLES = ("study", "protocol", "agent")
# `seqeval run` settings a spec does not set in [protocol], and where they go instead.
_NOT_PROTOCOL = {
    "agent": "list agents in [study] agents",
    "dataset": "list datasets in [study] datasets",
    "out": "the sweep puts every run under STUDY_DIR/runs; remove it",
    "agent_overrides": "put agent settings in [agent.NAME] tables",
    "mode": 'set it in [study] (mode = "sequential", or a list of modes)',
    "seeds": "set it in [study] (seeds = N, trained together in one program)",
    "num_seeds": "set it in [study] (seeds = N, trained together in one program)",
    "progress": "a sweep shows one study-level bar; remove it",
    "eval_workers": "a sweep steps each run's evaluation in --cpus-per-run processes; remove it",
    "no_progress": "a sweep shows one study-level bar; remove it",
    "log": 'set it in [study] (log = ["tensorboard", "wandb"])',
    "wandb_project": 'set it in [study] (wandb_project = "NAME")',
}
# Flags of `seqeval run` that negate a RunSettings field.
_NEGATED = {"no_prequential": "prequential"}


def read_spec(path: Path | str) -> dict[str, Any]:
    """The parsed TOML of a study spec (UserError when missing or not TOML)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study spec '{path}' does not exist; pass a TOML file (see "
                        "docs/sweeps.md)")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"study spec '{path}' is not valid TOML ({error}); fix the "
                        "syntax") from None
    except UnicodeDecodeError:
        raise UserError(f"study spec '{path}' is not a text file; pass a TOML file") from None


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of a study: what the spec sets for it, and its full effective settings."""

    agent: str  # as get_agent takes it (an agent file's path made absolute)
    agent_name: str  # the agent's own name (for labels and directory names)
    dataset: str
    mode: str
    num_seeds: int
    protocol: dict[str, Any]  # RunSettings fields the spec sets to a non-default value
    agent_settings: dict[str, Any]  # agent config fields that differ from the agent's defaults
    varying: tuple[str, ...]  # protocol/agent keys that are grid axes (what tells runs apart)
    full_protocol: dict[str, Any]  # every protocol field of the run (for runs.csv)
    agent_config: dict[str, Any]  # the agent's whole config (for runs.csv)
    spec_settings: dict[str, Any]  # what the spec itself sets for this run (its grid point)
    code: dict[str, str]  # SHA-256 of each file of the evaluator's and the agent's code
    dataset_fingerprint: str = ""  # SHA-256 of the dataset's content (set by validate_plan)
    # experiment trackers (seqeval.tracking): how results are shown, not what the run is
    log: tuple[str, ...] = ()
    wandb_project: str | None = None

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that made the run's numbers."""
        return {"agent": self.agent, "agent_name": self.agent_name, "dataset": self.dataset,
                "dataset_fingerprint": self.dataset_fingerprint, "mode": self.mode,
                "seeds": self.num_seeds, "protocol": self.full_protocol,
                "agent_config": self.agent_config, "code": self.code}

    @property
    def key(self) -> str:
        """SHA-256 of the run's identity (full length: two runs never share a directory)."""
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()

    @property
    def slot(self) -> str:
        """Hash of what the spec asks for (agent, dataset, mode, seeds and the settings the
        spec sets): the same when only code, defaults or data change, so the run it made
        before is known as the one this run supersedes."""
        asked = {"agent": self.agent, "dataset": self.dataset, "mode": self.mode,
                 "seeds": self.num_seeds, "settings": self.spec_settings}
        return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()

    @property
    def grid_values(self) -> list[tuple[str, Any]]:
        values = {**self.full_protocol, **self.agent_config}
        return [(key, values[key]) for key in self.varying]

    @property
    def label(self) -> str:
        """The agent and the grid values of this run, e.g. `iql expectile=0.9`."""
        return " ".join([self.agent_name] + [f"{k}={format_value(v)}"
                                             for k, v in self.grid_values])

    @property
    def default_id(self) -> str:
        """Path of a new run under STUDY_DIR/runs: DATASET/AGENT[_KEY=VALUE...]_MODE_HASH."""
        parts = [self.agent_name] + [f"{k}={format_value(v)}" for k, v in self.grid_values]
        name = _path_text("_".join(parts))[:100]
        return f"{_path_text(self.dataset.replace(',', '+'))[:100]}/{name}_{self.mode}_{self.key}"

    def run_settings(self, run_dir: Path, eval_workers: int = 1):
        """The RunSettings of this run, writing into `run_dir`, its evaluation stepped in
        `eval_workers` processes (neither changes the run's numbers)."""
        from seqeval.runner import RunSettings

        protocol = {k: tuple(v) if isinstance(v, list) else v for k, v in self.protocol.items()}
        return RunSettings(
            agent=self.agent, dataset=self.dataset, out=str(run_dir), mode=self.mode,
            num_seeds=self.num_seeds, progress=False, eval_workers=eval_workers,
            log=self.log or None,
            wandb_project=self.wandb_project,
            agent_overrides=tuple((k, override_text(v)) for k, v in self.agent_settings.items()),
            **protocol,
        )


def format_value(value: Any) -> str:
    """A setting's value as labels show it: 0.9, true, 64,64."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(format_value(v) for v in value)
    return str(value)


def override_text(value: Any) -> str:
    """A typed value as `--agent.KEY VALUE` text that parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return ",".join(override_text(v) for v in value)
    return str(value)


def _path_text(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-") or "run"


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    return value


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return annotation


def _is_sequence_type(annotation: Any) -> bool:
    return typing.get_origin(_unwrap_optional(annotation)) in (tuple, list)


def _is_grid(value: Any, annotation: Any) -> bool:
    """A list is a grid axis, except a single value of a list-valued setting (a list of lists
    is a grid of those)."""
    if not isinstance(value, list):
        return False
    if not _is_sequence_type(annotation):
        return True
    return bool(value) and all(isinstance(v, list) for v in value)


def _grid_values(value: Any, annotation: Any, where: str) -> list[Any]:
    """The values of a setting in a spec: a grid axis's list, or the one value."""
    if isinstance(value, dict):
        raise UserError(f"{where}: expected a value or a list of values, not a table")
    values = value if _is_grid(value, annotation) else [value]
    if not values:
        raise UserError(f"{where}: an empty list; give a value or a list of values")
    return values


_KIND = {bool: ("true or false", "true"), int: ("an integer", "10"),
         float: ("a number", "0.5"), str: ("a string", '"text"')}


def _coerce(value: Any, annotation: Any, where: str, example_key: str) -> Any:
    """A TOML value checked against a RunSettings field's type (JSON-ready result)."""
    annotation = _unwrap_optional(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {value!r}; write e.g. "
                            f"{example_key} = [1, 2]")
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        elif len(value) != len(args):
            raise UserError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        else:
            item_types = list(args)
        return [_coerce(v, t, where, example_key) for v, t in zip(value, item_types,
                                                                  strict=True)]
    kind, example = _KIND.get(annotation, (None, None))
    if kind is None:
        raise UserError(f"{where}: this setting cannot be set from a study spec; remove it")
    ok = isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise UserError(f"{where}: expected {kind}, got {value!r}; write e.g. "
                        f"{example_key} = {example}")
    return value


def _names(study: dict, key: str, example: str) -> list[str]:
    value = study.get(key)
    if value is None:
        raise UserError(f"[study] has no {key}; add e.g. {key} = {example}")
    if isinstance(value, str):
        value = [value]
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and v.strip() for v in value)):
        raise UserError(f"[study] {key}: expected a non-empty list of names, got {value!r}; "
                        f"write e.g. {key} = {example}")
    for name in value:
        if value.count(name) > 1:
            raise UserError(f"[study] {key} lists '{name}' twice; list it once")
    return [v.strip() for v in value]


def _protocol_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    """RunSettings field -> (type, default) of the settings a spec may set in [protocol]."""
    from seqeval.runner import RunSettings

    hints = typing.get_type_hints(RunSettings)
    fields = {f.name: f for f in dataclasses.fields(RunSettings) if f.name not in _NOT_PROTOCOL}
    defaults = {name: _json_value(f.default) for name, f in fields.items()}
    return {name: hints[name] for name in fields}, defaults


def _tracking(study: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
    """[study] log = ["tensorboard", "wandb"] and wandb_project = "NAME", checked."""
    from seqeval.tracking import check_backend_names

    log = study.get("log", [])
    log = [log] if isinstance(log, str) else log
    if not isinstance(log, list) or not all(isinstance(name, str) for name in log):
        raise UserError(f"[study] log: expected a list of trackers, got {log!r}; write e.g. "
                        'log = ["tensorboard", "wandb"]')
    names = check_backend_names(log, "[study] log") if log else ()
    project = study.get("wandb_project")
    if project is not None and not (isinstance(project, str) and project.strip()):
        raise UserError(f"[study] wandb_project: expected a name, got {project!r}; write e.g. "
                        'wandb_project = "pendulum"')
    return names, project


def _protocol_axes(table: Any, types_: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    if not isinstance(table, dict):
        raise UserError("[protocol] must be a table of settings; write [protocol] on its own "
                        "line, then key = value lines")
    known = sorted(set(types_) | set(_NEGATED))
    axes = []
    for key, value in table.items():
        where = f"[protocol] {key}"
        if key in _NOT_PROTOCOL:
            raise UserError(f"{where}: {_NOT_PROTOCOL[key]}")
        field = _NEGATED.get(key, key)
        if field not in types_:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UserError(f"{where}: not a `seqeval run` setting; {hint}settings are: "
                            f"{', '.join(known)}")
        typed = [_coerce(v, types_[field], where, key)
                 for v in _grid_values(value, types_[field], where)]
        if key in _NEGATED:
            typed = [not v for v in typed]
        axes.append((field, typed))
    return axes


def _resolve_agent(name: str, spec_dir: Path) -> str:
    """An agent file's path is relative to the spec's directory; names stay as they are."""
    path_text, sep, attribute = name.rpartition(":")
    if not (sep and path_text.endswith(".py")):
        path_text, attribute = name, "AGENT"  # FILE.py names the file's AGENT
    if path_text.endswith(".py"):
        path = Path(path_text).expanduser()
        if not path.is_absolute():
            path = spec_dir / path
        return f"{path.resolve()}:{attribute}"
    return name


def _agent_axes(agent: Any, shared: dict[str, Any], own: dict[str, Any],
                table_name: str | None) -> list[tuple[str, list[Any], str]]:
    """(key, typed values, where) of one agent's grid: [agent] shared settings, then its own."""
    hints = typing.get_type_hints(agent.config_class)
    settings: dict[str, tuple[Any, str]] = {}
    for key, value in shared.items():
        if key == "hidden_dims" and key not in hints:
            # As `Agent.network_overrides`: one size for every network of the agent.
            for name, _ in agent.network_overrides(""):
                settings[name] = (value, f"[agent] {key}")
        else:
            settings[key] = (value, f"[agent] {key}")
    for key, value in own.items():
        settings[key] = (value, f"[agent.{table_name}] {key}")
    axes = []
    for key, (value, where) in settings.items():
        if key not in hints:
            raise UserError(f"{where}: {agent.unknown_setting(key)}")
        typed = []
        for item in _grid_values(value, hints[key], where):
            try:
                config = agent.make_config({key: override_text(item)})
            except UserError as error:
                raise UserError(f"{where}: {error}") from None
            typed.append(_json_value(getattr(config, key)))
        axes.append((key, typed, where))
    return axes


def expand_spec(spec: dict[str, Any], spec_dir: Path | str = ".") -> list[PlannedRun]:
    """Every run of a spec: datasets x agents x modes x protocol grid x agent grid, in that
    order. UserError (naming the key and the fix) on any unknown key, agent or bad value."""
    from seqeval.algorithms.checks import agent_code, evaluator_code

    spec_dir = Path(spec_dir)
    protocol_types, protocol_defaults = _protocol_fields()
    study = _study_table(spec, protocol_types)
    agent_names = _names(study, "agents", '["bc", "iql"]')
    datasets = _names(study, "datasets", '["seqeval/pendulum/medium-v0"]')
    seeds = _seeds(study)
    protocol_axes = _protocol_axes(spec.get("protocol", {}), protocol_types)
    log, wandb_project = _tracking(study)
    shared, own_tables = _agent_tables(spec)
    agents = _load_agents(agent_names, own_tables, spec_dir)
    modes = _modes(study, agent_names, agents)
    for key in shared:  # an old name in [agent] gets its new name, whichever agent comes first
        renamed = next((a for a in agents.values() if key in a.renamed_settings), None)
        if renamed is not None:
            raise UserError(f"[agent] {key}: {renamed.unknown_setting(key)}")
    agent_axes = {}
    for name in agent_names:
        agent = agents[name]
        table_name = next((t for t in own_tables if t in (name, agent.name)), None)
        agent_axes[name] = (table_name, _agent_axes(agent, shared, own_tables.get(table_name, {}),
                                                    table_name))
    protocol_count = math.prod(len(v) for _, v in protocol_axes)
    count = len(datasets) * protocol_count * sum(
        len(modes[name]) * math.prod(len(v) for _, v, _ in axes)
        for name, (_, axes) in agent_axes.items())
    if count > MAX_RUNS:
        raise UserError(f"spec: the grid has {count:,} runs, more than the {MAX_RUNS:,} a study "
                        "may hold; shorten its lists of values, or split it into several studies")
    grid = _Grid(seeds=seeds, protocol_axes=protocol_axes,
                 protocol_defaults=protocol_defaults, log=log, wandb_project=wandb_project)
    # What made a run's numbers: the evaluator's code and the agent's, file by file.
    evaluator = evaluator_code()
    code = {name: {**evaluator, **agent_code(agent)} for name, agent in agents.items()}
    runs: list[PlannedRun] = []
    for dataset in datasets:
        for name in agent_names:
            table_name, axes = agent_axes[name]
            runs += _agent_runs(grid, dataset, _resolve_agent(name, spec_dir), agents[name],
                                modes[name], table_name, axes, code[name])
    return unique_runs(runs)


def _study_table(spec: dict[str, Any], protocol_types: dict[str, Any]) -> dict[str, Any]:
    """The spec's [study] table, after checking the spec's tables and [study]'s keys."""
    for table in spec:
        if table not in TABLES:
            raise UserError(f"spec: unknown table [{table}]; a spec has [study], [protocol], "
                            "[agent] and [agent.NAME] tables")
    study = spec.get("study")
    if not isinstance(study, dict):
        raise UserError('spec: no [study] table; add [study] with agents = ["bc"] and '
                        'datasets = ["seqeval/pendulum/medium-v0"]')
    for key in study:
        if key not in STUDY_KEYS:
            hint = "; put protocol settings in [protocol]" if key in protocol_types else ""
            raise UserError(f"[study] {key}: unknown key; [study] takes "
                            f"{', '.join(STUDY_KEYS)}{hint}")
    return study


def _seeds(study: dict[str, Any]) -> int:
    """[study] seeds (trained together in one program), checked."""
    seeds = study.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"[study] seeds: expected a whole number of seeds (1 or more), got "
                        f"{seeds!r}; write e.g. seeds = 3")
    return seeds


def _modes(study: dict[str, Any], agent_names: list[str], agents: dict[str, Any]
           ) -> dict[str, list[str]]:
    """Each agent's modes from [study] mode: a mode or a list of modes for every agent, or a
    table of them by agent (as listed in agents, or its own name), the others sequential.
    A baseline such as full-data training is often wanted for one agent only."""
    mode = study.get("mode", "sequential")
    if not isinstance(mode, dict):
        return {name: _mode_list(mode, "[study] mode") for name in agent_names}
    for key in mode:
        if not any(key in (name, agent.name) for name, agent in agents.items()):
            raise UserError(f"[study] mode: {key!r} names no agent of [study] agents "
                            f"({', '.join(agent_names)}); add it to agents or fix the name")
    modes = {}
    for name in agent_names:
        key = next((k for k in mode if k in (name, agents[name].name)), None)
        modes[name] = (["sequential"] if key is None
                       else _mode_list(mode[key], f"[study] mode {key}"))
    return modes


def _mode_list(modes: Any, where: str) -> list[str]:
    modes = [modes] if isinstance(modes, str) else modes
    if (not isinstance(modes, list) or not modes
            or not all(isinstance(m, str) for m in modes)):
        raise UserError(f"{where}: expected a mode or a list of modes, got {modes!r}; "
                        'write e.g. mode = ["sequential", "full"], or by agent: '
                        'mode = { td3_bc = ["sequential", "full"] }')
    return modes


def _agent_tables(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """([agent] settings shared by every agent, {NAME: the [agent.NAME] table})."""
    agent_table = spec.get("agent", {})
    if not isinstance(agent_table, dict):
        raise UserError("[agent] must be a table; write [agent.NAME] tables of agent settings")
    shared = {k: v for k, v in agent_table.items() if not isinstance(v, dict)}
    own_tables = {k: v for k, v in agent_table.items() if isinstance(v, dict)}
    return shared, own_tables


def _load_agents(agent_names: list[str], own_tables: dict[str, Any], spec_dir: Path
                 ) -> dict[str, Any]:
    """Each agent of [study] agents, by its name there; every [agent.NAME] must name one."""
    from seqeval.algorithms.registry import get_agent

    agents = {}
    for name in agent_names:
        try:
            agents[name] = get_agent(_resolve_agent(name, spec_dir))
        except UserError as error:
            raise UserError(f"[study] agents: {error}") from None
    for table_name in own_tables:
        if not any(table_name in (name, agent.name) for name, agent in agents.items()):
            raise UserError(f"[agent.{table_name}] names no agent of [study] agents "
                            f"({', '.join(agent_names)}); add it to agents or fix the name")
    return agents


@dataclasses.dataclass(frozen=True)
class _Grid:
    """What every agent's runs of a spec share."""

    seeds: int
    protocol_axes: list[tuple[str, list[Any]]]
    protocol_defaults: dict[str, Any]
    log: tuple[str, ...]
    wandb_project: str | None


def _agent_runs(grid: _Grid, dataset: str, agent_spec: str, agent: Any, modes: list[str],
                table_name: str | None, axes: list[tuple[str, list[Any], str]],
                code: dict[str, str]) -> list[PlannedRun]:
    """One agent's runs on one dataset: modes x protocol grid x its own grid."""
    from seqeval.algorithms.base import config_to_dict

    default_config = config_to_dict(agent.make_config())
    protocol_varying = tuple(k for k, values in grid.protocol_axes if len(values) > 1)
    agent_varying = tuple(k for k, values, _ in axes if len(values) > 1)
    runs = []
    for mode in modes:
        for protocol_values in itertools.product(*(v for _, v in grid.protocol_axes)):
            chosen = dict(zip((k for k, _ in grid.protocol_axes), protocol_values, strict=True))
            for agent_values in itertools.product(*(v for _, v, _ in axes)):
                asked = {k: v for (k, _, _), v in zip(axes, agent_values, strict=True)}
                try:
                    config = config_to_dict(agent.make_config(
                        {k: override_text(v) for k, v in asked.items()}))
                except UserError as error:  # settings that clash with each other
                    raise UserError(f"[agent.{table_name or agent.name}]: {error}") from None
                runs.append(PlannedRun(
                    agent=agent_spec,
                    agent_name=agent.name,
                    dataset=dataset,
                    mode=mode,
                    num_seeds=grid.seeds,
                    protocol={k: v for k, v in chosen.items()
                              if v != grid.protocol_defaults[k]},
                    agent_settings={k: v for k, v in config.items()
                                    if v != default_config.get(k)},
                    varying=protocol_varying + agent_varying,
                    full_protocol={**grid.protocol_defaults, **chosen},
                    agent_config=config,
                    spec_settings={"protocol": chosen, "agent": asked},
                    code=code,
                    log=grid.log,
                    wandb_project=grid.wandb_project,
                ))
    return runs


def unique_runs(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs, refusing two grid points that make one run (it would be run once and stand
    for both)."""
    seen: dict[str, PlannedRun] = {}
    for run in runs:
        first = seen.setdefault(run.key, run)
        if first is not run:
            raise UserError(f"spec: '{first.label}' and '{run.label}' on {run.dataset} "
                            f"({run.mode}) are the same run (the same settings after defaults); "
                            "list each value once")
    return runs

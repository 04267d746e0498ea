"""Studies: a TOML spec of agents x datasets x settings x seeds, expanded into runs and recorded.

A study directory (`seqeval sweep SPEC --out STUDY_DIR`) holds

    STUDY_DIR/study.json       the expanded plan and each run's status (replaced atomically)
    STUDY_DIR/runs.csv         every run with its settings and final score / AUC (for pandas)
    STUDY_DIR/runs/DATASET/AGENT[_KEY=VALUE...]_MODE_HASH/   one ordinary run directory per run
    STUDY_DIR/logs/RUN.log     what each run printed
    STUDY_DIR/compile_cache/   JAX's persistent compilation cache, shared by the study's runs
    STUDY_DIR/study.lock       held by the driver while it runs (one driver per study)

    STUDY_DIR/runs_all.csv     the same for every run the folder holds, with its standing

A run is what made its numbers: its key is a SHA-256 of the agent (its whole config, defaults
included, and a hash of every file of its code: the agent's file and the seqeval and user
modules it imports), the dataset (id and a hash of its content), the mode, the seeds and the
whole protocol. The key is part of the run's directory name, so two runs never share one. A
changed spec keeps the runs it shares with the old one; a run of the spec whose code, defaults
or data changed gets a new key, so a new directory, and the old run is kept and marked stale.
Reports on a study read the runs of its current spec. This module plans and records;
`seqeval.sweep` runs the plan on Ray. docs/sweeps.md is the spec reference.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import difflib
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import re
import socket
import sys
import time
import tomllib
import types
import typing
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqeval.errors import UserError
from seqeval.fileio import write_json_atomic, write_text_atomic

STUDY_FILE = "study.json"
RUNS_CSV = "runs.csv"
ALL_RUNS_CSV = "runs_all.csv"
LOCK_FILE = "study.lock"
RUNS_DIR = "runs"
LOGS_DIR = "logs"
COMPILE_CACHE_DIR = "compile_cache"
STUDY_FORMAT = 2  # 2: full-length keys of the run's whole identity, and each run's standing
MAX_RUNS = 10_000  # a larger grid is refused before it is expanded (a typo like 10**9 runs)
# A run's standing in its study: made by the current spec and code, made by other code, data or
# defaults for a run the spec still holds (superseded), or no longer in the spec.
CURRENT, STALE, OUT_OF_SPEC = "current", "stale", "out_of_spec"
# Names a study directory holds (a folder with only these, but no study.json, is a study whose
# study.json was lost: it is rebuilt from the spec and the run directories).
STUDY_NAMES = ("study.json", "runs.csv", "runs_all.csv", "study.lock", "runs", "logs",
               "compile_cache")
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
    "no_progress": "a sweep shows one study-level bar; remove it",
    "log": 'set it in [study] (log = ["tensorboard", "wandb"])',
    "wandb_project": 'set it in [study] (wandb_project = "NAME")',
}
# Flags of `seqeval run` that negate a RunSettings field.
_NEGATED = {"no_prequential": "prequential"}


# ---------------------------------------------------------------------------------------------
# The spec.


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
    code: dict[str, str]  # SHA-256 of each file of the agent's code (checks.agent_code)
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

    def run_settings(self, run_dir: Path):
        """The RunSettings of this run, writing into `run_dir`."""
        from seqeval.runner import RunSettings

        protocol = {k: tuple(v) if isinstance(v, list) else v for k, v in self.protocol.items()}
        return RunSettings(
            agent=self.agent, dataset=self.dataset, out=str(run_dir), mode=self.mode,
            num_seeds=self.num_seeds, progress=False, log=self.log or None,
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
    from seqeval.algorithms.base import config_to_dict, get_agent
    from seqeval.algorithms.checks import agent_code

    spec_dir = Path(spec_dir)
    for table in spec:
        if table not in TABLES:
            raise UserError(f"spec: unknown table [{table}]; a spec has [study], [protocol], "
                            "[agent] and [agent.NAME] tables")
    study = spec.get("study")
    if not isinstance(study, dict):
        raise UserError('spec: no [study] table; add [study] with agents = ["bc"] and '
                        'datasets = ["seqeval/pendulum/medium-v0"]')
    protocol_types, protocol_defaults = _protocol_fields()
    for key in study:
        if key not in STUDY_KEYS:
            hint = "; put protocol settings in [protocol]" if key in protocol_types else ""
            raise UserError(f"[study] {key}: unknown key; [study] takes "
                            f"{', '.join(STUDY_KEYS)}{hint}")
    agent_names = _names(study, "agents", '["bc", "iql"]')
    datasets = _names(study, "datasets", '["seqeval/pendulum/medium-v0"]')
    seeds = study.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"[study] seeds: expected a whole number of seeds (1 or more), got "
                        f"{seeds!r}; write e.g. seeds = 3")
    modes = study.get("mode", "sequential")
    modes = [modes] if isinstance(modes, str) else modes
    if (not isinstance(modes, list) or not modes
            or not all(isinstance(m, str) for m in modes)):
        raise UserError(f"[study] mode: expected a mode or a list of modes, got {modes!r}; "
                        'write e.g. mode = ["sequential", "full"]')
    protocol_axes = _protocol_axes(spec.get("protocol", {}), protocol_types)
    log, wandb_project = _tracking(study)
    agent_table = spec.get("agent", {})
    if not isinstance(agent_table, dict):
        raise UserError("[agent] must be a table; write [agent.NAME] tables of agent settings")
    shared = {k: v for k, v in agent_table.items() if not isinstance(v, dict)}
    own_tables = {k: v for k, v in agent_table.items() if isinstance(v, dict)}

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

    for key in shared:  # an old name in [agent] gets its new name, whichever agent comes first
        renamed = next((a for a in agents.values() if key in a.renamed_settings), None)
        if renamed is not None:
            raise UserError(f"[agent] {key}: {renamed.unknown_setting(key)}")
    protocol_varying = tuple(k for k, values in protocol_axes if len(values) > 1)
    agent_axes = {}
    for name in agent_names:
        agent = agents[name]
        table_name = next((t for t in own_tables if t in (name, agent.name)), None)
        agent_axes[name] = (table_name, _agent_axes(agent, shared, own_tables.get(table_name, {}),
                                                    table_name))
    protocol_count = math.prod(len(v) for _, v in protocol_axes)
    count = len(datasets) * len(modes) * protocol_count * sum(
        math.prod(len(v) for _, v, _ in axes) for _, axes in agent_axes.values())
    if count > MAX_RUNS:
        raise UserError(f"spec: the grid has {count:,} runs, more than the {MAX_RUNS:,} a study "
                        "may hold; shorten its lists of values, or split it into several studies")
    code = {name: agent_code(agent) for name, agent in agents.items()}
    runs: list[PlannedRun] = []
    for dataset in datasets:
        for name in agent_names:
            agent = agents[name]
            table_name, axes = agent_axes[name]
            default_config = config_to_dict(agent.make_config())
            agent_varying = tuple(k for k, values, _ in axes if len(values) > 1)
            for mode in modes:
                for protocol_values in itertools.product(*(v for _, v in protocol_axes)):
                    chosen = dict(zip((k for k, _ in protocol_axes), protocol_values,
                                      strict=True))
                    for agent_values in itertools.product(*(v for _, v, _ in axes)):
                        overrides = {k: override_text(v) for (k, _, _), v in zip(
                            axes, agent_values, strict=True)}
                        try:
                            config = config_to_dict(agent.make_config(overrides))
                        except UserError as error:  # settings that clash with each other
                            raise UserError(f"[agent.{table_name or agent.name}]: "
                                            f"{error}") from None
                        runs.append(PlannedRun(
                            agent=_resolve_agent(name, spec_dir),
                            agent_name=agent.name,
                            dataset=dataset,
                            mode=mode,
                            num_seeds=seeds,
                            protocol={k: v for k, v in chosen.items()
                                      if v != protocol_defaults[k]},
                            agent_settings={k: v for k, v in config.items()
                                            if v != default_config.get(k)},
                            varying=protocol_varying + agent_varying,
                            full_protocol={**protocol_defaults, **chosen},
                            agent_config=config,
                            spec_settings={"protocol": chosen, "agent": {
                                k: v for (k, _, _), v in zip(axes, agent_values, strict=True)}},
                            code=code[name],
                            log=log,
                            wandb_project=wandb_project,
                        ))
    return _unique(runs)


def _unique(runs: list[PlannedRun]) -> list[PlannedRun]:
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


def _cli_words(message: str) -> str:
    """`seqeval run` flags in an engine message as spec keys: --initial-size -> initial_size."""
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), message)


def validate_plan(plan: Sequence[PlannedRun], study_dir: Path) -> list[PlannedRun]:
    """Check every run against its data before anything runs (each dataset is loaded once);
    returns the plan with each run's dataset fingerprint."""
    from seqeval.context import check_against_data
    from seqeval.data import dataset_fingerprint, load_datasets
    from seqeval.settings import check_settings

    loaded, fingerprints = {}, {}
    for dataset, env in dict.fromkeys((run.dataset, run.protocol.get("env")) for run in plan):
        try:
            loaded[dataset, env], blocks = load_datasets(dataset, env)
        except UserError as error:
            raise UserError(f"[study] datasets: {error}") from None
        fingerprints[dataset, env] = dataset_fingerprint(loaded[dataset, env], blocks)
    plan = _unique([dataclasses.replace(
        run, dataset_fingerprint=fingerprints[run.dataset, run.protocol.get("env")])
        for run in plan])
    for run in plan:
        settings = run.run_settings(study_dir / RUNS_DIR / run.default_id)
        data = loaded[run.dataset, settings.env]
        try:
            if settings.ref_scores is not None:
                data = data.with_reference_scores(*settings.ref_scores)
            check_settings(settings)
            check_against_data(settings, data)
        except UserError as error:
            raise UserError(f"{run.label} on {run.dataset} ({run.mode}): "
                            f"{_cli_words(str(error))}") from None
    return plan


# ---------------------------------------------------------------------------------------------
# The study directory.


def _record(run: PlannedRun) -> dict[str, Any]:
    """What study.json keeps of a planned run (status fields are added by `merge_plan`)."""
    return {
        "key": run.key,
        "slot": run.slot,
        "label": run.label,
        "agent": run.agent,
        "agent_name": run.agent_name,
        "dataset": run.dataset,
        "dataset_fingerprint": run.dataset_fingerprint,
        "mode": run.mode,
        "seeds": run.num_seeds,
        "protocol": run.protocol,
        "agent_settings": run.agent_settings,
        "full_protocol": run.full_protocol,
        "agent_config": run.agent_config,
        "code": run.code,
    }


@dataclasses.dataclass
class RunStatus:
    """Where a run of a study stands: the one definition of the fields study.json keeps for
    each run beside its plan (`_record`). The driver changes them (seqeval.sweep); what a run
    reports when it ends is `OUTCOME_FIELDS` of them."""

    status: str = "pending"  # pending | running | complete | failed
    reason: str | None = None  # one line: why it failed, was interrupted or re-queued
    attempts: int = 0  # times started (a start on a node that was lost does not count)
    requeued: int = 0  # times put back in the queue because its node was lost
    started: float | None = None  # when it was last submitted (seconds since the epoch)
    finished: float | None = None
    node: dict[str, str] | None = None  # the Ray node it last ran on: {"id", "host"}
    pid: int | None = None  # its worker process
    wall_time: float | None = None  # seconds in its worker
    startup_seconds: float | None = None  # submitted -> started in a worker (Ray's part)
    import_seconds: float | None = None  # importing seqeval and JAX in the worker
    compile_seconds: float | None = None  # XLA compile, or loading from the compile cache
    trace_seconds: float | None = None  # tracing and lowering
    cache_hits: int | None = None  # of the study's compilation cache
    cache_misses: int | None = None
    xla_threads: int | None = None  # XLA:CPU's intra-op pool in its worker
    results: dict[str, float | None] | None = None  # final score and AUC (run_results)


# What a run reports when it ends (seqeval.sweep.execute_run), copied into its RunStatus.
OUTCOME_FIELDS = ("status", "reason", "pid", "node", "wall_time", "import_seconds",
                  "compile_seconds", "trace_seconds", "cache_hits", "cache_misses",
                  "xla_threads")


def _new_status() -> dict[str, Any]:
    return dataclasses.asdict(RunStatus())


def standing(record: dict[str, Any]) -> str:
    """current, stale or out_of_spec (a study.json of format 1 knew only in_spec)."""
    return record.get("standing") or (CURRENT if record.get("in_spec", True) else OUT_OF_SPEC)


def what_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two run records of one spec entry, in a few words: settings
    (defaults included), the dataset's content, the agent's code files."""
    changes = []
    for table, prefix in (("agent_config", "agent."), ("full_protocol", "")):
        before, after = old.get(table) or {}, new.get(table) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changes.append(f"{prefix}{key} {format_value(before.get(key))} -> "
                               f"{format_value(after.get(key))}")
    if "code" not in old:  # a study.json of format 1
        changes.append("code and data not recorded (made before seqeval fingerprinted them)")
    else:
        if old.get("dataset_fingerprint") != new.get("dataset_fingerprint"):
            changes.append(f"the content of dataset {new['dataset']}")
        before, after = old["code"], new.get("code") or {}
        files = sorted(k or "package version" for k in set(before) | set(after)
                       if before.get(k) != after.get(k))
        if files:
            changes.append("code of " + ", ".join(files))
    return "; ".join(changes) or "its identity"


class StudyDir:
    """The files of a study directory (see the module docstring)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.acquired = False  # `lock` was taken by this process at some point

    @property
    def study_file(self) -> Path:
        return self.path / STUDY_FILE

    @property
    def compile_cache(self) -> Path:
        return self.path / COMPILE_CACHE_DIR

    def run_dir(self, record: dict[str, Any]) -> Path:
        return self.path / record["path"]

    def log_file(self, record: dict[str, Any]) -> Path:
        return self.path / LOGS_DIR / (record["id"].replace("/", "__") + ".log")

    @staticmethod
    def is_study(path: Path | str) -> bool:
        return (Path(path) / STUDY_FILE).is_file()

    @staticmethod
    def lost_its_study_file(path: Path | str) -> bool:
        """A folder with run directories under runs/ and only a study's names, but no
        study.json (deleted or moved away): the spec and the run directories rebuild it."""
        path = Path(path)
        try:
            names = {p.name for p in path.iterdir()}
        except OSError:
            return False
        return (not StudyDir.is_study(path) and (path / RUNS_DIR).is_dir()
                and names <= set(STUDY_NAMES))

    def check_usable(self) -> None:
        """Refuse a --out that is a file or a non-empty directory that is not a study."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out '{self.path}' is a file; pass a directory for the study")
        if (self.path.is_dir() and not self.is_study(self.path)
                and not self.lost_its_study_file(self.path) and any(self.path.iterdir())):
            raise UserError(f"'{self.path}' exists and is not a study directory (no "
                            f"{STUDY_FILE}); choose another --out")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold STUDY_DIR/study.lock (an flock, released by the system if the driver dies)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise unwritable(self.path, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"study '{self.path}' is in use by another seqeval sweep "
                            f"({holder}); wait for it to finish or stop it, then run "
                            "again") from None
        self.acquired = True  # this process held the lock (even if writing in it fails)
        try:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
            except OSError as error:
                raise unwritable(self.path, error) from None
            yield
        finally:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # a full or read-only disk: the lock is released all the same
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def load(self) -> dict[str, Any]:
        """study.json (an empty study when there is none yet)."""
        if not self.study_file.is_file():
            return {"format": STUDY_FORMAT, "runs": []}
        try:
            state = json.loads(self.study_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"'{self.study_file}' is damaged ({error}); restore it, or move "
                            "it away to rebuild the study from the spec") from None
        if not isinstance(state, dict) or not isinstance(state.get("runs"), list):
            raise UserError(f"'{self.study_file}' is not a seqeval study file; restore it, or "
                            "move it away to rebuild the study from the spec")
        return state

    def records(self, all_runs: bool = False) -> list[dict[str, Any]]:
        """study.json's run records: those of the current spec, or every one (`all_runs`)."""
        runs = self.load()["runs"]
        return runs if all_runs else [r for r in runs if standing(r) == CURRENT]

    def save(self, state: dict[str, Any]) -> None:
        """study.json, runs.csv and runs_all.csv, each replaced atomically (UserError when
        the disk refuses: the previous files stay whole)."""
        state["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            write_json_atomic(self.study_file, state)
            self.write_runs_csv(state["runs"])
        except OSError as error:
            raise unwritable(self.path, error) from None

    def merge_plan(self, state: dict[str, Any], plan: Sequence[PlannedRun],
                   spec_path: Path, spec_text: str) -> list[dict[str, Any]]:
        """Add the plan's new runs to `state` and set every run's standing: the plan's runs
        are current; a run the spec still asks for but made by other code, defaults or data
        is stale (kept, with what changed and the run that supersedes it); any other is
        out of the spec. Returns the records of the plan's runs, in plan order."""
        by_key = {record["key"]: record for record in state["runs"]}
        planned, by_slot = [], {}
        for run in plan:
            record = by_key.get(run.key)
            if record is None:
                record = {"id": run.default_id, "path": f"{RUNS_DIR}/{run.default_id}",
                          **_record(run), **_new_status()}
                state["runs"].append(record)
                by_key[run.key] = record
            else:  # the same run (same identity) under the new spec: keep its status
                record.update(_record(run))
            record.update(standing=CURRENT, in_spec=True, stale_reason=None,
                          superseded_by=None)
            planned.append(record)
            by_slot[run.slot] = record
            by_slot[_legacy_slot(record)] = record
        current = {id(record) for record in planned}
        for record in state["runs"]:
            if id(record) in current:
                continue
            successor = by_slot.get(record.get("slot") or _legacy_slot(record))
            if successor is None:
                record.update(standing=OUT_OF_SPEC, in_spec=False, stale_reason=None,
                              superseded_by=None)
            else:
                record.update(standing=STALE, in_spec=False,
                              stale_reason=what_changed(record, successor),
                              superseded_by=successor["id"])
        state["format"] = STUDY_FORMAT
        state["spec"] = {"path": str(spec_path), "text": spec_text}
        return planned

    def write_runs_csv(self, records: Sequence[dict[str, Any]]) -> None:
        """STUDY_DIR/runs.csv: one row per run of the current spec, settings then results;
        STUDY_DIR/runs_all.csv: every run the folder holds, with its standing (atomic)."""
        current = [r for r in records if standing(r) == CURRENT]
        write_text_atomic(self.path / RUNS_CSV, _runs_table(current))
        write_text_atomic(self.path / ALL_RUNS_CSV, _runs_table(records, all_runs=True))


def _legacy_slot(record: dict[str, Any]) -> str:
    """What a run record asks for, as a study.json of format 1 can tell it (it kept no code):
    a planned run with the same settings supersedes such a record."""
    asked = [record.get(k) for k in ("agent", "dataset", "mode", "seeds", "full_protocol",
                                     "agent_config")]
    return "legacy:" + hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def _runs_table(records: Sequence[dict[str, Any]], all_runs: bool = False) -> str:
    fixed = ["id", "label", "status", "reason", "attempts", "agent", "dataset",
             "mode", "seeds", "final_score", "auc", "final_return", "final_online_score",
             "wall_time", "compile_seconds", "node", "path"]
    if all_runs:
        fixed[5:5] = ["standing", "stale_reason", "superseded_by"]
    protocol_keys = sorted({k for r in records for k in r.get("full_protocol", {})})
    agent_keys = sorted({k for r in records for k in r.get("agent_config", {})})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(fixed + protocol_keys + [f"agent.{k}" for k in agent_keys])
    for record in records:
        results = record.get("results") or {}
        values = {**record, **results, "agent": record["agent_name"],
                  "standing": standing(record)}
        row = [values.get(k) for k in fixed]
        row += [record.get("full_protocol", {}).get(k) for k in protocol_keys]
        row += [record.get("agent_config", {}).get(k) for k in agent_keys]
        writer.writerow([_csv_cell(v) for v in row])
    return buffer.getvalue()


def unwritable(path: Path, error: OSError) -> UserError:
    """The one line for a study directory the disk will not write (read-only, full, ...)."""
    reason = error.strerror or type(error).__name__
    return UserError(f"cannot write the study in '{path}' ({reason}); free space or choose a "
                     "writable --out, then run the sweep again (it resumes where it stopped)")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(_csv_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def run_is_complete(run_dir: Path) -> bool:
    """The run's own summary.json says it finished."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status") == "complete"
    except (OSError, ValueError, AttributeError):
        return False


def run_results(run_dir: Path) -> dict[str, float | None]:
    """Final score and AUC of a finished run, means over its seeds (the report's measures:
    last offline evaluation; normalized area under the curve on samples 0..N)."""
    import numpy as np

    from seqeval.results import read_evaluations
    from seqeval.stats import normalized_auc

    config = json.loads((run_dir / "config.json").read_text())
    transitions = int(config["dataset_info"]["transitions"])
    by_seed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in read_evaluations(run_dir):
        if row.get("samples") is not None:
            by_seed[row["seed"]].append(row)
    finals, aucs, returns, online_finals = [], [], [], []
    for rows in by_seed.values():
        rows.sort(key=lambda r: r["samples"])
        offline = [r for r in rows if r.get("phase") != "online"]
        online = [r for r in rows if r.get("phase") == "online"]
        if offline:
            returns.append(offline[-1]["return"])
            scores = [r["normalized_score"] for r in offline]
            if all(s is not None for s in scores):
                finals.append(scores[-1])
                samples = [r["samples"] for r in offline]
                aucs.append(normalized_auc(samples, scores, end=max(transitions, max(samples))))
        if online and online[-1]["normalized_score"] is not None:
            online_finals.append(online[-1]["normalized_score"])

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {"final_score": mean(finals), "auc": mean(aucs), "final_return": mean(returns),
            "final_online_score": mean(online_finals)}


def add_all_runs_flag(parser: Any) -> None:
    """`--all-runs` of the commands that read a study (report, plot, select)."""
    parser.add_argument("--all-runs", action="store_true",
                        help="with a study directory: every complete run it holds, also those "
                             "made by other code or settings (stale) or no longer in its spec "
                             "(default: the current spec's runs)")


_NOTED_LEFT_OUT: set[Path] = set()


def expand_run_dirs(paths: Sequence[str | Path], all_runs: bool = False) -> list[Path]:
    """Run directories behind `paths`: a study directory becomes the directories of its
    complete runs of the current spec (in plan order), or of every complete run it holds
    (`all_runs`); any other path is kept as it is. A study that holds runs left out says so
    on stderr."""
    expanded: list[Path] = []
    for item in paths:
        path = Path(item)
        if not StudyDir.is_study(path):
            if StudyDir.lost_its_study_file(path):
                raise UserError(f"study '{path}' has no {STUDY_FILE}; rebuild it with "
                                f"'seqeval sweep SPEC --out {path}' (its run directories are "
                                "kept and found again)")
            expanded.append(path)
            continue
        study = StudyDir(path)
        records = study.records(all_runs=True)
        chosen = records if all_runs else [r for r in records if standing(r) == CURRENT]
        left_out = collections.Counter(standing(r) for r in records if standing(r) != CURRENT)
        if left_out and not all_runs and path.resolve() not in _NOTED_LEFT_OUT:
            _NOTED_LEFT_OUT.add(path.resolve())  # said once, however often a command asks
            words = {STALE: "stale (made by other code, defaults or data)",
                     OUT_OF_SPEC: "no longer in the spec"}
            kinds = ", ".join(f"{n} {words.get(kind, kind)}" for kind, n in sorted(
                left_out.items()))
            print(f"seqeval: note: study '{path}' also holds {sum(left_out.values())} runs "
                  f"left out ({kinds}); --all-runs includes them", file=sys.stderr)
        complete = [study.run_dir(r) for r in chosen
                    if r.get("status") == "complete" or run_is_complete(study.run_dir(r))]
        if not complete:
            raise UserError(f"study '{path}' has no complete runs yet; run 'seqeval sweep' "
                            "on it to finish them")
        expanded.extend(complete)
    return expanded


def adopt_run_dirs(study: StudyDir, state: dict[str, Any]) -> int:
    """Records for the run directories under STUDY_DIR/runs that `state` does not list (a
    study.json lost or moved away): each run's settings from its config.json, its key from
    its directory name, its status pending (`seqeval sweep` then finds the complete ones, and
    a planned run its own directory by its key). Returns how many were adopted."""
    known = {record["path"] for record in state["runs"]}
    adopted = 0
    for config_path in sorted((study.path / RUNS_DIR).glob("*/*/config.json")):
        run_dir = config_path.parent
        relative = run_dir.relative_to(study.path).as_posix()
        if relative in known:
            continue
        try:
            config = json.loads(config_path.read_text())
            protocol = dict(config.get("protocol") or {})
            record = {
                "id": relative.removeprefix(f"{RUNS_DIR}/"), "path": relative,
                "key": run_dir.name.rpartition("_")[2], "slot": None,
                "label": config["agent_name"], "agent": config["agent"],
                "agent_name": config["agent_name"], "dataset": config["dataset"],
                "mode": config.get("mode", "sequential"),
                "seeds": len(protocol.get("seeds") or [0]), "protocol": {},
                "agent_settings": {}, "full_protocol": protocol,
                "agent_config": dict(config.get("agent_config") or {}),
                **_new_status(),
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a run seqeval wrote: left where it is, unlisted
        state["runs"].append(record)
        adopted += 1
    return adopted

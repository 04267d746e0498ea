"""Run directories read back for analysis: one typed record per run, and runs grouped into
methods. `seqeval report`, `seqeval plot` and the demo read runs only through this module.

A method is an agent with one agent config in one protocol mode under one set of protocol
settings: runs are pooled as more seeds of a method only when agent, agent_config, mode and
protocol (all but which seeds) agree. Methods of one agent are labelled by what tells them apart,
e.g. `iql expectile=0.9` or `iql (full)`. The file formats belong to seqeval.results.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seqeval import results
from seqeval.errors import UserError

if TYPE_CHECKING:
    from seqeval.results import PrequentialRow

MODE_ORDER = ("sequential", "full", "retrain")  # a method's baselines after it
# Protocol entries that are not part of a method: which seeds a run directory holds.
NOT_METHOD = ("seeds",)
# Protocol entries that follow from the others and the dataset: part of a method, never its label.
DERIVED = ("total_gradient_steps", "offline_gradient_steps", "budgets")


# ---------------------------------------------------------------------------------------------
# One run


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """config.json of a run, as `seqeval run` writes it."""

    agent: str  # the --agent spec: a name, an entry point, or path/to/file.py:NAME
    agent_name: str  # what figures and tables call the agent
    dataset: str
    mode: str  # sequential | full | retrain (or a mode added later)
    protocol: dict[str, Any]
    agent_config: dict[str, Any]
    dataset_info: dict[str, Any]

    @classmethod
    def parse(cls, data: Any, path: Path) -> RunConfig:
        """UserError (naming `path`) unless `data` is a config.json written by `seqeval run`."""
        if not isinstance(data, dict):
            raise UserError(f"'{path}' holds no JSON object; it was not written by 'seqeval "
                            "run' (rerun the run or pass another directory)")
        kinds = {"agent": str, "dataset": str, "dataset_info": dict}
        missing = [k for k, kind in kinds.items() if not isinstance(data.get(k), kind)]
        if missing:
            raise UserError(f"'{path}' lacks a valid {', '.join(missing)}; it was not written by "
                            "'seqeval run' (rerun the run or pass another directory)")
        for key in ("protocol", "agent_config"):
            if not isinstance(data.get(key, {}), dict):
                raise UserError(f"'{path}': '{key}' is not a JSON object; rerun the run")
        mode = data.get("mode", "sequential")
        if not isinstance(mode, str) or not mode:
            raise UserError(f"'{path}': mode {mode!r} is not a mode name; rerun the run")
        name = data.get("agent_name")
        if not (isinstance(name, str) and name):
            name = agent_label(data["agent"])
        return cls(agent=data["agent"], agent_name=name,
                   dataset=data["dataset"], mode=mode, protocol=dict(data.get("protocol", {})),
                   agent_config=dict(data.get("agent_config", {})),
                   dataset_info=dict(data["dataset_info"]))

    def method_settings(self) -> dict[str, Any]:
        """Everything that makes runs the same method (the dataset aside)."""
        return {"agent": self.agent, "mode": self.mode,
                "agent_config": self.agent_config,
                "protocol": {k: v for k, v in self.protocol.items() if k not in NOT_METHOD}}


def agent_label(spec: str) -> str:
    """Display name of an --agent spec without a recorded agent_name: FILE.py:NAME shows as NAME
    (as the file's stem when NAME is the conventional AGENT)."""
    if ":" not in spec:
        return spec
    path, _, attribute = spec.rpartition(":")
    return Path(path).stem if attribute == "AGENT" else attribute


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory read back: its config and the rows of its result files (numbers
    parsed by seqeval.results; None where a value is empty)."""

    path: Path
    config: RunConfig
    evaluations: list[dict[str, Any]]
    prequential: list[PrequentialRow]
    training: list[dict[str, Any]]


def load_run(path: str | Path) -> Run:
    """Read a run directory; UserError (one line naming the problem and the fix) when it is
    missing, not a run, has no evaluations yet, or holds a damaged file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"run directory '{path}' does not exist; check the path")
    if not path.is_dir():
        raise UserError(f"'{path}' is a file, not a run directory; pass the directory of a run")
    data = results.read_config(path)
    if data is None:
        raise UserError(f"'{path}' is not a seqeval run (no {results.CONFIG}); pass the --out "
                        "directory of 'seqeval run'")
    config = RunConfig.parse(data, path / results.CONFIG)
    evaluations_path = path / results.EVALUATIONS
    try:
        evaluations = results.read_evaluations(path)
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"'{evaluations_path}' has a row that is not numbers ({error}); "
                        "repair or delete that row") from None
    if not evaluations:
        if results.read_status(path) == "diverged":
            raise UserError(f"'{path}' diverged before its first evaluation (summary.json); "
                            "leave it out, or rerun it with a lower learning rate")
        raise UserError(f"'{path}' has no evaluations yet; let the run reach its first "
                        "evaluation or leave it out")
    _check_evaluations(evaluations, evaluations_path)
    prequential = results.read_prequential(path)
    _check_unique([dataclasses.asdict(r) for r in prequential], ("seed", "samples"),
                  path / results.PREQUENTIAL)
    return Run(path=path, config=config, evaluations=evaluations, prequential=prequential,
               training=results.read_training(path))


def _check_evaluations(rows: list[dict[str, Any]], path: Path) -> None:
    for number, row in enumerate(rows, start=1):
        if row.get("seed") is None or row.get("samples") is None or row.get("return") is None:
            raise UserError(f"'{path}' row {number} lacks its seed, samples or return; repair "
                            "or delete that row")
        if not all(math.isfinite(v) for k, v in row.items() if k != "phase" and v is not None):
            raise UserError(f"'{path}' row {number} holds a value that is not a finite number; "
                            "repair or delete that row")
    _check_unique(rows, ("seed", "samples", "phase"), path)


def _check_unique(rows: list[dict[str, Any]], key: Sequence[str], path: Path) -> None:
    # Two rows of one seed at one point: two runs wrote into one directory, or a resume redid
    # a chunk. Pooling them would count a measurement twice.
    seen: set[tuple] = set()
    for row in rows:
        item = tuple(row.get(k) for k in key)
        if item in seen:
            seed, samples = (f"{v:g}" if isinstance(v, int | float) else v for v in item[:2])
            raise UserError(f"'{path}' has two rows for seed {seed} at {samples} samples (two "
                            "runs wrote into one directory?); rerun the run into a fresh --out")
        seen.add(item)


# ---------------------------------------------------------------------------------------------
# Methods and groups


@dataclasses.dataclass(frozen=True, order=True)
class Method:
    """What a line in a figure or a row in a table stands for."""

    agent_name: str
    variant: str  # what tells this method apart from the agent's others ("" when nothing)
    mode: str

    @property
    def name(self) -> str:
        """The agent and its variant, without the mode: an agent keeps its colour across modes."""
        return f"{self.agent_name} {self.variant}" if self.variant else self.agent_name

    @property
    def label(self) -> str:
        return self.name if self.mode == "sequential" else f"{self.name} ({self.mode})"


@dataclasses.dataclass
class SeedCurve:
    """One seed's evaluations, sorted by samples (offline before online)."""

    run_dir: Path
    seed: int
    samples: np.ndarray  # int, every evaluation (offline then online)
    values: np.ndarray  # normalized score, or return when the group has no reference scores
    online: np.ndarray  # bool, the evaluation belongs to the online phase

    @property
    def offline_samples(self) -> np.ndarray:
        return self.samples[~self.online] if (~self.online).any() else self.samples

    @property
    def offline_values(self) -> np.ndarray:
        return self.values[~self.online] if (~self.online).any() else self.values


@dataclasses.dataclass
class PrequentialCurve:
    """One seed's prequential metrics: metric name -> (samples, values)."""

    seed: int
    metrics: dict[str, tuple[np.ndarray, np.ndarray]]
    # metric -> transitions in each scored chunk (the `transitions` column), when stored
    chunk_sizes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Group:
    """All seeds of one method on one dataset."""

    dataset: str
    method: Method
    normalized: bool  # values are normalized scores (else raw returns)
    runs: list[Run]
    seeds: list[SeedCurve]
    prequential: list[PrequentialCurve]

    @property
    def label(self) -> str:
        return self.method.label

    @property
    def mode(self) -> str:
        return self.method.mode

    @property
    def dataset_info(self) -> dict[str, Any]:
        return self.runs[0].config.dataset_info

    @property
    def dataset_size(self) -> int:
        size = self.dataset_info.get("transitions")
        if isinstance(size, int | float) and size > 0:
            return int(size)
        return int(max(s.offline_samples.max() for s in self.seeds))

    @property
    def has_online(self) -> bool:
        return any(s.online.any() for s in self.seeds)


def is_cumulative(metric: str) -> bool:
    """A running total (the prequential description length) rather than a per-chunk loss."""
    from seqeval.results import CUMULATIVE

    name = metric.lower()
    return name.endswith(CUMULATIVE) or "description_length" in name


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _flat_settings(config: RunConfig) -> dict[str, Any]:
    # One namespace for labels: agent settings by name, protocol settings as protocol.NAME, and
    # the --agent spec (shown only when two specs share a name).
    settings: dict[str, Any] = dict(config.agent_config)
    settings.update({f"protocol.{k}": v
                     for k, v in config.method_settings()["protocol"].items()})
    settings["agent"] = config.agent
    return settings


def _label_order(key: str) -> tuple[int, str]:
    # Agent settings first (what users vary most), then protocol settings, then the spec.
    return (2 if key == "agent" else 1 if key.startswith("protocol.") else 0), key


def _distinguishing_keys(configs: list[RunConfig]) -> set[str]:
    """Settings that differ between two of these methods (one agent on one dataset). Between
    two modes only the agent's settings count: their protocols differ by what the mode is
    (retrain has sizes and no online phase), and the mode is in the label."""
    keys: set[str] = set()
    for a, b in itertools.combinations(configs, 2):
        flat_a, flat_b = _flat_settings(a), _flat_settings(b)
        for key in set(flat_a) | set(flat_b):
            if a.mode != b.mode and key.startswith("protocol."):
                continue
            if _canonical(flat_a.get(key)) != _canonical(flat_b.get(key)):
                keys.add(key)
    return keys


def _format_setting(key: str, value: Any) -> str:
    if key == "agent":
        return f"[{value}]"
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    return f"{key.removeprefix('protocol.')}={value}"


def _variants(configs: dict[str, RunConfig], dataset_of: dict[str, str]) -> dict[str, str]:
    """Method identity -> variant text, per agent name: a setting that tells two methods of an
    agent apart on some dataset is shown for that agent's methods on every dataset, so one
    method carries one label across datasets (and is aggregated as one)."""
    by_agent: dict[str, list[str]] = defaultdict(list)
    for identity, config in configs.items():
        by_agent[config.agent_name].append(identity)
    variants = {}
    for identities in by_agent.values():
        per_dataset: dict[str, list[RunConfig]] = defaultdict(list)
        for identity in identities:
            per_dataset[dataset_of[identity]].append(configs[identity])
        shown = {k for cfgs in per_dataset.values() for k in _distinguishing_keys(cfgs)}
        derived = {f"protocol.{k}" for k in DERIVED}
        for keys in (shown - derived, shown):  # derived settings only if nothing else differs
            for identity in identities:
                flat = _flat_settings(configs[identity])
                variants[identity] = " ".join(_format_setting(k, flat[k])
                                              for k in sorted(keys, key=_label_order)
                                              if k in flat)
            labels = {(dataset_of[i], variants[i], configs[i].mode) for i in identities}
            if len(labels) == len(identities):
                break
    return variants


def _seed_curves(run: Run, normalized: bool) -> list[SeedCurve]:
    key = "normalized_score" if normalized else "return"
    by_seed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in run.evaluations:
        if row.get(key) is not None:
            by_seed[int(row["seed"])].append(row)
    curves = []
    for seed, rows in sorted(by_seed.items()):
        # Offline before online at equal samples (the online phase starts where offline ends).
        rows.sort(key=lambda r: (r["samples"], r.get("phase") == "online"))
        curves.append(SeedCurve(
            run_dir=run.path,
            seed=seed,
            samples=np.array([r["samples"] for r in rows], dtype=np.int64),
            values=np.array([r[key] for r in rows], dtype=np.float64),
            online=np.array([r.get("phase") == "online" for r in rows], dtype=bool),
        ))
    return curves


def _prequential_curves(run: Run, seeds: Iterable[int]) -> list[PrequentialCurve]:
    from seqeval.results import CUMULATIVE

    curves = []
    for seed in seeds:
        rows = sorted((r for r in run.prequential if r.seed == seed), key=lambda r: r.samples)
        # Each metric's loss per chunk, and its running total as METRIC_cumulative.
        series: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
        for row in rows:
            for name, loss in row.losses.items():
                series[name].append((row.samples, loss, row.transitions))
                series[name + CUMULATIVE].append((row.samples, row.cumulative.get(name),
                                                  row.transitions))
        metrics, chunk_sizes = {}, {}
        for name, points in sorted(series.items()):
            kept = [p for p in points if p[1] is not None]
            if kept:
                samples, values, sizes = (np.array(v) for v in zip(*kept, strict=True))
                metrics[name], chunk_sizes[name] = (samples, values), sizes
        if metrics:
            curves.append(PrequentialCurve(seed=seed, metrics=metrics, chunk_sizes=chunk_sizes))
    return curves


def group_runs(runs: Sequence[Run]) -> tuple[list[Group], list[str]]:
    """Runs pooled into one group per dataset and method (sorted by dataset, agent, variant,
    then the sequential protocol before its baselines), and notes for the reader. A run
    directory given twice, or a seed whose evaluations two run directories hold identically
    (a copy), is counted once with a note; a seed two directories hold with different
    evaluations is a UserError."""
    notes: list[str] = []
    unique: dict[Path, Run] = {}
    for run in runs:
        key = run.path.resolve()
        if key in unique:
            notes.append(f"'{run.path}' was given twice; its seeds are counted once")
        else:
            unique[key] = run
    members: dict[tuple[str, str], list[Run]] = defaultdict(list)
    configs: dict[str, RunConfig] = {}
    dataset_of: dict[str, str] = {}
    for run in unique.values():
        identity = _canonical([run.config.dataset, run.config.method_settings()])
        members[(run.config.dataset, identity)].append(run)
        configs[identity], dataset_of[identity] = run.config, run.config.dataset
    variants = _variants(configs, dataset_of)

    groups = []
    for (dataset, identity), group_runs_ in members.items():
        config = configs[identity]
        method = Method(config.agent_name, variants[identity], config.mode)
        normalized = all(r.get("normalized_score") is not None
                         for run in group_runs_ for r in run.evaluations)
        if not normalized:
            notes.append(f"{method.label} on {dataset}: no normalized scores (the dataset has "
                         "no reference returns); reported on raw returns")
        seeds: dict[int, SeedCurve] = {}
        prequential: list[PrequentialCurve] = []
        for run in group_runs_:
            kept = []
            for curve in _seed_curves(run, normalized):
                first = seeds.get(curve.seed)
                if first is None:
                    seeds[curve.seed] = curve
                    kept.append(curve.seed)
                elif (np.array_equal(first.samples, curve.samples)
                      and np.array_equal(first.values, curve.values)
                      and np.array_equal(first.online, curve.online)):
                    notes.append(f"seed {curve.seed} of {method.label} on {dataset} is in both "
                                 f"'{first.run_dir}' and '{run.path}' with the same evaluations "
                                 "(a copy); counted once")
                else:
                    raise UserError(
                        f"seed {curve.seed} of {method.label} on {dataset} is in both "
                        f"'{first.run_dir}' and '{run.path}' with different evaluations; pass "
                        "only one of them (pooled run dirs must hold different seeds)")
            prequential += _prequential_curves(run, kept)
        if not seeds:
            raise UserError(f"{method.label} on {dataset}: no evaluation row has a score; check "
                            + ", ".join(f"'{r.path / 'evaluations.csv'}'" for r in group_runs_))
        groups.append(Group(dataset=dataset, method=method, normalized=normalized,
                            runs=group_runs_, seeds=[seeds[s] for s in sorted(seeds)],
                            prequential=sorted(prequential, key=lambda p: p.seed)))
    groups.sort(key=lambda g: (g.dataset, g.method.agent_name, g.method.variant,
                               _mode_rank(g.mode), g.mode))
    return groups, notes


def _mode_rank(mode: str) -> int:
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def load_groups(run_dirs: Sequence[str | Path]) -> tuple[list[Group], list[str]]:
    """Read run directories and group them into methods (see group_runs)."""
    if not run_dirs:
        raise UserError("no run directories given; pass one or more RUN_DIR")
    return group_runs([load_run(path) for path in run_dirs])

"""The settings of one run: the only source of `seqeval run`'s flags.

Every `RunSettings` field that the command line sets carries its flag, parser and help text in
its dataclass metadata; `add_run_arguments` builds the parser from them and
`settings_from_arguments` reads them back, so a new setting is added in one place. This module
imports no JAX (the CLI parses its arguments before loading anything heavy).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from seqeval.errors import UserError

MODES = ("sequential", "full", "retrain")
DEFAULT_INITIAL_SIZE = 5000
# JAX keys hold 32 bits of a seed: a larger or negative one would repeat another seed's keys.
MAX_SEED = 2**32 - 1
# Each evaluation steps seeds x episodes environments side by side, all created up front.
MAX_EVALUATION_ENVIRONMENTS = 10_000
# Sizes, positions and step counts are 32-bit integers in the compiled programs.
MAX_COUNT = 2**31 - 1


def _int_list(text: str) -> tuple[int, ...]:
    items = [item.strip() for item in text.split(",")]
    try:
        values = tuple(int(item) for item in items if item)
    except ValueError:
        values = ()
    if not values or len(values) != len(items):
        raise argparse.ArgumentTypeError(f"expected N1,N2,... (integers), got '{text}'")
    return values


def _reference_pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (two numbers), got '{text}'") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise argparse.ArgumentTypeError(f"MIN,MAX must be finite numbers, got '{text}'")
    if not low < high:
        raise argparse.ArgumentTypeError(
            f"MIN must be below MAX (the random and the expert policy's returns), got '{text}'")
    return low, high


def _tracker_names(text: str) -> tuple[str, ...]:
    from seqeval.tracking import parse_backends

    return parse_backends(text)


def flag(help: str, *, name: str | None = None, parse: Callable[[str], Any] = int,
         metavar: str | None = None, default_text: str | None = None,
         choices: Sequence[str] | None = None) -> dict[str, Any]:
    """Field metadata making a `RunSettings` field a `seqeval run` flag.

    `name` defaults to the field name with dashes; a bool field that defaults to True becomes
    `--no-NAME`; `default_text` describes a default of None in the help.
    """
    return {"flag": {"help": help, "name": name, "parse": parse, "metavar": metavar,
                     "default_text": default_text, "choices": choices}}


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything that defines a run (saved in config.json)."""

    agent: str = dataclasses.field(metadata=flag(
        "agent name (bc, td3_bc, iql, cql, sac, rebrac, awac: see 'seqeval agents'), an "
        "installed entry point, or FILE.py[:NAME]", parse=str))
    dataset: str = dataclasses.field(metadata=flag(
        "Minari dataset id; ID1,ID2,... feeds datasets in that order, shuffled within each "
        "(distribution shift)", parse=str))
    out: str = dataclasses.field(metadata=flag(
        "run directory (created; a killed run started again resumes)", parse=str))
    agent_overrides: tuple[tuple[str, str], ...] = ()  # (key, value) from --agent.KEY VALUE
    mode: str = dataclasses.field(default="sequential", metadata=flag(
        "sequential: the data grows step by step; full: the whole dataset from step 0 for the "
        "same steps (the paper's 'Normal'); retrain: a fresh agent per dataset size",
        parse=str, choices=MODES))
    initial_size: int | None = dataclasses.field(default=None, metadata=flag(
        "T0, transitions in the buffer before training starts",
        default_text="min(5000, N/10)"))
    increment: int = dataclasses.field(default=1, metadata=flag(
        "gamma, transitions added per increment"))
    steps_per_increment: int = dataclasses.field(default=1, metadata=flag(
        "K, gradient steps per increment"))
    eval_every: int = dataclasses.field(default=5000, metadata=flag(
        "f_e, evaluate whenever the samples cross a multiple of this"))
    eval_episodes: int = dataclasses.field(default=10, metadata=flag(
        "deterministic-policy episodes per evaluation and seed"))
    batch_size: int | None = dataclasses.field(default=None, metadata=flag(
        "transitions per gradient step", default_text="the agent's own (see 'seqeval agents'), "
        "else 256"))
    seed: int = dataclasses.field(default=0, metadata=flag("first seed"))
    num_seeds: int = dataclasses.field(default=1, metadata=flag(
        "seeds SEED, SEED+1, ... trained together in one program", name="seeds"))
    window: int | None = dataclasses.field(default=None, metadata=flag(
        "train only on the most recent N transitions, for distribution shift; not in full mode",
        metavar="N", default_text="the whole buffer"))
    online_steps: int = dataclasses.field(default=0, metadata=flag(
        "environment steps of online fine-tuning after the offline pass"))
    updates_per_env_step: int = dataclasses.field(default=1, metadata=flag(
        "gradient steps per online environment step"))
    online_block: int = dataclasses.field(default=1000, metadata=flag(
        "environment steps collected between two compiled training calls"))
    sizes: tuple[int, ...] | None = dataclasses.field(default=None, metadata=flag(
        "retrain mode: dataset sizes", parse=_int_list, metavar="N1,N2,...",
        default_text="a geometric grid from T0 to N"))
    retrain_steps: int | None = dataclasses.field(default=None, metadata=flag(
        "retrain mode: gradient steps per size",
        default_text="as many as the sequential run had taken at that size, at least "
        "--retrain-min-steps"))
    retrain_min_steps: int = dataclasses.field(default=1000, metadata=flag(
        "retrain mode: the smallest default budget per size"))
    prequential: bool = dataclasses.field(default=True, metadata=flag(
        "skip scoring each chunk before training on it", name="prequential"))
    ref_scores: tuple[float, float] | None = dataclasses.field(default=None, metadata=flag(
        "reference returns (random, expert) for normalized scores; overrides the dataset's",
        parse=_reference_pair, metavar="MIN,MAX", default_text="the dataset's"))
    env: str | None = dataclasses.field(default=None, metadata=flag(
        "Gymnasium task of a dataset given as a D4RL-layout file (--dataset PATH.hdf5), "
        "e.g. Hopper-v5", parse=str, metavar="GYM_ID",
        default_text="the dataset's own (Minari ids and d4rl/ names record it)"))
    eval_workers: int = dataclasses.field(default=1, metadata=flag(
        "processes that step the evaluation environments side by side (1: this process); "
        "worth it for MuJoCo tasks on a host with idle cores, e.g. a GPU machine's; the "
        "returns are the same for any N"))
    progress: bool = dataclasses.field(default=True, metadata=flag(
        "hide the progress bar", name="progress"))
    # Experiment trackers (seqeval.tracking, docs/tracking.md): they never change a number.
    log: tuple[str, ...] | None = dataclasses.field(default=None, metadata=flag(
        "log results as they are produced to tensorboard, wandb or both (tensorboard,wandb)",
        parse=_tracker_names, metavar="TRACKERS", default_text="none"))
    wandb_project: str | None = dataclasses.field(default=None, metadata=flag(
        "W&B project of --log wandb", parse=str, metavar="PROJECT",
        default_text="$WANDB_PROJECT, else seqeval"))

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]


def _flag_fields() -> list[tuple[dataclasses.Field, dict[str, Any]]]:
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(RunSettings)
            if "flag" in f.metadata]


def _flag_name(field: dataclasses.Field, spec: dict[str, Any]) -> str:
    name = (spec["name"] or field.name).replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def run_flag(field_name: str) -> str:
    """The `seqeval run` flag of a `RunSettings` field (for messages)."""
    for field, spec in _flag_fields():
        if field.name == field_name:
            return _flag_name(field, spec)
    raise KeyError(field_name)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `seqeval run`, generated from `RunSettings`."""
    for field, spec in _flag_fields():
        name = _flag_name(field, spec)
        required = field.default is dataclasses.MISSING
        if field.default is True:
            parser.add_argument(name, dest=field.name, action="store_false", help=spec["help"])
            continue
        help_text = spec["help"]
        if not required:
            shown = spec["default_text"] if field.default is None else field.default
            help_text += f" (default: {shown})"
        metavar = spec["metavar"] or ("N" if spec["parse"] is int else None)
        parser.add_argument(name, dest=field.name, type=spec["parse"], required=required,
                            default=None if required else field.default, metavar=metavar,
                            choices=spec["choices"], help=help_text)


def settings_from_arguments(args: argparse.Namespace,
                            agent_overrides: tuple[tuple[str, str], ...]) -> RunSettings:
    """`RunSettings` from parsed `seqeval run` arguments."""
    values = {field.name: getattr(args, field.name) for field, _ in _flag_fields()}
    return RunSettings(agent_overrides=agent_overrides, **values)


_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--ref-scores -1554,-149` as `--ref-scores=-1554,-149`.

    argparse takes a value that starts with '-' for a flag unless it is a plain number; no
    seqeval flag starts with a digit, so such a value always belongs to the flag before it.
    """
    takes_value = {_flag_name(f, s) for f, s in _flag_fields() if f.default is not True}
    joined: list[str] = []
    items = list(argv)
    while items:
        item = items.pop(0)
        wants_value = item in takes_value or (item.startswith("--agent.") and "=" not in item)
        if wants_value and items and _NEGATIVE_VALUE.match(items[0]):
            item = f"{item}={items.pop(0)}"
        joined.append(item)
    return joined


def check_settings(settings: RunSettings) -> None:
    """Reject settings that are wrong whatever the data (UserError naming the flag)."""
    if settings.mode not in MODES:
        raise UserError(f"--mode {settings.mode} is unknown; choose one of: {', '.join(MODES)}")
    at_least_one = ["increment", "steps_per_increment", "eval_every", "eval_episodes",
                    "batch_size", "num_seeds", "updates_per_env_step", "online_block",
                    "retrain_min_steps", "window", "retrain_steps", "initial_size",
                    "eval_workers"]
    for name in at_least_one:
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise UserError(f"{run_flag(name)} must be at least 1 (got {value})")
    for field, _ in _flag_fields():
        value = getattr(settings, field.name)
        values = value if field.name == "sizes" and value is not None else (value,)
        if field.name != "seed" and any(type(v) is int and v > MAX_COUNT for v in values):
            raise UserError(f"{run_flag(field.name)} {max(values)} is beyond {MAX_COUNT} (the "
                            "compiled programs count in 32-bit integers); pass a smaller value")
    last_seed = settings.seed + settings.num_seeds - 1
    if settings.seed < 0 or last_seed > MAX_SEED:
        seeds = (f"--seed {settings.seed}" if settings.num_seeds == 1 else
                 f"seeds {settings.seed}..{last_seed}")
        raise UserError(f"{seeds} is outside 0..{MAX_SEED} (JAX keys hold 32 bits, so other "
                        "seeds would repeat it); pass a --seed in that range")
    environments = settings.num_seeds * settings.eval_episodes
    if environments > MAX_EVALUATION_ENVIRONMENTS:
        raise UserError(f"--seeds {settings.num_seeds} x --eval-episodes "
                        f"{settings.eval_episodes} = {environments} evaluation environments, "
                        f"stepped side by side; at most {MAX_EVALUATION_ENVIRONMENTS} fit: pass "
                        "fewer --eval-episodes (10 is the protocol's)")
    if settings.online_steps < 0:
        raise UserError(f"--online-steps must be 0 or more (got {settings.online_steps})")
    if settings.mode == "retrain" and settings.online_steps:
        raise UserError("--online-steps continues a sequential or full run; drop it in retrain "
                        "mode")
    if settings.mode == "full" and settings.window is not None:
        raise UserError("--window trains on the most recent transitions as the data grows, but "
                        "full mode has all the data from the start; drop --window or use "
                        "--mode sequential")
    if settings.log:  # a tracker that cannot import is refused before anything runs
        from seqeval.tracking import check_backends

        check_backends(settings.log)
    if settings.ref_scores is not None:
        low, high = settings.ref_scores
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise UserError(f"--ref-scores {low},{high}: MIN and MAX must be finite with MIN "
                            "below MAX; pass the random and the expert policy's returns")

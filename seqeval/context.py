"""What every mode of a run shares: the loaded inputs, the run directory, and stopping.

`load_context` turns `RunSettings` into checked inputs on the device; `StopRequest` turns Ctrl-C
into a request that the modes honour between steps, so an interrupt never lands inside XLA
compilation or halfway through writing a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqeval import protocol
from seqeval.algorithms.base import Agent, Spaces, config_to_dict, resolve_batch_size
from seqeval.algorithms.checks import agent_fingerprint, check_agent, evaluator_fingerprint
from seqeval.algorithms.registry import agent_code_error, get_agent
from seqeval.compilation import jit_once
from seqeval.data import (  # noqa: F401 (FINGERPRINTED_ARRAYS: what the fingerprint covers)
    FINGERPRINTED_ARRAYS,
    OfflineData,
    dataset_fingerprint,
    load_datasets,
    make_eval_env_factory,
)
from seqeval.errors import DivergenceError, UserError
from seqeval.memory import available_memory, check_memory, estimate_memory
from seqeval.results import RunDir
from seqeval.settings import DEFAULT_INITIAL_SIZE, RunSettings, check_settings


@dataclasses.dataclass
class RunContext:
    """A run's checked inputs, shared by every mode."""

    settings: RunSettings
    agent: Agent
    agent_config: Any
    data: OfflineData
    device_data: protocol.DeviceData  # the dataset on the device (actions in [-1, 1])
    orders: jax.Array  # (seeds, N) buffer positions -> dataset rows
    init_keys: jax.Array  # (seeds, 2)
    train_keys: jax.Array  # (seeds, 2)
    initial_size: int  # T0
    batch_size: int  # --batch-size, else the agent's own, else 256
    spaces: Spaces
    run_dir: RunDir
    stop: StopRequest

    def config_json(self, protocol_info: dict[str, Any]) -> dict[str, Any]:
        """config.json: everything needed to reproduce the run, and what the mode derived
        (`protocol_info`: budgets, step counts)."""
        settings = self.settings
        return {
            "agent": settings.agent,
            "agent_name": self.agent.name,
            # a resumed run refuses agent code that changed since it started
            "agent_fingerprint": agent_fingerprint(self.agent),
            # and evaluator code (the modules that compute a run's numbers) that changed
            "evaluator_fingerprint": evaluator_fingerprint(),
            "dataset": settings.dataset,
            # a resumed run refuses a dataset whose content changed since it started
            "dataset_fingerprint": dataset_fingerprint(self.data),
            # the task of a dataset given as a file (--env); absent for ids that record theirs
            **({"env": settings.env} if settings.env is not None else {}),
            "mode": settings.mode,
            "protocol": {
                "initial_size": self.initial_size,
                "increment": settings.increment,
                "steps_per_increment": settings.steps_per_increment,
                "eval_every": settings.eval_every,
                "eval_episodes": settings.eval_episodes,
                "batch_size": self.batch_size,
                "seeds": settings.seeds,
                "window": settings.window,
                "online_steps": settings.online_steps,
                "updates_per_env_step": settings.updates_per_env_step,
                "online_block": settings.online_block,
                "prequential": settings.prequential,
                **protocol_info,
            },
            "agent_config": config_to_dict(self.agent_config),
            "dataset_info": self.data.info(),
        }

    def progress_bar(self, total: int, initial: int, unit: str):
        from tqdm.auto import tqdm

        settings = self.settings
        return tqdm(total=total, initial=initial, unit=unit, disable=not settings.progress,
                    desc=f"{self.agent.name} on {settings.dataset} ({settings.mode})",
                    dynamic_ncols=True)

    def check_finite(self, finite: np.ndarray, members: list[int], samples: int,
                     gradient_steps: int) -> None:
        """Stop a run whose losses went non-finite, saying where (summary status 'diverged')."""
        if finite.all():
            return
        bad_seed = members[int(np.argmin(finite))]
        self.run_dir.write_summary({"status": "diverged", "samples": samples,
                                    "gradient_steps": gradient_steps, "seed": bad_seed})
        raise DivergenceError(
            f"training diverged (non-finite loss) for seed {bad_seed} by {samples} samples; "
            f"lower the learning rate or check the data (losses in "
            f"{self.run_dir.path / 'training.csv'})"
        )

    def guard(self, summary: Callable[[str], dict]):
        """A context manager for a mode's loop: on an interrupt or a failure (a full disk),
        summary.json says "interrupted" (with `summary(status)`'s last scores), not "running"."""
        return _MarkInterrupted(self, summary)


class _MarkInterrupted:
    def __init__(self, context: RunContext, summary: Callable[[str], dict]):
        self.context, self.summary = context, summary

    def __enter__(self):
        self.context.stop.on_force_stop = self.mark
        return self

    def mark(self) -> None:
        try:
            self.context.run_dir.write_summary(self.summary("interrupted"))
        except OSError:
            pass  # the disk that failed the run may refuse this too; the checkpoint stands

    def __exit__(self, kind, error, traceback) -> bool:
        self.context.stop.on_force_stop = None
        if kind is not None and not issubclass(kind, DivergenceError | UserError):
            self.mark()
        return False


class StopRequest:
    """Ctrl-C while a run is going: the first asks it to stop after the current step (the
    checkpoint is then current); a second stops at once (the step is redone on resume).

    Installed only in the main thread (signal handlers live there); elsewhere Ctrl-C raises
    KeyboardInterrupt as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self.on_force_stop: Callable[[], None] | None = None
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info) -> bool:
        if self._installed:  # None: the previous handler was not set from Python
            signal.signal(signal.SIGINT, signal.SIG_DFL if self._previous is None
                          else self._previous)
            self._installed = False
        return False

    def _handle(self, signum, frame) -> None:
        if self.requested:
            if self.on_force_stop is not None:
                self.on_force_stop()
            print("\nseqeval: interrupted; run the same command again to resume",
                  file=sys.stderr, flush=True)
            os._exit(130)  # no teardown: XLA may be compiling; every file is consistent
        self.requested = True
        print("\nseqeval: stopping after the current step (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def check(self) -> None:
        """Between steps: raise KeyboardInterrupt if a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt


def check_evaluation_environment(dataset_id: str, env: str | None = None) -> None:
    """Create (and close) the environment the run will evaluate in, once, before the run
    directory is touched: a dataset that records none, or whose environment's module is not
    installed, is refused in one line instead of failing at the first evaluation."""
    make_env = make_eval_env_factory(dataset_id, env)
    try:
        make_env().close()
    except UserError:
        raise
    except ImportError as error:
        module = getattr(error, "name", None) or str(error)
        raise UserError(f"dataset '{dataset_id}' evaluates in an environment whose module "
                        f"'{module}' is not installed; install it (pip install ...) or choose "
                        "another dataset") from None
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else ""
        raise UserError(f"dataset '{dataset_id}': its evaluation environment cannot be created "
                        f"({type(error).__name__}{': ' + message if message else ''}); install "
                        "what it needs or choose another dataset") from None


def check_against_data(settings: RunSettings, data: OfflineData) -> int:
    """Check the settings against the data (sizes, action bounds); returns T0."""
    n = data.size
    if settings.initial_size is None:
        initial = min(DEFAULT_INITIAL_SIZE, max(1, n // 10))
    else:
        initial = settings.initial_size
        if initial >= n:
            raise UserError(
                f"--initial-size {initial} is not smaller than the dataset '{data.dataset_id}' "
                f"({n} transitions); pass a smaller --initial-size"
            )
    for size in settings.sizes or ():
        if not 1 <= size <= n:
            raise UserError(f"--sizes: {size} is outside 1..{n} (the dataset's size)")
    if not (np.all(np.isfinite(data.action_low)) and np.all(np.isfinite(data.action_high))):
        raise UserError(f"dataset '{data.dataset_id}' has an unbounded action space; "
                        "seqeval needs finite action bounds")
    return initial


@contextlib.contextmanager
def _agent_code(agent: Agent, spec: str):
    """Turn an exception raised in the agent's own code into one line naming it."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        named = agent_code_error(agent, spec, error)
        if named is None:
            raise
        raise named from None


def _check_setting_names(agent: Agent, run_dir: RunDir) -> None:
    """Refuse, naming why, to resume a run started under a setting name the agent has since
    renamed (`Agent.renamed_settings`): an earlier seqeval's run, whose agent code differs too,
    so it cannot go on; `RunDir.open` would only call it another config."""
    try:
        existing = run_dir.read_config() or {}
    except UserError:
        return  # a damaged config.json: `RunDir.open` says so
    started = existing.get("agent_config")
    if existing.get("agent_name") != agent.name or not isinstance(started, dict):
        return
    old = next((key for key in started if key in agent.renamed_settings), None)
    if old is not None:
        raise UserError(f"'{run_dir.path}' was started with {agent.name}'s setting '{old}', "
                        f"since renamed '{agent.renamed_settings[old]}', by an earlier seqeval "
                        "whose agent code differs: it cannot be resumed; start fresh with "
                        "another --out (or delete the run directory)")


def load_context(settings: RunSettings, stop: StopRequest) -> RunContext:
    """Load and check the agent and the data; the run directory is not touched yet."""
    check_settings(settings)
    agent = get_agent(settings.agent)
    with _agent_code(agent, settings.agent):
        agent_config = agent.make_config(dict(settings.agent_overrides))
    _check_setting_names(agent, RunDir(settings.out))
    data, block_sizes = load_datasets(settings.dataset, settings.env)
    check_evaluation_environment(settings.dataset.split(",")[0], settings.env)
    if settings.ref_scores is not None:
        data = data.with_reference_scores(*settings.ref_scores)
    initial_size = check_against_data(settings, data)
    batch_size = resolve_batch_size(agent, settings.batch_size)
    check_memory(estimate_memory(settings, agent, agent_config, data, batch_size, initial_size),
                 available_memory())
    if not data.has_reference_scores:
        print(f"seqeval: note: dataset '{settings.dataset}' has no reference scores; results "
              "are raw returns (pass --ref-scores MIN,MAX to normalize)", file=sys.stderr)

    keys = [protocol.seed_keys(s) for s in settings.seeds]
    permutation_keys, init_keys, train_keys = (jnp.stack(k) for k in zip(*keys, strict=True))
    orders = jit_once(jax.vmap(lambda k: protocol.block_permutation(k, block_sizes)))(
        permutation_keys)
    device_data = protocol.device_data(data)
    spaces = Spaces(data.observation_dim, data.action_dim)
    # The agent's contract (shapes, pytrees, scalar metrics, actions in [-1, 1]) is checked
    # once, abstractly plus one real batch, so a broken plug-in fails here in one line rather
    # than deep inside a compiled program.
    sample = jit_once(lambda d, order: protocol.gather(d, order, jnp.arange(min(64, data.size)),
                                                       data.size))(device_data, orders[0])
    with _agent_code(agent, settings.agent):
        check_agent(agent, agent_config, spaces, protocol.dataset_stats(data), batch_size,
                    sample=sample)
    return RunContext(
        settings=settings, agent=agent, agent_config=agent_config, data=data,
        device_data=device_data, orders=orders, init_keys=init_keys,
        train_keys=train_keys, initial_size=initial_size, batch_size=batch_size,
        spaces=spaces, run_dir=RunDir(settings.out), stop=stop,
    )

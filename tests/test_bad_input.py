"""Bad input: exit code 2, one line naming the problem and the fix, nothing written.

Every case runs `seqeval.cli.main(argv)` in-process (stderr captured) and must end with exit
code 2 and exactly one line on stderr (no traceback), having written nothing. A handful of them
also run through the venv's installed `seqeval` command in a subprocess, as a user runs it, to
prove the real process ends the same way; so do a read-only --out and a closed output pipe.
Damaged run directories are refused by the resume suite (tests/test_resume.py), on its run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import EXPERT, SEQEVAL

from seqeval.cli import main

DATASET_DIR = Path(*EXPERT.split("/"))  # inside a Minari store
BASE = ["run", "--agent", "bc", "--dataset", EXPERT, "--no-progress"]
TINY = ["--initial-size", "9000", "--increment", "500", "--eval-every", "500",
        "--eval-episodes", "1", "--batch-size", "16", "--agent.hidden_dims", "8"]

# Prepares what a case needs in its directory (given the session's Minari store); returns extra
# environment variables.
Prepare = Callable[[Path, Path], dict[str, str]]


@dataclasses.dataclass
class Case:
    """`seqeval ARGS`; stderr must contain `message`. `prepare(tmp, store)` builds what the
    case needs (a file, a damaged store) and returns extra environment variables."""

    name: str
    args: list[str]
    message: str
    prepare: Prepare | None = None
    out: str | None = "out"  # the run directory that must not appear (None: not checked)


def _run_args(*extra: str) -> list[str]:
    return [*BASE, *TINY, "--out", "{tmp}/out", *extra]


def _agent(*extra: str, agent: str = "bc") -> list[str]:
    """Arguments with another agent (no bc-only --agent.hidden_dims)."""
    return ["run", "--agent", agent, "--dataset", EXPERT, "--no-progress", "--out", "{tmp}/out",
            *extra]


def _write(relative: str, text: str) -> Prepare:
    def prepare(tmp: Path, store: Path) -> dict[str, str]:
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp / relative).write_text(text)
        return {}
    return prepare


# ---------------------------------------------------------------------------------------------
# Damaged datasets: a copy of the session's store with one file broken.


def _damaged_store(damage: Callable[[Path], None]) -> Prepare:
    def prepare(tmp: Path, store: Path) -> dict[str, str]:
        copy = tmp / "store"
        shutil.copytree(store / DATASET_DIR, copy / DATASET_DIR)
        cache = copy / DATASET_DIR / "seqeval_cache.npz"
        cache.unlink(missing_ok=True)
        damage(copy / DATASET_DIR / "data")
        return {"MINARI_DATASETS_PATH": str(copy)}
    return prepare


def _overwrite(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda data: (data / name).write_bytes(content)


def _truncate(name: str, keep: int) -> Callable[[Path], None]:
    return lambda data: (data / name).write_bytes((data / name).read_bytes()[:keep])


def _remove(name: str) -> Callable[[Path], None]:
    return lambda data: (data / name).unlink()


SYNTAX_ERROR = "import math\ndef broken(:\n    pass\n"
IMPORT_ERROR = "import math\n\nimport no_such_module_for_seqeval\n"
FAILING_AT_IMPORT = "x = 1\nraise RuntimeError('boom')\n"

CASES = [
    # Names and flags.
    Case("unknown agent", ["run", "--agent", "nope", "--dataset", EXPERT, "--out", "{tmp}/out"],
         "unknown agent 'nope'"),
    Case("unknown dataset", [*_agent(), "--dataset", "test/missing-v0"],
         "unknown dataset 'test/missing-v0'"),
    Case("unknown flag", _run_args("--bogus"), "unrecognised argument '--bogus'"),
    Case("unknown mode", _run_args("--mode", "sequentail"), "invalid choice: 'sequentail'"),
    Case("sizes comma", _run_args("--mode", "retrain", "--sizes", ","),
         "expected N1,N2,... (integers), got ','"),
    Case("sizes gap", _run_args("--mode", "retrain", "--sizes", "1000,,2000"),
         "expected N1,N2,... (integers)"),
    Case("sizes not numbers", _run_args("--mode", "retrain", "--sizes", "a,b"),
         "expected N1,N2,... (integers)"),
    Case("sizes beyond data", _run_args("--mode", "retrain", "--sizes", "1000,99999"),
         "--sizes: 99999 is outside 1..10000"),
    Case("seed beyond 64 bits", _run_args("--seed", str(2**64)),
         f"--seed {2**64} is outside 0..4294967295"),
    Case("seed beyond 32 bits", _run_args("--seed", str(2**32)), "is outside 0..4294967295"),
    Case("negative seed", _run_args("--seed", "-1"), "--seed -1 is outside 0..4294967295"),
    Case("last seed beyond 32 bits", _run_args("--seed", str(2**32 - 1), "--seeds", "2"),
         "seeds 4294967295..4294967296 is outside"),
    Case("no seeds", _run_args("--seeds", "0"), "--seeds must be at least 1"),
    Case("zero batch", _run_args("--batch-size", "0"), "--batch-size must be at least 1"),
    Case("zero increment", _run_args("--increment", "0"), "--increment must be at least 1"),
    Case("no evaluation workers", _run_args("--eval-workers", "0"),
         "--eval-workers must be at least 1"),
    Case("negative online steps", _run_args("--online-steps", "-5"),
         "--online-steps must be 0 or more"),
    Case("eval episodes huge", _run_args("--eval-episodes", "100000000"),
         "100000000 evaluation environments"),
    Case("initial size beyond data", _run_args("--initial-size", "20000"),
         "--initial-size 20000 is not smaller than the dataset"),
    Case("full with window", _run_args("--mode", "full", "--window", "100"),
         "full mode has all the data from the start"),
    Case("retrain with online", _run_args("--mode", "retrain", "--online-steps", "100"),
         "drop it in retrain mode"),
    Case("infinite ref scores", _run_args("--ref-scores=-inf,0"), "must be finite numbers"),
    Case("ref scores reversed", _run_args("--ref-scores", "5,1"), "MIN must be below MAX"),
    # Agent settings.
    Case("hidden dims 0", _run_args("--agent.hidden_dims", "0"),
         "--agent.hidden_dims must be layer widths of at least 1"),
    Case("hidden dims comma", _run_args("--agent.hidden_dims", ","),
         "--agent.hidden_dims expects comma-separated values such as 256,256, got ','"),
    Case("hidden dims negative", _run_args("--agent.hidden_dims", "64,-3"),
         "--agent.hidden_dims must be layer widths of at least 1"),
    Case("negative learning rate", _run_args("--agent.learning_rate", "-1"),
         "--agent.learning_rate must be > 0 (got -1.0)"),
    Case("zero learning rate", _run_args("--agent.learning_rate", "0"),
         "--agent.learning_rate must be > 0"),
    Case("nan learning rate", _run_args("--agent.learning_rate", "nan"),
         "--agent.learning_rate must be a finite number"),
    Case("learning rate not a number", _run_args("--agent.learning_rate", "fast"),
         "expects float, got 'fast'"),
    Case("unknown agent setting", _run_args("--agent.nonsense", "1"), "has no setting 'nonsense'"),
    # Settings renamed so that one name means one thing across agents: the old name is
    # refused with the new one.
    Case("iql's old temperature", _agent("--agent.temperature", "0.5", agent="iql"),
         "agent 'iql' has no setting 'temperature': it is now 'beta'"),
    Case("sac's old initial temperature", _agent("--agent.initial_temperature=0.5", agent="sac"),
         "agent 'sac' has no setting 'initial_temperature': it is now 'initial_alpha'"),
    Case("td3_bc's old alpha", _agent("--agent.alpha", "2", agent="td3_bc"),
         "agent 'td3_bc' has no setting 'alpha': it is now 'actor_q_coef'"),
    Case("discount above 1", _agent("--agent.discount", "5", agent="td3_bc"),
         "agent 'td3_bc': --agent.discount must be in (0, 1] (got 5.0)"),
    Case("tau zero", _agent("--agent.tau", "0", agent="cql"), "--agent.tau must be in (0, 1]"),
    Case("expectile 2", _agent("--agent.expectile", "2", agent="iql"),
         "agent 'iql': --agent.expectile must be in (0, 1) (got 2.0)"),
    Case("negative td3 q coef", _agent("--agent.actor_q_coef=-1", agent="td3_bc"),
         "--agent.actor_q_coef must be >= 0"),
    Case("policy frequency 0", _agent("--agent.policy_frequency", "0", agent="rebrac"),
         "--agent.policy_frequency must be >= 1"),
    Case("log std bounds crossed", _agent("--agent.log_std_min", "3", agent="sac"),
         "--agent.log_std_min must be below log_std_max"),
    Case("awac lambda 0", _agent("--agent.awac_lambda", "0", agent="awac"),
         "--agent.awac_lambda must be > 0"),
    Case("no sampled actions", _agent("--agent.num_sampled_actions", "0", agent="cql"),
         "--agent.num_sampled_actions must be >= 1"),
    # Agent files.
    Case("agent file syntax error", _agent(agent="{tmp}/agent.py"),
         "agent.py' cannot be loaded: line 2: SyntaxError", _write("agent.py", SYNTAX_ERROR)),
    Case("agent file import error", _agent(agent="{tmp}/agent.py"),
         "agent.py' cannot be loaded: line 3: ModuleNotFoundError: No module named "
         "'no_such_module_for_seqeval'", _write("agent.py", IMPORT_ERROR)),
    Case("agent file raises", _agent(agent="{tmp}/agent.py:AGENT"),
         "cannot be loaded: line 2: RuntimeError: boom", _write("agent.py", FAILING_AT_IMPORT)),
    Case("agent file missing", _agent(agent="{tmp}/none.py"), "none.py' does not exist"),
    Case("agents listing a broken file", ["agents", "{tmp}/agent.py"],
         "cannot be loaded: line 2: SyntaxError", _write("agent.py", SYNTAX_ERROR), out=None),
    # Memory: refused from shapes alone, before anything is allocated.
    Case("batch size huge", _run_args("--batch-size", "1000000000"),
         "training batches"),
    Case("steps per increment huge",
         _run_args("--steps-per-increment", "2000000000", "--seeds", "100", "--eval-episodes",
                   "1"), "lower --steps-per-increment"),
    Case("online steps huge", _run_args("--online-steps", "2000000000", "--seeds", "100",
                                        "--eval-episodes", "1"),
         "lower --online-steps or --seeds"),
    # Counts beyond the compiled programs' 32-bit integers.
    Case("batch size beyond 32 bits", _run_args("--batch-size", str(10**30)),
         f"--batch-size {10**30} is beyond 2147483647"),
    Case("increment beyond 32 bits", _run_args("--increment", str(10**10)),
         "--increment 10000000000 is beyond 2147483647"),
    Case("retrain size beyond 32 bits", _run_args("--mode", "retrain", "--sizes", "5,3000000000"),
         "--sizes 3000000000 is beyond 2147483647"),
    Case("seeds with huge networks", [*_run_args("--seeds", "5000", "--eval-episodes", "1"),
                                      "--agent.hidden_dims", "4096,4096"],
         "(agent states:"),
    # Where the run goes.
    Case("out is a file", [*BASE, *TINY, "--out", "{tmp}/afile"], "--out '", _write("afile", "x"),
         out=None),
    Case("out under a file", [*BASE, *TINY, "--out", "{tmp}/afile/run"],
         "('{tmp}/afile' is a file)", _write("afile", "x"), out=None),
    Case("out in /proc", [*BASE, *TINY, "--out", "/proc/seqeval-test-run"],
         "cannot create the run directory '/proc/seqeval-test-run'", out=None),
    Case("out holds other files", _run_args(), "is not a seqeval run; choose another --out",
         _write("out/notes.txt", "mine"), out=None),
    # Damaged datasets.
    Case("hdf5 garbage", _run_args(), "cannot be read (OSError",
         _damaged_store(_overwrite("main_data.hdf5", b"garbage"))),
    Case("hdf5 truncated", _run_args(), "are damaged or incomplete",
         _damaged_store(_truncate("main_data.hdf5", 30_000))),
    Case("hdf5 missing", _run_args(), "are damaged or incomplete",
         _damaged_store(_remove("main_data.hdf5"))),
    Case("metadata garbage", _run_args(), "cannot be read (JSONDecodeError",
         _damaged_store(_overwrite("metadata.json", b"{bad"))),
    Case("metadata empty", _run_args(), "cannot be read (JSONDecodeError",
         _damaged_store(_overwrite("metadata.json", b""))),
    Case("plot of no run", ["plot", "{tmp}/nothing"], "does not exist", out=None),
    Case("sweep spec not TOML", ["sweep", "{tmp}/spec.toml", "--out", "{tmp}/study"],
         "is not valid TOML", _write("spec.toml", "[study\nagents ="), out=None),
]

# These also run through the installed command: the earliest refusal, argparse's, an agent file
# that does not compile, a damaged HDF5 file, an unwritable --out and a refusal on memory.
SUBPROCESS_CASES = ["unknown agent", "unknown mode", "agent file syntax error", "hdf5 garbage",
                    "out in /proc", "batch size huge"]


@dataclasses.dataclass
class Outcome:
    returncode: int
    stderr: str
    tmp: Path


def _prepare(case: Case, tmp: Path, store: Path) -> tuple[list[str], dict[str, str]]:
    tmp.mkdir(parents=True)
    extra_env = case.prepare(tmp, store) if case.prepare else {}
    return [arg.replace("{tmp}", str(tmp)) for arg in case.args], extra_env


def _in_process(case: Case, tmp: Path, store: Path, monkeypatch, capsys) -> Outcome:
    args, extra_env = _prepare(case, tmp, store)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    for name, value in extra_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp)
    capsys.readouterr()
    try:
        returncode = main(args)
    except SystemExit as exit_info:  # argparse's own exits (none expected: they become code 2)
        returncode = exit_info.code
    return Outcome(returncode, capsys.readouterr().err, tmp)


def _in_subprocess(case: Case, tmp: Path, store: Path) -> Outcome:
    args, extra_env = _prepare(case, tmp, store)
    env = {**os.environ, "MINARI_DATASETS_PATH": str(store), **extra_env}
    result = subprocess.run([SEQEVAL, *args], env=env, cwd=tmp, capture_output=True, text=True,
                            timeout=600, stdin=subprocess.DEVNULL, check=False)
    return Outcome(result.returncode, result.stderr, tmp)


def assert_refused(case: Case, outcome: Outcome) -> None:
    """Exit code 2, one line starting `seqeval: error:` holding the message, nothing written."""
    lines = outcome.stderr.splitlines()
    assert outcome.returncode == 2, outcome.stderr
    assert len(lines) == 1 and lines[0].startswith("seqeval: error: "), outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert case.message.replace("{tmp}", str(outcome.tmp)) in lines[0], lines[0]
    if case.out is not None:
        assert not (outcome.tmp / case.out).exists()  # nothing written


@pytest.fixture(scope="module")
def subprocess_outcomes(pendulum_store, tmp_path_factory) -> dict[str, Outcome]:
    """The installed command's outcome of each case in SUBPROCESS_CASES, three at a time (they
    wait mostly on imports)."""
    root = tmp_path_factory.mktemp("bad_input_installed")
    by_name = {case.name: case for case in CASES}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_in_subprocess, by_name[name], root / f"case{i:02d}",
                                     pendulum_store)
                   for i, name in enumerate(SUBPROCESS_CASES)}
        return {name: future.result() for name, future in futures.items()}


def test_there_are_enough_cases():
    assert len(CASES) >= 40 and len({case.name for case in CASES}) == len(CASES)
    assert set(SUBPROCESS_CASES) <= {case.name for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(pendulum_store, tmp_path, monkeypatch,
                                                          capsys, case):
    assert_refused(case, _in_process(case, tmp_path / "case", pendulum_store, monkeypatch,
                                     capsys))


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_the_installed_command_refuses_the_same_way(subprocess_outcomes, name):
    (case,) = [case for case in CASES if case.name == name]
    assert_refused(case, subprocess_outcomes[name])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_is_one_line(store, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = subprocess.run([SEQEVAL, *BASE, *TINY, "--out", str(locked / "run")],
                                env={**os.environ, "MINARI_DATASETS_PATH": str(store)},
                                capture_output=True, text=True, check=False)
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot create the run directory" in result.stderr


def test_a_closed_pipe_ends_the_listing_quietly():
    """`seqeval agents | head -1`: the reader goes away; no traceback, no message."""
    process = subprocess.Popen([SEQEVAL, "agents"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    process.stdout.close()  # before the listing is written: every write meets a closed pipe
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141  # 128 + SIGPIPE, as Unix tools end
    assert stderr == ""

"""Interrupted, concurrent and damaged runs: a resumed run writes exactly what an uninterrupted
one writes, and anything it cannot trust stops it (or `plot`, `report`) with one line (exit
code 2), changing nothing. Every damage case damages a copy of the one uninterrupted run.

Kill tests run the installed command in a real process, kill it (SIGKILL, or Ctrl-C's SIGINT)
at a point found by polling the run's files (during compilation, in the offline pass, in the
online phase), resume it, and compare every file of the run directory with an uninterrupted run.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import EXPERT

from seqeval import evaluate, results
from seqeval.cli import main
from seqeval.errors import UserError
from seqeval.results import read_evaluations, read_prequential, read_training

SEQEVAL = os.path.join(os.path.dirname(sys.executable), "seqeval")
# 2 seeds; offline: 4 chunks (8500, 9000, 9500, 10000) of 25 increments x 2 steps; online: 600
# environment steps in blocks of 250, evaluated at 10500 and 10600.
RUN = ["--agent", "bc", "--dataset", EXPERT, "--initial-size", "8000", "--increment", "20",
       "--steps-per-increment", "2", "--eval-every", "500", "--eval-episodes", "1",
       "--batch-size", "32", "--seeds", "2", "--online-steps", "600", "--online-block", "250",
       "--agent.hidden_dims", "16,16", "--no-progress"]
TIMING = ("wall_time", "train_time", "prequential_time", "updates_per_second")


@pytest.fixture(scope="module")
def reference(pendulum_store, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(pendulum_store))
        assert main(["run", "--out", str(out), *RUN]) == 0
    return out


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING}
    return value


def assert_same_run(resumed: Path, whole: Path) -> None:
    """Every file of two run directories is the same, byte for byte, apart from timings."""
    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files(resumed) == files(whole)
    for name in ("training.csv", "prequential.csv", "config.json"):
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name

    def evaluations(root):  # every column but wall_time, as written
        with open(root / "evaluations.csv", newline="") as handle:
            return [row[:5] + row[6:] for row in csv.reader(handle)]

    assert evaluations(resumed) == evaluations(whole)
    for name in ("summary.json", "checkpoint/progress.json"):
        ours, theirs = (json.loads((root / name).read_text()) for root in (resumed, whole))
        assert _without_timing(ours) == _without_timing(theirs), name
    arrays = json.loads((whole / "checkpoint/progress.json").read_text())["arrays"]
    with np.load(resumed / "checkpoint" / arrays) as ours, \
            np.load(whole / "checkpoint" / arrays) as theirs:
        assert ours.files == theirs.files
        for key in ours.files:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    # One permission mode for every file the run wrote (atomic writes included).
    assert len({p.stat().st_mode for p in resumed.rglob("*") if p.is_file()}) == 1


# ---------------------------------------------------------------------------------------------
# Kills in a real process.


def _rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="") as handle:
            return [row for row in csv.reader(handle)][1:]
    except FileNotFoundError:
        return []


def _samples(path: Path) -> list[int]:
    return [int(row[0]) for row in _rows(path) if row and row[0].isdigit()]


KILL_POINTS = {
    # The run directory is written just before the programs are compiled.
    "compile": lambda out: (out / "config.json").exists(),
    # Two evaluations done, and the next chunk already scored (its prequential rows written)
    # but not yet checkpointed: the rows a resumed run must not keep twice.
    "offline": lambda out: len(_samples(out / "evaluations.csv")) >= 4
    and len(_samples(out / "prequential.csv")) > len(_samples(out / "evaluations.csv")),
    # The offline pass is over; the agents are collecting or training online.
    "online": lambda out: 10_000 in _samples(out / "evaluations.csv"),
}


def _start(out: Path, store: Path, args: list[str] = RUN) -> subprocess.Popen:
    env = {**os.environ, "MINARI_DATASETS_PATH": str(store)}
    return subprocess.Popen([SEQEVAL, "run", "--out", str(out), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_at(process: subprocess.Popen, out: Path, point: str, sig: int) -> tuple[int, str]:
    deadline = time.monotonic() + 300
    while not KILL_POINTS[point](out):
        if process.poll() is not None:
            pytest.fail(f"the run ended before the '{point}' kill point: "
                        f"{process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the '{point}' kill point was not reached in 300 s")
        time.sleep(0.002)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


# Each kill point exercises a different resume path: a run with its config but no checkpoint
# (compile), logs cut back to the checkpoint (offline), the online buffer restored (online).
# Ctrl-C's graceful stop is one check between steps, the same in every phase: it runs by
# default at the compile point (where it also leaves no checkpoint); the other three
# combinations repeat code already covered and run with `pytest -m slow`.
KILLS = [
    pytest.param("compile", signal.SIGINT, id="compile-SIGINT"),
    pytest.param("offline", signal.SIGKILL, id="offline-SIGKILL"),
    pytest.param("online", signal.SIGKILL, id="online-SIGKILL"),
    pytest.param("compile", signal.SIGKILL, id="compile-SIGKILL", marks=pytest.mark.slow),
    pytest.param("offline", signal.SIGINT, id="offline-SIGINT", marks=pytest.mark.slow),
    pytest.param("online", signal.SIGINT, id="online-SIGINT", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("point,sig", KILLS)
def test_killed_run_resumes_to_the_same_files(store, tmp_path, reference, point, sig):
    out = tmp_path / "run"
    returncode, stderr = _kill_at(_start(out, store), out, point, sig)
    if sig == signal.SIGKILL:
        assert returncode == -signal.SIGKILL
    else:
        # Ctrl-C: the step in progress (if any) finishes and is checkpointed, then the run
        # stops cleanly (no crash inside XLA), saying so in summary.json.
        assert returncode == 130, stderr
        assert "Traceback" not in stderr and "run the same command again" in stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        progress = out / "checkpoint" / "progress.json"
        steps = json.loads(progress.read_text())["segment"] if progress.exists() else 0
        assert len(read_evaluations(out)) == 2 * steps
        assert steps > 0 or point == "compile"
    assert main(["run", "--out", str(out), *RUN]) == 0
    assert_same_run(out, reference)


def test_a_second_ctrl_c_stops_at_once_and_marks_the_summary(store, tmp_path):
    out = tmp_path / "run"
    process = _start(out, store)
    deadline = time.monotonic() + 300
    while not KILL_POINTS["compile"](out) and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"


def test_a_second_run_into_the_same_directory_is_refused(store, tmp_path, capsys):
    out = tmp_path / "run"
    long_run = [*RUN, "--online-steps", "100000"]  # still running when the second one starts
    first = _start(out, store, long_run)
    try:
        deadline = time.monotonic() + 300
        while not KILL_POINTS["compile"](out):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        # The second run, in this process (the lock is the run directory's, held by the
        # first process): no second JAX start while the first one computes.
        code = main(["run", "--out", str(out), *long_run])
        stderr = capsys.readouterr().err
        assert first.poll() is None, "the first run ended: the test proves nothing"
        assert code == 2
        assert f"is in use by another seqeval run (pid {first.pid} on " in stderr
        assert stderr.count("\n") == 1 and "Traceback" not in stderr
    finally:
        first.kill()
        first.wait()
    # The lock dies with its holder.
    run_dir = results.RunDir(out)
    run_dir.lock()
    run_dir.unlock()


# ---------------------------------------------------------------------------------------------
# In-process interruptions.


def test_interrupted_during_an_evaluation_resumes_every_file(store, tmp_path, monkeypatch,
                                                             reference):
    """The third evaluation fails after that chunk's prequential and training rows are
    written: they must be dropped, not kept beside their redone copies."""
    calls = {"n": 0}
    original = evaluate.Evaluator.evaluate

    def dies_on_third(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(evaluate.Evaluator, "evaluate", dies_on_third)
    assert main(["run", "--out", str(out), *RUN]) == 130
    assert len(read_evaluations(out)) == 4 and len(read_prequential(out)) == 6
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(evaluate.Evaluator, "evaluate", original)
    assert main(["run", "--out", str(out), *RUN]) == 0
    assert_same_run(out, reference)


def test_a_full_disk_stops_the_run_with_one_line_and_it_resumes(store, tmp_path, monkeypatch,
                                                                capsys, reference):
    calls = {"n": 0}
    original = results.CsvLog.append

    def disk_fills(self, columns, rows):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, columns, rows)

    out = tmp_path / "run"
    monkeypatch.setattr(results.CsvLog, "append", disk_fills)
    assert main(["run", "--out", str(out), *RUN]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "run the same command again" in err
    assert err.count("\n") == 1
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(results.CsvLog, "append", original)
    assert main(["run", "--out", str(out), *RUN]) == 0
    assert_same_run(out, reference)


def test_a_complete_run_started_again_changes_nothing(store, tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "summary.json").write_text("{ damaged")  # derived: rebuilt from the checkpoint
    # Temporary files of atomic writes cut short by a kill are removed.
    (out / ".summary.json.k1ll3d.tmp").write_text("{")
    (out / "checkpoint" / ".state-000006.npz.k1ll3d.tmp").write_bytes(b"PK")
    assert main(["run", "--out", str(out), *RUN]) == 0
    assert_same_run(out, reference)


# ---------------------------------------------------------------------------------------------
# Damaged run directories: one line, exit code 2, nothing changed.


def _inflate_cumulative(out: Path) -> None:
    with open(out / "prequential.csv", newline="") as handle:
        fields = list(csv.reader(handle))[3]
    fields[-1] = str(float(fields[-1]) + 300.0)
    _replace(out / "prequential.csv", 3, ",".join(fields) + "\r\n")


def _cut_evaluations(out: Path) -> None:
    lines = (out / "evaluations.csv").read_text().splitlines(keepends=True)
    (out / "evaluations.csv").write_text("".join(lines[:-4]))


DAMAGE = {
    "evaluations deleted": (lambda out: (out / "evaluations.csv").unlink(),
                            "evaluations.csv' is missing but the checkpoint accounts for 12"),
    "evaluations cut": (_cut_evaluations, "has 8 rows but the checkpoint accounts for 12"),
    "garbage row": (lambda out: _replace(out / "training.csv", 3, "9000,oops,0,offline,1.0\r\n"),
                    "training.csv' line 4: gradient_steps 'oops' is not an integer"),
    "short row": (lambda out: _replace(out / "prequential.csv", 2, "8500,0\r\n"),
                  "prequential.csv' line 3: 2 fields where the header has 5"),
    "chunk scored twice": (lambda out: _replace(out / "prequential.csv", 4, None),
                           "seed 0's chunk starts at 8500, not where its previous chunk ended"),
    "cumulative loss too high": (_inflate_cumulative,
                                 "is not the previous total plus action_mse x transitions"),
    "progress.json damaged": (lambda out: (out / "checkpoint/progress.json").write_text("{"),
                              "progress.json': it is not JSON"),
    "progress.json of another version": (
        lambda out: (out / "checkpoint/progress.json").write_text('{"segment": 3}'),
        "does not hold this version's progress fields"),
    "checkpoint arrays damaged": (
        lambda out: next((out / "checkpoint").glob("*.npz")).write_bytes(b"PK\x03\x04junk"),
        ".npz': it cannot be read"),
    "config.json damaged": (lambda out: (out / "config.json").write_text("[1, 2"),
                            "config.json': it is not a JSON object"),
    "config.json deleted": (lambda out: (out / "config.json").unlink(),
                            "holds files but no config.json"),
    "checkpoint state missing": (lambda out: _state_file(out).unlink(),
                                 "it cannot be read (FileNotFoundError)"),
    "evaluations garbage row": (
        lambda out: _replace(out / "evaluations.csv", 1, "x,1,0,-100,50,1.0,offline\r\n"),
        "evaluations.csv' line 2: samples 'x'"),
    "training short row": (lambda out: _replace(out / "training.csv", 1, "1,2\r\n"),
                           "training.csv' line 2:"),
    "checkpoint directory missing": (lambda out: shutil.rmtree(out / "checkpoint"),
                                     "holds no checkpoint"),
}

# `seqeval plot` and `seqeval report` over damaged logs: refused the same way, writing nothing.
PLOT = ["plot", "{out}", "--out", "{tmp}/fig.png"]
REPORT = ["report", "{out}", "--out", "{tmp}/report"]
READER_DAMAGE = {
    # 12 rows (2 seeds x 6 evaluations) after the header: the appended row is line 14.
    "plot garbage evaluations": (PLOT, lambda out: _append(out / "evaluations.csv", "1,2,3\r\n"),
                                 "evaluations.csv' line 14: 3 fields where the header has 7"),
    "plot garbage prequential": (PLOT, lambda out: _replace(out / "prequential.csv", 1,
                                                            "x,0,500,1,1\r\n"),
                                 "prequential.csv' line 2:"),
    "report garbage evaluations": (
        REPORT, lambda out: _replace(out / "evaluations.csv", 1, "9500,1,0,abc,50,1.0,offline\r\n"),
        "evaluations.csv' line 2: return 'abc' is not a number"),
    "report garbage training": (REPORT, lambda out: _replace(out / "training.csv", 0, "a,b\r\n"),
                                "training.csv' line 1: the header lacks"),
}


def _state_file(out: Path) -> Path:
    return next((out / "checkpoint").glob("state-*.npz"))


def _append(path: Path, text: str) -> None:
    with open(path, "a", newline="") as handle:
        handle.write(text)


def _replace(path: Path, line: int, text: str | None) -> None:
    """Replace data line `line` (1 = the first row), or duplicate the line before it."""
    with open(path, newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    lines[line] = lines[line - 1] if text is None else text
    with open(path, "w", newline="") as handle:
        handle.write("".join(lines))


def _refused_and_unchanged(out: Path, command: list[str], message: str, capsys) -> None:
    files = lambda: {p: p.read_bytes() for p in out.rglob("*") if p.is_file()
                     and p.name != "run.lock"}
    before = files()
    assert main(command) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("seqeval: error: ") and "Traceback" not in err
    assert files() == before


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_directory_stops_with_one_line(store, tmp_path, capsys, reference, damage):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    harm, message = DAMAGE[damage]
    harm(out)
    _refused_and_unchanged(out, ["run", "--out", str(out), *RUN], message, capsys)


@pytest.mark.parametrize("damage", list(READER_DAMAGE))
def test_plot_and_report_of_damaged_logs_stop_with_one_line(tmp_path, capsys, reference,
                                                            damage):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    command, harm, message = READER_DAMAGE[damage]
    harm(out)
    command = [arg.format(out=out, tmp=tmp_path) for arg in command]
    _refused_and_unchanged(out, command, message, capsys)
    assert not (tmp_path / "fig.png").exists() and not (tmp_path / "report").exists()


def test_readers_name_the_file_and_line_of_a_bad_row(reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    _replace(out / "evaluations.csv", 5, "9000,200,0,-1300,nan?,1.0,offline\r\n")
    with pytest.raises(UserError, match=r"evaluations.csv' line 6: normalized_score 'nan\?'"):
        read_evaluations(out)
    _replace(out / "training.csv", 1, "8500,50,0,sideways,0.5\r\n")
    with pytest.raises(UserError, match=r"training.csv' line 2: phase 'sideways'"):
        read_training(out)
    rows = read_prequential(reference)
    assert [r.samples for r in rows if r.seed == 0] == list(range(8000, 10_000, 500))
    totals = np.cumsum([r.losses["action_mse"] * r.transitions for r in rows if r.seed == 1])
    np.testing.assert_allclose([r.cumulative["action_mse"] for r in rows if r.seed == 1],
                               totals, rtol=1e-5)

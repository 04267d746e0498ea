"""A study run is what made its numbers: its key covers the whole agent config, the agent's
code (the modules it imports), seqeval's code that computes numbers, the dataset's content, the
seeds and the protocol; a re-run sweep re-runs a run whose code or defaults changed into a new
directory and marks the old one stale; reports read the current spec's runs. Also the sweep's
refusals (issue 21 items 1, 2 and 6)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import EXPERT, RANDOM

from seqeval.algorithms.checks import agent_code, agent_fingerprint, agent_source_files
from seqeval.algorithms.registry import get_agent
from seqeval.cli import main
from seqeval.errors import UserError
from seqeval.spec import MAX_RUNS, expand_spec
from seqeval.study import STALE, StudyDir, expand_run_dirs, standing

pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example_agent.py"
# The example agent with its loss moved into a module beside it.
HELPERS = "import jax.numpy as jnp\n\nSCALE = 1.0\n\n\ndef loss(predicted, actions):\n" \
          "    return SCALE * jnp.mean((predicted - actions) ** 2)\n"
# Tiny runs: 400 gradient steps from T0 = 9600 of 10,000 transitions, one evaluation.
TINY = """
[protocol]
initial_size = 9600
increment = 40
steps_per_increment = 40
eval_every = 400
eval_episodes = 1
batch_size = 32
no_prequential = true
"""


def _agent_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir()
    source = EXAMPLE.read_text()
    start = source.index("def loss(")
    end = source.index("def update(")
    (folder / "linear.py").write_text(source[:start].replace(
        "from seqeval.agents import", "from linear_helpers import loss\nfrom seqeval.agents import")
        + source[end:])
    (folder / "linear_helpers.py").write_text(HELPERS)
    return folder


def _sweep(spec: Path, out: Path, *args: str) -> int:
    return main(["sweep", str(spec), "--out", str(out), "--no-progress", *args])


def _state(out: Path) -> dict:
    return json.loads((out / "study.json").read_text())


def _one_line_refusal(capsys, message: str) -> None:
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------
# Identity (no Ray).


def test_a_builtin_agents_code_is_every_seqeval_module_it_imports():
    files, label = agent_source_files(get_agent("rebrac"))
    # ReBRAC takes TD3's machinery from td3_family; the networks and the interface count for it.
    assert {"seqeval.algorithms.rebrac", "seqeval.algorithms.td3_family",
            "seqeval.algorithms.nets",
            "seqeval.algorithms.base", "seqeval.algorithms.cpu_layers",
            "seqeval.errors"} <= set(files) and label == ""
    # what it does not import does not count
    assert not {"seqeval.algorithms.sac", "seqeval.algorithms.td3_bc"} & set(files)
    assert "seqeval.algorithms.sac" in agent_source_files(get_agent("cql"))[0]
    # Names, not paths: the same code hashes the same wherever it is installed.
    assert all(not name.startswith("/") for name in files)


def test_an_agent_file_imports_modules_beside_it_and_they_are_its_code(tmp_path):
    folder = _agent_folder(tmp_path)
    agent = get_agent(str(folder / "linear.py"))
    code = agent_code(agent)
    assert {"linear.py", "linear_helpers", "seqeval.agents", "seqeval.algorithms.nets"} <= set(code)
    before = agent_fingerprint(agent)
    (folder / "linear_helpers.py").write_text(HELPERS.replace("SCALE = 1.0", "SCALE = 2.0"))
    again = get_agent(str(folder / "linear.py"))  # the neighbour is read afresh
    assert agent_fingerprint(again) != before
    assert {k for k in code if agent_code(again)[k] != code[k]} == {"linear_helpers"}
    # Another agent folder with its own linear_helpers.py gets its own module, not the cached one.
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    (other / "linear_helpers.py").write_text(HELPERS.replace("SCALE = 1.0", "SCALE = 3.0"))
    third = get_agent(str(other / "linear.py"))
    assert agent_code(third)["linear_helpers"] != agent_code(again)["linear_helpers"]


def test_keys_are_full_hashes_of_the_whole_config_and_code(tmp_path):
    folder = _agent_folder(tmp_path)
    spec = {"study": {"agents": ["agents/linear.py", "bc"], "datasets": ["d/x-v0"]},
            "agent": {"linear_bc": {"learning_rate": [1e-2, 3e-3]}}}
    runs = expand_spec(spec, tmp_path)
    assert len(runs) == 3 and all(len(run.key) == 64 for run in runs)
    assert all(run.default_id.endswith(run.key) for run in runs)
    # Defaults are part of the identity, and so is the code.
    source = (folder / "linear.py").read_text()
    (folder / "linear.py").write_text(source.replace("exploration_noise: float = 0.1",
                                                     "exploration_noise: float = 0.2"))
    changed = expand_spec(spec, tmp_path)
    assert [r.slot for r in changed] == [r.slot for r in runs]  # the spec asks the same
    assert [r.key != s.key for r, s in zip(changed, runs, strict=True)] == [True, True, False]
    assert changed[0].agent_config["exploration_noise"] == 0.2

    # Two grid points that make one run are refused, not silently merged.
    spec["agent"]["linear_bc"]["learning_rate"] = [1e-2, 0.01]
    with pytest.raises(UserError, match="are the same run"):
        expand_spec(spec, tmp_path)


def test_a_grid_too_large_is_refused_with_its_count_before_it_is_expanded(tmp_path):
    values = list(range(1000))
    spec = {"study": {"agents": ["bc"], "datasets": ["d/x-v0"]},
            "protocol": {"seed": values, "increment": [v + 1 for v in values],
                         "eval_episodes": [v + 1 for v in values]}}
    began = time.monotonic()
    with pytest.raises(UserError, match=f"the grid has 1,000,000,000 runs, more than the "
                                        f"{MAX_RUNS:,}"):
        expand_spec(spec, tmp_path)
    assert time.monotonic() - began < 20


def test_merge_marks_superseded_runs_stale_and_dropped_runs_out_of_spec(tmp_path):
    study = StudyDir(tmp_path / "study")
    study.path.mkdir()
    spec = {"study": {"agents": ["bc"], "datasets": ["d/x-v0"]},
            "protocol": {"seed": [0, 1]}}
    state = {"runs": []}
    first = study.merge_plan(state, expand_spec(spec, tmp_path), tmp_path / "s.toml", "")
    # The agent's learning rate default changes (as a new version of bc would), seed 1 leaves.
    spec["protocol"]["seed"] = [0]
    plan = expand_spec(spec, tmp_path)
    import dataclasses

    plan = [dataclasses.replace(plan[0], agent_config={**plan[0].agent_config,
                                                       "learning_rate": 0.5})]
    planned = study.merge_plan(state, plan, tmp_path / "s.toml", "")
    assert [standing(r) for r in state["runs"]] == ["stale", "out_of_spec", "current"]
    old = state["runs"][0]
    assert old["superseded_by"] == planned[0]["id"] != first[0]["id"]
    assert old["stale_reason"].startswith("agent.learning_rate 0.001 -> 0.5")
    study.save(state)
    csv_rows = (study.path / "runs.csv").read_text().splitlines()
    assert len(csv_rows) == 2 and planned[0]["id"] in csv_rows[1]
    all_rows = (study.path / "runs_all.csv").read_text().splitlines()
    assert len(all_rows) == 4 and ",stale," in all_rows[1] and ",out_of_spec," in all_rows[2]


# ---------------------------------------------------------------------------------------------
# A real study whose code and defaults change between sweeps.


def test_changed_code_reruns_into_a_new_directory_and_reports_follow_the_spec(
        store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = _agent_folder(tmp_path)
    spec = tmp_path / "spec.toml"
    spec.write_text(f"[study]\nagents = ['agents/linear.py']\ndatasets = ['{EXPERT}']\n{TINY}")
    out = tmp_path / "study"
    assert _sweep(spec, out) == 0
    assert "compile seconds: first run" in capsys.readouterr().out
    [first] = _state(out)["runs"]
    first_dir = out / first["path"]
    first_files = {p: p.read_bytes() for p in first_dir.rglob("*") if p.is_file()}

    # Nothing changed: nothing runs, and no compile figures are shown for runs not run.
    assert _sweep(spec, out) == 0
    printed = capsys.readouterr().out
    assert "1 of 1 runs complete" in printed and "compile seconds" not in printed

    # A module the agent file imports changes: the run is made again, in a new directory.
    (folder / "linear_helpers.py").write_text(HELPERS.replace("SCALE = 1.0", "SCALE = 2.0"))
    assert _sweep(spec, out) == 0
    captured = capsys.readouterr()
    assert f"{first['path']} is stale (code of linear_helpers); re-run as" in captured.err
    assert "the folder holds 1 other runs" in captured.out
    old, new = _state(out)["runs"]
    assert (standing(old), standing(new)) == (STALE, "current")
    assert new["status"] == "complete" and new["path"] != old["path"]
    assert old["superseded_by"] == new["id"] and old["status"] == "complete"
    assert {p: p.read_bytes() for p in first_dir.rglob("*") if p.is_file()} == first_files
    assert (out / "runs.csv").read_text().count("\n") == 2  # header and the current run
    assert ",stale,code of linear_helpers," in (out / "runs_all.csv").read_text()

    # Reports read the current spec's runs, say what they leave out; --all-runs adds them.
    assert expand_run_dirs([out]) == [out / new["path"]]
    assert "also holds 1 runs left out (1 stale" in capsys.readouterr().err
    assert expand_run_dirs([out], all_runs=True) == [out / old["path"], out / new["path"]]

    # An agent default changes: a dry run shows the new run and the stale one, runs nothing.
    source = (folder / "linear.py").read_text()
    (folder / "linear.py").write_text(source.replace("exploration_noise: float = 0.1",
                                                     "exploration_noise: float = 0.2"))
    assert _sweep(spec, out, "--dry-run") == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "1 runs"
    assert captured.out.startswith("pending ")
    assert "is stale (agent.exploration_noise 0.1 -> 0.2; code of linear.py)" in captured.err
    assert len(_state(out)["runs"]) == 2  # a dry run writes nothing

    # study.json lost: the sweep rebuilds it from the spec and the run directories, and finds
    # the complete run of the spec (the default is put back) without running it again.
    (folder / "linear.py").write_text(source)
    (out / "study.json").unlink()
    assert main(["report", str(out), "--out", str(tmp_path / "r")]) == 2
    assert "has no study.json; rebuild it with 'seqeval sweep SPEC" in capsys.readouterr().err
    assert _sweep(spec, out) == 0
    captured = capsys.readouterr()
    assert "rebuilding it from the spec and its 2 run directories" in captured.err
    assert "1 of 1 runs complete" in captured.out and "compile seconds" not in captured.out
    runs = {r["path"]: r for r in _state(out)["runs"]}
    assert {path: (r["status"], standing(r)) for path, r in runs.items()} == {
        old["path"]: ("complete", "out_of_spec"), new["path"]: ("complete", "current")}
    assert runs[new["path"]]["results"]["final_score"] == new["results"]["final_score"]

    # A damaged study.json: the advice (move it away, rebuild from the spec) works.
    (out / "study.json").write_text("{ not json")
    assert _sweep(spec, out) == 2
    assert "move it away to rebuild the study from the spec" in capsys.readouterr().err
    (out / "study.json").rename(tmp_path / "damaged.json")
    assert _sweep(spec, out) == 0
    assert "1 of 1 runs complete" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Refusals: one line, exit 2, nothing left behind.


@pytest.mark.parametrize("args,message", [
    (["--cpus-per-run", "nan"], "--cpus-per-run nan is not a number of devices"),
    (["--gpus-per-run", "inf"], "--gpus-per-run inf is not a number of devices"),
    (["--address", "127.0.0.1:1"], "cannot reach a Ray cluster at '127.0.0.1:1'"),
    (["--cpus-per-run", "1000"], "--cpus-per-run 1000 is more than the Ray cluster's"),
    (["--gpus-per-run", "0.5"], "--gpus-per-run 0.5 but the Ray cluster has 0 GPUs"),
])
def test_refused_sweep_flags_leave_nothing_behind(store, tmp_path, capsys, monkeypatch, args,
                                                  message):
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = tmp_path / "spec.toml"
    spec.write_text(f"[study]\nagents = ['bc']\ndatasets = ['{RANDOM}']\n{TINY}")
    out = tmp_path / "study"
    if "1000" in args:  # an empty folder given as --out stays empty (refused before Ray starts)
        out.mkdir()
        assert _sweep(spec, out, *args) == 2
        _one_line_refusal(capsys, message)
        assert list(out.iterdir()) == []
        return  # (a refusal after Ray started with no folder: the GPU case)
    assert _sweep(spec, out, *args) == 2
    _one_line_refusal(capsys, message)
    assert not out.exists()


def _mount_tmpfs(path: Path, options: str) -> bool:
    """A tmpfs at `path` (root only); False where this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


def test_a_read_only_or_full_study_directory_is_refused_in_one_line(store, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(f"[study]\nagents = ['bc']\ndatasets = ['{RANDOM}']\n{TINY}")
    read_only = tmp_path / "read_only"
    if not _mount_tmpfs(read_only, "ro,size=1m"):
        if os.geteuid() == 0:
            pytest.skip("needs a read-only file system: mount is not permitted here")
        read_only.chmod(0o555)  # as a user, a folder without write permission
    try:
        assert _sweep(spec, read_only / "study") == 2
        _one_line_refusal(capsys, f"cannot write the study in '{read_only / 'study'}' (")
        assert not (read_only / "study").exists()
    finally:
        _unmount(read_only)

    full = tmp_path / "full"
    if not _mount_tmpfs(full, "size=64k"):
        pytest.skip("a full disk needs a small tmpfs (root)")
    try:
        filler = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(filler, b"x" * 4096)
        except OSError:
            pass  # the disk is full
        finally:
            os.close(filler)
        assert _sweep(spec, full / "study") == 2
        _one_line_refusal(capsys, "(No space left on device); free space or choose a writable")
        assert not (full / "study").exists()
    finally:
        _unmount(full)


@pytest.mark.slow  # two sweeps, one stopped by the full disk: about a minute
def test_a_disk_that_fills_up_under_the_driver_stops_it_in_one_line_and_it_resumes(
        store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=8m"):
        pytest.skip("a disk that fills up needs a small tmpfs (root)")
    try:
        spec = tmp_path / "spec.toml"
        spec.write_text(f"[study]\nagents = ['bc']\ndatasets = ['{RANDOM}']\n{TINY}")
        out = disk / "study"
        filled = threading.Event()

        def fill_the_disk_once_a_run_is_running() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                time.sleep(0.1)
                try:
                    runs = _state(out)["runs"]
                except (OSError, ValueError):
                    continue
                if runs and runs[0]["status"] == "running":
                    filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
                    try:
                        while True:
                            os.write(filler, b"x" * 65536)
                    except OSError:
                        pass  # the disk is full
                    finally:
                        os.close(filler)
                    filled.set()
                    return

        watcher = threading.Thread(target=fill_the_disk_once_a_run_is_running, daemon=True)
        watcher.start()
        assert _sweep(spec, out, "--no-compile-cache") == 2
        watcher.join(timeout=5)
        assert filled.is_set()
        _one_line_refusal(capsys, f"cannot write the study in '{out}' (No space left on "
                                  "device); free space")
        assert _state(out)["runs"][0]["status"] == "running"  # the last study.json, whole

        (disk / "filler").unlink()  # space again: the same command resumes and completes
        assert _sweep(spec, out, "--no-compile-cache") == 0
        assert _state(out)["runs"][0]["status"] == "complete"
    finally:
        _unmount(disk)


def test_a_run_of_a_study_made_before_code_was_fingerprinted_is_stale(tmp_path):
    """A format-1 study.json (8-digit keys, no code, no slot): its runs are superseded by
    the plan's runs with the same settings, and say why."""
    study = StudyDir(tmp_path / "study")
    spec = {"study": {"agents": ["bc"], "datasets": ["d/x-v0"]}}
    plan = expand_spec(spec, tmp_path)
    state = {"runs": []}
    [old] = study.merge_plan(state, plan, tmp_path / "s.toml", "")
    for key in ("slot", "code", "standing", "dataset_fingerprint"):
        del old[key]
    old.update(key=old["key"][:8], id="d-x-v0/bc_sequential_0123abcd",
               path="runs/d-x-v0/bc_sequential_0123abcd", status="complete")
    [new] = study.merge_plan(state, plan, tmp_path / "s.toml", "")
    assert new is not old and standing(old) == STALE and old["superseded_by"] == new["id"]
    assert old["stale_reason"] == ("code and data not recorded (made before seqeval "
                                   "fingerprinted them)")


# ---------------------------------------------------------------------------------------------
# The evaluator's own code (the modules that compute a run's numbers).

# seqeval modules a run imports whose code cannot change its numbers: orchestration, messages,
# settings a run records in full anyway. A new module must be put here or in
# checks.EVALUATOR_MODULES: which side it is on is a decision, not an accident.
NOT_NUMERIC = {
    "seqeval", "seqeval.envs", "seqeval.errors", "seqeval.fileio", "seqeval.memory",
    "seqeval.runner", "seqeval.settings", "seqeval.spec", "seqeval.stats", "seqeval.study",
    "seqeval.tracking",
}


def test_every_module_a_run_imports_is_evaluator_code_or_named_as_not_deciding_numbers():
    import seqeval.runner
    from seqeval.algorithms.checks import EVALUATOR_MODULES, _own_import_closure

    imported = {name for name in _own_import_closure(seqeval.runner)
                if not name.startswith("seqeval.algorithms")}  # agents' code: agent_code
    assert imported - set(EVALUATOR_MODULES) - NOT_NUMERIC == set()
    assert not set(EVALUATOR_MODULES) & NOT_NUMERIC


def test_evaluator_code_is_in_every_runs_code_and_a_change_to_it_makes_runs_stale(
        tmp_path, monkeypatch):
    from seqeval.algorithms import checks

    spec = {"study": {"agents": ["bc", "iql"], "datasets": ["d/x-v0"]}}
    plan = expand_spec(spec, tmp_path)
    evaluator = checks.evaluator_code()
    assert set(evaluator) == set(checks.EVALUATOR_MODULES)
    assert all(run.code.items() >= evaluator.items() for run in plan)
    study = StudyDir(tmp_path / "study")
    state = {"runs": []}
    first = study.merge_plan(state, plan, tmp_path / "s.toml", "")
    # seqeval's protocol changes (an upgrade, a fix): every run of the spec is made again.
    monkeypatch.setattr(checks, "evaluator_code",
                        lambda: {**evaluator, "seqeval.protocol": "0" * 64})
    again = study.merge_plan(state, expand_spec(spec, tmp_path), tmp_path / "s.toml", "")
    assert {r["id"] for r in again}.isdisjoint(r["id"] for r in first)
    old = [r for r in state["runs"] if standing(r) == STALE]
    assert len(old) == 2 and all(r["stale_reason"] == "code of seqeval.protocol" for r in old)


def test_a_run_of_a_study_made_before_the_evaluator_was_fingerprinted_says_so(tmp_path):
    from seqeval.algorithms.checks import EVALUATOR_MODULES

    study = StudyDir(tmp_path / "study")
    plan = expand_spec({"study": {"agents": ["bc"], "datasets": ["d/x-v0"]}}, tmp_path)
    state = {"runs": []}
    [old] = study.merge_plan(state, plan, tmp_path / "s.toml", "")
    old["code"] = {k: v for k, v in old["code"].items() if k not in EVALUATOR_MODULES}
    old["key"] = "f" * 64  # its key was the hash of that record
    [new] = study.merge_plan(state, plan, tmp_path / "s.toml", "")
    assert standing(old) == STALE and old["superseded_by"] == new["id"]
    assert old["stale_reason"] == ("evaluator code not recorded (made before seqeval "
                                   "fingerprinted it)")

"""Studies: spec expansion, bad specs, and sweeps on a local Ray (2 CPUs, tiny Pendulum runs)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    DIVERGING_AGENT,
    EXPERT,
    RANDOM,
    SEQEVAL,
    TINY_STUDY_EVALUATIONS,
    TINY_STUDY_SPEC,
)

from seqeval.cli import main
from seqeval.errors import UserError
from seqeval.spec import expand_spec, read_spec
from seqeval.study import expand_run_dirs

# Ray starts its processes (and the kill test its driver) by fork + exec, which runs no Python
# in the child, so JAX's warning about forking a multithreaded process does not apply.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")

# Tiny runs: 400 gradient steps (40 per 40 transitions) from T0 = 9600 of 10,000 transitions,
# one evaluation (2 episodes) at the end.
TINY = """
[protocol]
initial_size = 9600
increment = 40
steps_per_increment = 40
eval_every = 400
eval_episodes = 2
batch_size = 64
no_prequential = true
[agent]
hidden_dims = [32, 32]
"""


def _spec(tmp_path: Path, study: str, extra: str = TINY, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(f"[study]\n{study}\n{extra}")
    return path


def _sweep(spec: Path, out: Path, *args: str, progress: bool = False) -> int:
    return main(["sweep", str(spec), "--out", str(out), *args]
                + ([] if progress else ["--no-progress"]))


def _descendants(pid: int) -> list[int]:
    """Processes started by `pid`, at any depth (Linux /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit():
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _state(out: Path) -> dict:
    return json.loads((out / "study.json").read_text())


# ---------------------------------------------------------------------------------------------
# Spec expansion (no Ray, no data).


def test_grid_expands_to_the_cartesian_product_with_labels_and_stable_paths(tmp_path):
    spec = {
        "study": {"agents": ["bc", "iql"], "datasets": ["d/one-v0", "d/a-v0,d/b-v0"],
                  "seeds": 3, "mode": ["sequential", "full"]},
        "protocol": {"increment": [10, 20], "eval_every": 4000},
        "agent": {"iql": {"expectile": [0.7, 0.9], "beta": [0.5, 3.0]},
                  "bc": {"learning_rate": 3e-4}},
    }
    runs = expand_spec(spec, tmp_path)
    # datasets x modes x increments x (bc: 1 + iql: 2 x 2)
    assert len(runs) == 2 * 2 * 2 * (1 + 4)
    assert len({r.key for r in runs}) == len(runs) == len({r.default_id for r in runs})
    labels = {r.label for r in runs}
    assert "iql increment=20 expectile=0.9 beta=0.5" in labels
    assert "bc increment=10" in labels  # bc's learning rate is set, not a grid axis
    iql = next(r for r in runs if r.label == "iql increment=20 expectile=0.9 beta=0.5"
               and r.mode == "full" and r.dataset == "d/a-v0,d/b-v0")
    assert iql.default_id == ("d-a-v0+d-b-v0/iql_increment=20_expectile=0.9_beta=0.5_"
                              f"full_{iql.key}")
    assert iql.num_seeds == 3
    # Only what differs from the defaults defines a run (eval_every 4000 is not the default).
    assert iql.protocol == {"increment": 20, "eval_every": 4000}
    assert iql.agent_settings == {"expectile": 0.9, "beta": 0.5}
    settings = iql.run_settings(tmp_path / "run")
    assert (settings.agent, settings.mode, settings.num_seeds, settings.increment) == (
        "iql", "full", 3, 20)
    assert dict(settings.agent_overrides) == {"expectile": "0.9", "beta": "0.5"}
    assert settings.progress is False

    # The same run under an edited spec keeps its key: extending a grid adds runs only.
    spec["agent"]["iql"]["expectile"] = [0.7, 0.9, 0.99]
    extended = {r.key for r in expand_spec(spec, tmp_path)}
    assert {r.key for r in runs} < extended and len(extended) == len(runs) + 2 * 2 * 2 * 2


def test_modes_by_agent(tmp_path):
    # A full-data baseline for one agent only: the others stay sequential.
    spec = {"study": {"agents": ["bc", "td3_bc", "iql"], "datasets": ["d/one-v0", "d/two-v0"],
                      "mode": {"td3_bc": ["sequential", "full"], "iql": "retrain"}}}
    runs = expand_spec(spec, tmp_path)
    assert sorted((r.dataset, r.agent_name, r.mode) for r in runs) == sorted(
        (d, a, m) for d in ("d/one-v0", "d/two-v0")
        for a, m in (("bc", "sequential"), ("td3_bc", "sequential"), ("td3_bc", "full"),
                     ("iql", "retrain")))
    spec["study"]["mode"] = {"cql": "full"}
    with pytest.raises(UserError, match=r"^\[study\] mode: 'cql' names no agent of \[study\] "
                                        r"agents \(bc, td3_bc, iql\); add it"):
        expand_spec(spec, tmp_path)
    spec["study"]["mode"] = {"bc": 3}
    with pytest.raises(UserError, match=r"^\[study\] mode bc: expected a mode or a list"):
        expand_spec(spec, tmp_path)


def test_shared_agent_settings_defaults_and_agent_files(tmp_path):
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "diverging.py").write_text(DIVERGING_AGENT)
    spec = {"study": {"agents": ["td3_bc", "agents/diverging.py:AGENT"],
                      "datasets": ["d/x-v0"]},
            "protocol": {"no_prequential": True, "seed": [0, 5]},
            "agent": {"hidden_dims": [64, 64], "diverging": {"blow_up_after": 5}}}
    runs = expand_spec(spec, tmp_path)
    assert len(runs) == 4
    td3 = [r for r in runs if r.agent_name == "td3_bc"]
    # [agent] hidden_dims sizes every network of an agent without a `hidden_dims` field.
    assert td3[0].agent_settings == {"actor_hidden_dims": [64, 64],
                                     "critic_hidden_dims": [64, 64]}
    assert td3[0].protocol == {"prequential": False}  # seed 0 is the default
    assert td3[1].protocol == {"prequential": False, "seed": 5}
    assert [r.label for r in td3] == ["td3_bc seed=0", "td3_bc seed=5"]
    diverging = next(r for r in runs if r.agent_name == "diverging")
    # An agent file is found relative to the spec; the run gets its absolute path.
    assert diverging.agent == f"{(tmp_path / 'agents' / 'diverging.py').resolve()}:AGENT"
    assert diverging.agent_settings == {"blow_up_after": 5}


def test_a_shared_agent_setting_sets_the_same_thing_in_every_agent_or_is_refused(tmp_path):
    from seqeval.errors import UserError

    # [agent] keys apply to every agent of the study, and a setting's name means one thing in
    # every agent that has it (tests/test_agents.py): TD3's smoothing noise in both here.
    spec = {"study": {"agents": ["td3_bc", "rebrac"], "datasets": ["d/x-v0"]},
            "agent": {"policy_noise": 0.3, "tau": [0.01, 0.02]}}
    runs = expand_spec(spec, tmp_path)
    assert [(r.agent_name, r.agent_settings["policy_noise"], r.agent_settings["tau"])
            for r in runs] == [("td3_bc", 0.3, 0.01), ("td3_bc", 0.3, 0.02),
                               ("rebrac", 0.3, 0.01), ("rebrac", 0.3, 0.02)]
    # An agent without the setting refuses it, rather than run without what was asked.
    spec["study"]["agents"].append("sac")
    with pytest.raises(UserError, match=r"^\[agent\] policy_noise: agent 'sac' has no setting "
                                        r"'policy_noise'; its settings are: "):
        expand_spec(spec, tmp_path)


def test_runs_start_in_an_order_where_neighbours_compile_different_programs(tmp_path):
    from seqeval.study import StudyDir
    from seqeval.sweep import compile_friendly_order

    spec = {"study": {"agents": ["bc", "td3_bc"], "datasets": ["d/x-v0", "d/y-v0"]},
            "protocol": {"seed": [0, 1]}}
    plan = expand_spec(spec, tmp_path)
    records = StudyDir(tmp_path).merge_plan({"runs": []}, plan, tmp_path / "s.toml", "")
    assert [(r["dataset"][2], r["agent_name"], r["full_protocol"]["seed"]) for r in records] \
        == [(d, a, s) for d in "xy" for a in ("bc", "td3_bc") for s in (0, 1)]
    ordered = compile_friendly_order(records)
    assert sorted(map(id, ordered)) == sorted(map(id, records))
    # Two at a time, every pair holds both agents: a run of the same programs starts only
    # after another has started (and, with two slots, usually finished) compiling them.
    assert [r["agent_name"] for r in ordered] == ["bc", "td3_bc"] * 4
    assert [r["full_protocol"]["seed"] for r in ordered[:4]] == [0, 0, 1, 1]


@pytest.mark.parametrize("spec,message", [
    ("[study]\nagents = ['bc']\n", "[study] has no datasets; add e.g. datasets ="),
    (f"[study]\nagents = ['nope']\ndatasets = ['{EXPERT}']\n",
     "[study] agents: unknown agent 'nope'; choose one of"),
    ("[study]\nagents = ['bc']\ndatasets = ['test/missing-v0']\n",
     "[study] datasets: unknown dataset 'test/missing-v0'"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\nsed = 3\n",
     "[study] sed: unknown key; [study] takes agents, datasets, seeds, mode"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\n[protocol]\neval_evry = 10\n",
     "[protocol] eval_evry: not a `seqeval run` setting; did you mean eval_every?"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\n[protocol]\nincrement = 'ten'\n",
     "[protocol] increment: expected an integer, got 'ten'; write e.g. increment = 10"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\n[protocol]\nseeds = 3\n",
     "[protocol] seeds: set it in [study]"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\n[protocol]\neval_workers = 4\n",
     "[protocol] eval_workers: a sweep steps each run's evaluation in --cpus-per-run processes"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\n[agent.bc]\nnonsense = [1, 2]\n",
     "[agent.bc] nonsense: agent 'bc' has no setting 'nonsense'"),
    # A renamed setting's old name, in an agent's table or in [agent] (whichever agent comes
    # first): refused with the new name.
    (f"[study]\nagents = ['iql']\ndatasets = ['{EXPERT}']\n[agent.iql]\ntemperature = [0.5, 3]\n",
     "[agent.iql] temperature: agent 'iql' has no setting 'temperature': it is now 'beta'"),
    (f"[study]\nagents = ['bc', 'iql']\ndatasets = ['{EXPERT}']\n[agent]\ntemperature = 0.5\n",
     "[agent] temperature: agent 'iql' has no setting 'temperature': it is now 'beta'"),
    (f"[study]\nagents = ['sac', 'td3_bc']\ndatasets = ['{EXPERT}']\n[agent]\nalpha = 1.0\n",
     "[agent] alpha: agent 'td3_bc' has no setting 'alpha': it is now 'actor_q_coef'"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\n[agent.bc]\nlearning_rate = 'fast'\n",
     "[agent.bc] learning_rate: agent 'bc': --agent.learning_rate expects float, got 'fast'"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\n[agent.iql]\nexpectile = 0.9\n",
     "[agent.iql] names no agent of [study] agents (bc)"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\nmode = ['sequential', 'fast']\n",
     "bc on test/pendulum-expert-v0 (fast): mode fast is unknown; choose one of"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}', '{RANDOM}']\n[protocol]\n"
     "initial_size = [2000, 20000]\n",
     "bc initial_size=20000 on test/pendulum-expert-v0 (sequential): initial_size 20000 is "
     "not smaller than the dataset"),
    ("[study\nagents = ['bc']\n", "is not valid TOML"),
    (f"[study]\nagents = ['bc']\ndatasets = ['{EXPERT}']\n[sweep]\nx = 1\n",
     "spec: unknown table [sweep]"),
])
def test_bad_specs_exit_2_with_one_line_before_anything_runs(store, tmp_path, capsys, spec,
                                                              message):
    path = tmp_path / "spec.toml"
    path.write_text(spec)
    out = tmp_path / "study"
    assert _sweep(path, out) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # nothing was created, let alone run


def test_run_environment_sets_the_xla_thread_pool_before_jax_starts(tmp_path):
    """The variables a run's worker gets size XLA:CPU's intra-op pool (counted by name)."""
    from seqeval.worker import run_environment

    script = ("import jax.numpy as jnp\n"
              "from seqeval.worker import xla_cpu_threads\n"
              "x = jnp.ones((512, 512)); (x @ x).block_until_ready()\n"
              "print(xla_cpu_threads())\n")
    counts = {}
    for cpus in (1, 3):
        env = {**os.environ, **run_environment(cpus, 0)}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, check=True)
        counts[cpus] = int(result.stdout.split()[-1])
    assert counts == {1: 1, 3: 3}
    gpu_share = run_environment(1, 0.25, environ={})
    assert gpu_share["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert float(gpu_share["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.225)
    assert "JAX_PLATFORMS" not in gpu_share
    assert run_environment(2, 0, environ={})["JAX_PLATFORMS"] == "cpu"


# ---------------------------------------------------------------------------------------------
# Sweeps on a local Ray.


def test_sweep_completes_then_report_and_plot(tiny_study, tmp_path):
    """The session's tiny study (helpers.TINY_STUDY_SPEC: three configurations, two seeds)."""
    out = tiny_study.path
    assert "3 of 3 runs complete" in tiny_study.printed
    assert tiny_study.home_files == []  # Ray's files (session, token) are not in the home dir
    state = _state(out)
    assert [r["status"] for r in state["runs"]] == ["complete"] * 3
    for record in state["runs"]:
        summary = json.loads((out / record["path"] / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["samples"] == 10_000
        assert record["attempts"] == 1 and record["compile_seconds"] > 0
        assert record["xla_threads"] == 1  # one CPU per run: XLA's pool has one thread
        assert (out / "logs").is_dir()

    import pandas as pd

    table = pd.read_csv(out / "runs.csv")
    assert list(table["dataset"]) == [EXPERT] * 3 and set(table["status"]) == {"complete"}
    assert list(table["agent.actor_q_coef"]) == [0.1, 2.5, 10.0]
    assert table["auc"].notna().all()
    # [agent] hidden_dims sizes both of TD3+BC's networks.
    assert (table["agent.actor_hidden_dims"] == "32,32").all()
    assert (table["agent.critic_hidden_dims"] == "32,32").all()
    # Each run's final score is the mean over its seeds of the last evaluation's score.
    for record, final_score in zip(state["runs"], table["final_score"], strict=True):
        last = pd.read_csv(out / record["path"] / "evaluations.csv")
        last = last[last["samples"] == last["samples"].max()]
        assert len(last) == 2 and final_score == pytest.approx(
            last["normalized_score"].mean(), rel=1e-4, abs=1e-3)

    assert [p.name for p in expand_run_dirs([out])] == [Path(r["path"]).name
                                                        for r in state["runs"]]
    assert main(["report", str(out), "--out", str(tmp_path / "report"), "--reps", "200",
                 "--no-figures"]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert EXPERT in report and "actor_q_coef=2.5" in report
    assert main(["plot", str(out), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_a_diverging_run_fails_alone_and_is_retried_once_per_sweep(store, tmp_path, capsys):
    (tmp_path / "diverging.py").write_text(DIVERGING_AGENT)
    out = tmp_path / "study"
    spec = _spec(tmp_path, f"agents = ['bc', 'diverging.py:AGENT']\ndatasets = ['{EXPERT}']")
    assert _sweep(spec, out, progress=True) == 1
    captured = capsys.readouterr()
    assert "1 of 2 runs complete" in captured.out
    assert "1 of 2 runs did not complete" in captured.err and "diverged" in captured.err
    # One study-level bar: runs done of total, in flight, failed (no per-run bars).
    bar = captured.err.replace("\r", "\n").splitlines()
    assert any(line.startswith("study: 100%") and "2/2" in line and "failed 1" in line
               for line in bar), captured.err
    log = (out / "logs" / (_state(out)["runs"][0]["id"].replace("/", "__") + ".log"))
    assert "seqeval sweep: complete" in log.read_text()
    assert "(sequential): " not in log.read_text()  # a run's own bar would start so
    bc, diverging = _state(out)["runs"]
    assert bc["status"] == "complete"
    assert diverging["status"] == "failed"
    assert diverging["reason"].startswith("diverged: training diverged (non-finite loss)")
    assert "\n" not in diverging["reason"]

    # Run again: the failed run gets one more attempt, the complete one is left alone.
    assert _sweep(spec, out) == 1
    bc, diverging = _state(out)["runs"]
    assert (bc["attempts"], diverging["attempts"]) == (1, 2)
    assert diverging["status"] == "failed"


def test_a_larger_spec_adds_runs_and_a_killed_driver_loses_no_finished_run(
        store, tiny_study, tmp_path, capsys):
    """A larger spec into (a copy of) the session's study: the two new runs (two more
    actor_q_coef values) are added, the finished runs are untouched, a second driver is refused,
    and the driver killed after a new run finished loses nothing when the sweep runs again."""
    out = tmp_path / "study"
    shutil.copytree(tiny_study.path, out)
    old = {r["id"]: (out / r["path"] / "evaluations.csv").stat().st_mtime_ns
           for r in _state(out)["runs"]}
    spec = tmp_path / "bigger.toml"
    spec.write_text(TINY_STUDY_SPEC.replace("[0.1, 2.5, 10.0]", "[0.1, 2.5, 10.0, 1.0, 5.0]"))
    command = [SEQEVAL, "sweep", str(spec), "--out", str(out), "--max-parallel", "1",
               "--no-progress"]
    driver = subprocess.Popen(command, env={**os.environ, "MINARI_DATASETS_PATH": str(store)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finished = None
    try:
        deadline = time.monotonic() + 240
        refused = False
        while finished is None and time.monotonic() < deadline:
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.2)
            try:
                runs = [r for r in _state(out)["runs"] if r["id"] not in old]
            except (OSError, ValueError):
                continue
            if not refused and any(r["status"] == "running" for r in runs):
                # A second driver on the same study is refused while the first holds it.
                assert _sweep(spec, out) == 2
                assert "is in use by another seqeval sweep (pid" in capsys.readouterr().err
                refused = True
            finished = next((r for r in runs if r["status"] == "complete"), None)
        assert finished is not None, "no run finished in time"
        ray_processes = _descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stdout.close()
    # The workers die with the driver; two of Ray's helper processes linger for a minute or two
    # before noticing. Stop them here so the test leaves nothing behind.
    for pid in ray_processes:
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("ray::"):
                os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass  # gone already
    files = sorted((out / finished["path"]).rglob("*"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files if p.is_file()}

    assert _sweep(spec, out) == 0
    state = _state(out)
    assert len(state["runs"]) == 5 and [r["status"] for r in state["runs"]] == ["complete"] * 5
    for record in state["runs"][:3]:  # the first sweep's runs: not run again
        assert record["id"] in old and record["attempts"] == 1
        assert (out / record["path"] / "evaluations.csv").stat().st_mtime_ns == \
            old[record["id"]]
    again = next(r for r in state["runs"] if r["id"] == finished["id"])
    assert again["attempts"] == 1  # not run again
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files if p.is_file()}
    assert after == before
    # The study's compilation cache (copied with it) serves the runs of the sweep run again.
    assert max(r["cache_hits"] for r in state["runs"][3:]) > 10
    # Every new run has each evaluation once per seed, whether resumed or started afresh.
    for record in state["runs"][3:]:
        rows = (out / record["path"] / "evaluations.csv").read_text().splitlines()[1:]
        assert sorted(row.split(",")[:3] for row in rows) == sorted(
            [str(samples), str((samples - 8500) // 25 * 10), str(seed)]
            for samples in TINY_STUDY_EVALUATIONS for seed in (0, 1)), rows
    assert len((out / "runs.csv").read_text().splitlines()) == 1 + 5


def test_dry_run_lists_the_runs_and_creates_nothing(store, tmp_path, capsys):
    spec = _spec(tmp_path, f"agents = ['bc']\ndatasets = ['{EXPERT}']\nmode = ['sequential', "
                           "'retrain']")
    assert _sweep(spec, tmp_path / "study", "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "2 runs"
    assert all(line.startswith("pending   runs/test-pendulum-expert-v0/bc_") for line in lines[:2])
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("args,message", [
    (["--address", "127.0.0.1:1"], "cannot reach a Ray cluster at '127.0.0.1:1'"),
    (["--cpus-per-run", "0"], "--cpus-per-run must be more than 0"),
    (["--gpus-per-run", "1.5"], "--gpus-per-run 1.5: above 1 GPU, give a whole number"),
    (["--max-parallel", "0"], "--max-parallel must be at least 1"),
])
def test_bad_sweep_flags_exit_2(store, tmp_path, capsys, args, message):
    spec = _spec(tmp_path, f"agents = ['bc']\ndatasets = ['{EXPERT}']")
    assert _sweep(spec, tmp_path / "study", *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_study_spec_file_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.toml"), "--out", str(tmp_path / "s")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    spec = _spec(tmp_path, "agents = ['bc']\ndatasets = ['x']")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "file"), "--out", str(tmp_path / "r")]) == 2
    assert read_spec(spec)["study"]["agents"] == ["bc"]

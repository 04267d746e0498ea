"""The command line as a user runs it: files produced, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DIVERGING_AGENT, EXPERT, RANDOM

from seqeval.cli import main

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--initial-size", "2000", "--increment", "20", "--steps-per-increment", "2",
         "--eval-every", "4000", "--eval-episodes", "2", "--batch-size", "64",
         "--agent.hidden_dims", "32,32", "--no-progress"]


def test_run_then_plot_through_the_installed_command(store, tmp_path):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(store)}
    run_dir = tmp_path / "run"
    result = subprocess.run(
        ["seqeval", "run", "--agent", "bc", "--dataset", EXPERT, "--out", str(run_dir),
         "--seeds", "2", *SMALL],
        env=env, capture_output=True, text=True, check=False,
        executable=os.path.join(os.path.dirname(sys.executable), "seqeval"),
    )
    assert result.returncode == 0, result.stderr
    assert "final normalized score" in result.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent_config"]["hidden_dims"] == [32, 32]
    assert config["agent"] == config["agent_name"] == "bc"
    assert config["protocol"]["seeds"] == [0, 1]
    lines = (run_dir / "evaluations.csv").read_text().splitlines()
    assert lines[0] == "samples,gradient_steps,seed,return,normalized_score,wall_time,phase"
    assert len(lines) == 1 + 2 * 3  # evaluations at 4000, 8000, 10000 for 2 seeds
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"

    figure = tmp_path / "curve.png"
    assert main(["plot", str(run_dir), "--out", str(figure)]) == 0
    assert figure.stat().st_size > 10_000 and figure.with_suffix(".pdf").is_file()


def _run(args, tmp_path):
    return main(["run", "--out", str(tmp_path / "out"), *args])


@pytest.mark.parametrize("args,message", [
    (["--agent", "nope", "--dataset", EXPERT], "unknown agent 'nope'; choose one of"),
    (["--agent", "bc", "--dataset", "test/missing-v0"], "unknown dataset 'test/missing-v0'"),
    (["--agent", "bc", "--dataset", EXPERT, "--initial-size", "20000"],
     "--initial-size 20000 is not smaller than the dataset"),
    (["--agent", "bc", "--dataset", EXPERT, "--increment", "0"], "--increment must be at least 1"),
    (["--agent", "bc", "--dataset", EXPERT, "--eval-episodes", "0"],
     "--eval-episodes must be at least 1"),
    (["--agent", "bc", "--dataset", EXPERT, "--agent.nonsense", "1"], "has no setting 'nonsense'"),
    (["--agent", "bc", "--dataset", EXPERT, "--agent.learning_rate", "fast"],
     "expects float, got 'fast'"),
    (["--agent", "bc", "--dataset", EXPERT, "--bogus"], "unrecognised argument '--bogus'"),
    (["--agent", "missing.py:AGENT", "--dataset", EXPERT],
     "agent file 'missing.py' does not exist"),
    (["--agent", "bc", "--dataset", EXPERT, "--mode", "full", "--window", "1000"],
     "full mode has all the data from the start; drop --window"),
    (["--agent", "bc", "--dataset", EXPERT, "--ref-scores=-inf,0"],
     "argument --ref-scores: MIN,MAX must be finite numbers, got '-inf,0'"),
    (["--agent", "bc", "--dataset", EXPERT, "--ref-scores", "-150,-1200"],
     "MIN must be below MAX"),
    (["--agent", "bc", "--dataset", EXPERT, "--mode", "sequentail"],
     "argument --mode: invalid choice: 'sequentail'"),
    (["--agent", "bc", "--dataset", EXPERT, "--sizes", ","], "expected N1,N2,... (integers)"),
])
def test_bad_input_is_one_line_and_exit_code_2(store, tmp_path, capsys, args, message):
    assert _run(args, tmp_path) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_run_flags_come_from_run_settings_and_show_their_defaults(capsys):
    import dataclasses

    from seqeval.runner import RunSettings
    from seqeval.settings import MODES, run_flag

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(RunSettings):
        if field.name != "agent_overrides":  # --agent.KEY VALUE
            assert run_flag(field.name) in text, field.name
    assert "--seeds N seeds SEED, SEED+1, ... trained together in one program (default: 1)" \
        in text
    assert "(default: 5000)" in text and "(default: min(5000, N/10))" in text
    assert "{" + ",".join(MODES) + "}" in text

def test_rerun_over_a_different_run_is_refused(store, tmp_path, capsys):
    assert _run(["--agent", "bc", "--dataset", RANDOM, *SMALL], tmp_path) == 0
    assert _run(["--agent", "bc", "--dataset", EXPERT, *SMALL], tmp_path) == 2
    assert "holds a run with a different config" in capsys.readouterr().err


def test_a_run_started_under_a_renamed_setting_is_refused_with_its_new_name(store, tmp_path,
                                                                           capsys):
    # An earlier seqeval's IQL run: its config.json names beta 'temperature'. Its agent code
    # differs too, so it cannot be resumed: refused (not mapped), before any data is read.
    from seqeval.agents import config_to_dict, get_agent

    agent_config = config_to_dict(get_agent("iql").make_config())
    agent_config["temperature"] = agent_config.pop("beta")
    config = tmp_path / "out" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"agent": "iql", "agent_name": "iql", "dataset": EXPERT,
                                  "agent_config": agent_config}))
    before = config.read_bytes()
    assert _run(["--agent", "iql", "--dataset", EXPERT, "--agent.beta", "3", "--no-progress"],
                tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (f"seqeval: error: '{tmp_path / 'out'}' was started with iql's setting "
            "'temperature', since renamed 'beta', by an earlier seqeval") in err
    assert "start fresh with another --out" in err
    assert [p.name for p in config.parent.iterdir()] == ["config.json"]
    assert config.read_bytes() == before


def test_divergence_is_detected_and_reported(store, tmp_path, capsys):
    agent_file = tmp_path / "diverging.py"
    agent_file.write_text(DIVERGING_AGENT)
    args = ["--agent", f"{agent_file}:AGENT", "--dataset", EXPERT, "--initial-size", "1000",
            "--eval-every", "1000", "--eval-episodes", "1", "--no-progress", "--increment", "10"]
    assert _run(args, tmp_path) == 1
    assert "diverged" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "config.json").read_text())["agent_name"] == \
        "diverging"  # the Agent's name, not the file spec
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # 30 good steps fit in the first chunk (2000 samples = 100 steps): it diverges there.
    assert summary["status"] == "diverged" and summary["samples"] == 2000
    assert not (tmp_path / "out" / "evaluations.csv").exists()


def test_dataset_without_reference_scores_reports_returns_or_takes_ref_scores(
        store, tmp_path, capsys):
    from pendulum_data import make_pendulum_dataset

    from seqeval.results import read_evaluations

    make_pendulum_dataset("test/pendulum-norefs-v0", episodes=12, expert_fraction=1.0,
                          reference_scores=False)
    common = ["--agent", "bc", "--dataset", "test/pendulum-norefs-v0", *SMALL,
              "--initial-size", "1000", "--eval-every", "1000"]
    assert main(["run", "--out", str(tmp_path / "raw"), *common]) == 0
    assert capsys.readouterr().err.count("has no reference scores") == 1
    raw = read_evaluations(tmp_path / "raw")
    assert raw and all(r["normalized_score"] is None and r["return"] < 0 for r in raw)
    assert main(["plot", str(tmp_path / "raw"), "--out", str(tmp_path / "raw.png")]) == 0

    # A negative first value is a value, not a flag.
    assert main(["run", "--out", str(tmp_path / "ref"), *common,
                 "--ref-scores", "-1200,-150"]) == 0
    scored = read_evaluations(tmp_path / "ref")
    for row in scored:
        expected = 100 * (row["return"] + 1200) / (-150 + 1200)
        assert abs(row["normalized_score"] - expected) < 1e-3 * max(1.0, abs(expected))


def test_runs_from_a_directory_holding_its_own_algorithms_and_envs(store, tmp_path):
    """A research repo (CORL has `algorithms/`) must not shadow seqeval's own modules."""
    for package in ("algorithms", "envs"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(
            f"raise ImportError('the user repo {package} package was imported')\n")
    env = {**os.environ, "MINARI_DATASETS_PATH": str(store), "PYTHONPATH": str(tmp_path)}
    seqeval = os.path.join(os.path.dirname(sys.executable), "seqeval")
    result = subprocess.run(
        [seqeval, "run", "--agent", "bc", "--dataset", EXPERT, "--out", "run", *SMALL],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    agents = subprocess.run([seqeval, "agents"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, check=False)
    assert agents.returncode == 0 and "td3_bc" in agents.stdout, agents.stderr
    datasets = subprocess.run([seqeval, "datasets", "list"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=False)
    assert datasets.returncode == 0, datasets.stderr


def test_batch_size_defaults_to_the_agents_own_and_resume_refuses_changed_agent_code(
        store, tmp_path, capsys):
    source = (REPO / "docs" / "example_agent.py").read_text()
    agent_file = tmp_path / "linear_bc.py"
    agent_file.write_text(source.replace('    description="linear behavioural cloning',
                                         '    default_batch_size=48,\n'
                                         '    description="linear behavioural cloning'))
    args = ["--agent", str(agent_file), "--dataset", EXPERT, "--initial-size", "8000",
            "--increment", "100", "--eval-every", "10000", "--eval-episodes", "1",
            "--no-progress"]
    assert _run(args, tmp_path) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["protocol"]["batch_size"] == 48  # the agent's, no --batch-size given
    assert config["agent_name"] == "linear_bc" and len(config["agent_fingerprint"]) >= 12
    assert _run([*args, "--batch-size", "32"], tmp_path) == 2  # a different config
    capsys.readouterr()

    # The same command after the agent's code changed: refused, saying why and what to do.
    agent_file.write_text(agent_file.read_text() + "\n# a later edit\n")
    assert _run(args, tmp_path) == 2
    err = capsys.readouterr().err
    assert "was started with other code of agent 'linear_bc'" in err and "--out" in err
    assert err.count("\n") == 1

    # The same agent, but the run was started by other seqeval code (its modules that compute
    # the numbers), or by a seqeval that did not record it: refused as well.
    agent_file.write_text(agent_file.read_text().replace("\n# a later edit\n", ""))
    config_path = tmp_path / "out" / "config.json"
    for recorded in ("0123456789abcdef", None):
        changed = {**config, "evaluator_fingerprint": recorded}
        if recorded is None:
            del changed["evaluator_fingerprint"]
        config_path.write_text(json.dumps(changed))
        assert _run(args, tmp_path) == 2
        err = capsys.readouterr().err
        assert "was started by other seqeval code" in err and "--out" in err, err
        assert ("0123456789abcdef" if recorded else "not recorded by that seqeval") in err
        assert err.count("\n") == 1
    config_path.write_text(json.dumps(config))
    assert _run(args, tmp_path) == 0  # its own code again: the complete run stands

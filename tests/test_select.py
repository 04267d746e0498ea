"""`seqeval select`: criteria from hand-made run directories, the ranking statistics against
scipy and hand-computed values, checkpoint selection, and the command on a tiny real study."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from helpers import (
    SPACES,
    identity_stats,
    read_csv,
    run_updates,
    small_config,
    synthetic_batch,
    write_run,
)

from seqeval import select, stats
from seqeval.cli import main
from seqeval.runs import load_groups

EVALS = [5_000, 10_000, 15_000, 20_000]
CHUNK = 5_000  # the prequential chunks start at the first three evaluations


def prequential_csv(seeds: dict[int, dict[str, list[float]]]) -> str:
    """prequential.csv as the engine writes it: per seed, chunks of CHUNK transitions starting
    at EVALS[:-1], each metric's mean per transition and its running sum."""
    names = sorted(next(iter(seeds.values())))
    lines = [",".join(["samples", "seed", "transitions",
                       *(c for n in names for c in (n, f"{n}_cumulative"))])]
    for seed, metrics in seeds.items():
        totals = dict.fromkeys(names, 0.0)
        for chunk, start in enumerate(EVALS[:-1]):
            cells = [str(start), str(seed), str(CHUNK)]
            for name in names:
                totals[name] += metrics[name][chunk] * CHUNK
                cells += [f"{metrics[name][chunk]:.6g}", f"{totals[name]:.6g}"]
            lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def training_csv(seeds: dict[int, dict[str, list[float]]]) -> str:
    """training.csv: per seed, a row at each evaluation (the chunk that ended there)."""
    names = sorted(next(iter(seeds.values())))
    lines = [",".join(["samples", "gradient_steps", "seed", "phase", *names])]
    for seed, metrics in seeds.items():
        for i, samples in enumerate(EVALS):
            lines.append(",".join([str(samples), str(samples), str(seed), "offline",
                                   *(f"{metrics[n][i]:.6g}" for n in names)]))
    return "\n".join(lines) + "\n"


# Four configurations (actor_q_coef 0..3) of td3_bc on one dataset, two seeds each. The final
# score rises with it; the action loss falls with it (it ranks exactly as the truth), the TD error
# rises with it (exactly backwards), and Q orders the configurations 1 > 3 > 2 > 0.
TRUTH = {0: 20.0, 1: 40.0, 2: 60.0, 3: 80.0}
NOISE = {0: -15.0, 1: 15.0}  # per seed, its sign alternating with alpha: resampled means of
# neighbouring configurations cross (a noise shared by all configurations would not)
Q = {0: 1.0, 1: 4.0, 2: 2.0, 3: 3.0}


def action_mse(alpha: int, seed: int) -> list[float]:
    return [(4 - alpha) * 0.1 * f * (1.0 + 0.1 * seed) for f in (1.0, 0.5, 0.25)]


@pytest.fixture
def study(tmp_path) -> list[Path]:
    dirs = []
    for alpha in range(4):
        seeds = {s: [TRUTH[alpha] / 2, TRUTH[alpha] * 0.8, TRUTH[alpha] * 0.9,
                     TRUTH[alpha] + NOISE[s] * (-1) ** alpha] for s in (0, 1)}
        metrics = {s: {"action_mse": action_mse(alpha, s), "td_error": [1.0 + alpha] * 3,
                       "q_value": [Q[alpha] + 0.5 * s] * 3} for s in (0, 1)}
        run = write_run(tmp_path / f"alpha{alpha}", "td3_bc", "d/a-v0", seeds,
                        agent_config={"actor_q_coef": alpha}, prequential=prequential_csv(metrics))
        # A training loss that mirrors each seed's own final score exactly.
        (run / "training.csv").write_text(training_csv(
            {s: {"critic_loss": [100.0 - seeds[s][-1]] * 4, "alpha_value": [1.0] * 4}
             for s in (0, 1)}))
        dirs.append(run)
    return dirs


def test_criteria_are_computed_from_the_recorded_rows(study):
    cells, notes = select.build_cells(load_groups(study)[0])
    (cell,) = cells
    assert notes == ["td3_bc (sequential) on d/a-v0: alpha_value has no direction (the agent's "
                     "Agent.metrics), so no criterion"]
    assert [c.label for c in cell.configurations] == [f"actor_q_coef={a}" for a in range(4)]
    by_name = {c.name: c for c in cell.criteria}
    # Every recorded prequential metric gives two criteria; training metrics with a direction
    # declared by the agent (td3_bc.METRICS) one; an undeclared one is left out.
    assert sorted(by_name) == ["action_mse_dl", "action_mse_last", "q_value_last",
                               "q_value_mean", "td_error_dl", "td_error_last",
                               "train_critic_loss"]
    assert by_name["q_value_mean"].higher_is_better
    assert not by_name["action_mse_dl"].higher_is_better
    assert by_name["q_value_mean"].direction == "higher is better"
    alpha1 = cell.configurations[1]
    # Description length: the sum of the loss over every scored transition.
    np.testing.assert_allclose(alpha1.values(by_name["action_mse_dl"]),
                               [sum(action_mse(1, s)) * CHUNK for s in (0, 1)], rtol=1e-5)
    np.testing.assert_allclose(alpha1.values(by_name["action_mse_last"]),
                               [action_mse(1, s)[-1] for s in (0, 1)], rtol=1e-5)
    np.testing.assert_allclose(alpha1.values(by_name["q_value_mean"]), [4.0, 4.5], rtol=1e-6)
    np.testing.assert_allclose(alpha1.values(by_name["train_critic_loss"]), [45.0, 75.0])
    np.testing.assert_allclose(alpha1.truth("final"), [55.0, 25.0])


def test_rankings_correlations_and_regrets_match_hand_computed_values(study):
    (cell,) = select.build_cells(load_groups(study)[0])[0]
    selections = {(s.criterion.name, s.truth): s
                  for s in select.select_configurations(cell, reps=500, seed=1)}
    truth = np.array([TRUTH[a] for a in range(4)])  # seed noise cancels in the mean

    exact = selections[("action_mse_dl", "final")]
    assert exact.spearman.point == pytest.approx(1.0)
    assert exact.kendall.point == pytest.approx(1.0)
    assert exact.regret.point == pytest.approx(0.0)
    assert exact.picked == exact.best == 3 and exact.pick_rank == 1
    # The random pick's expected regret: 80 - mean(20, 40, 60, 80).
    assert exact.random_regret.point == pytest.approx(30.0)

    backwards = selections[("td_error_dl", "final")]
    assert backwards.spearman.point == pytest.approx(-1.0)
    assert backwards.kendall.point == pytest.approx(-1.0)
    assert backwards.regret.point == pytest.approx(60.0)  # picked alpha 0: 80 - 20
    assert backwards.pick_rank == 4

    q = selections[("q_value_mean", "final")]
    q_means = np.array([Q[a] + 0.25 for a in range(4)])
    assert q.spearman.point == pytest.approx(scipy.stats.spearmanr(q_means, truth).statistic)
    assert q.kendall.point == pytest.approx(scipy.stats.kendalltau(q_means, truth).statistic)
    assert q.spearman.point == pytest.approx(0.4)  # ranks (1,4,2,3) vs (1,2,3,4)
    assert q.kendall.point == pytest.approx(1 / 3)  # 4 concordant, 2 discordant pairs
    assert q.regret.point == pytest.approx(80.0 - 40.0)  # picked alpha 1
    assert q.pick_rank == 3

    # Resampling the seeds moves the truth's means across each other (seed noise +-15 around
    # gaps of 20), so a criterion that ranks the means exactly still has an interval...
    assert exact.spearman.low < 0.9 and exact.spearman.high == 1.0
    # ...but each seed's criterion is paired with its own truth in every resample: a loss
    # that mirrors each seed's score keeps the exact ordering in every resample.
    mirror = selections[("train_critic_loss", "final")]
    assert (mirror.spearman.low, mirror.spearman.high) == (1.0, 1.0)
    assert (mirror.kendall.low, mirror.kendall.high) == (1.0, 1.0)
    # The AUC (report.summarise_seed's) is a second truth with the same ordering here.
    assert selections[("action_mse_dl", "auc")].spearman.point == pytest.approx(1.0)


def test_rank_statistics_agree_with_scipy_on_ties_and_batches():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(50, 7)).astype(float)  # many ties
    y = rng.integers(0, 5, size=(50, 7)).astype(float)
    rho, tau = stats.spearman(x, y), stats.kendall_tau_b(x, y)
    for i in range(50):
        if np.ptp(x[i]) == 0 or np.ptp(y[i]) == 0:
            assert math.isnan(rho[i]) and math.isnan(tau[i])
            continue
        assert rho[i] == pytest.approx(scipy.stats.spearmanr(x[i], y[i]).statistic)
        assert tau[i] == pytest.approx(scipy.stats.kendalltau(x[i], y[i]).statistic)
    # A non-finite criterion ranks last and is compared like any other value.
    assert stats.spearman(np.array([1.0, -np.inf, 3.0]), np.array([2.0, 1.0, 3.0])) == 1.0
    assert stats.kendall_tau_b(np.array([-np.inf, -np.inf, 3.0]),
                                np.array([1.0, 2.0, 3.0])) == pytest.approx(
        scipy.stats.kendalltau([0, 0, 3], [1, 2, 3]).statistic)


def test_regret_of_a_tied_pick_is_the_mean_over_the_tie():
    truth = np.array([10.0, 30.0, 50.0, 20.0])
    assert stats.pick_regret(np.array([1.0, 3.0, 2.0, 3.0]), truth) == pytest.approx(
        50.0 - (30.0 + 20.0) / 2)
    assert stats.pick_regret(np.array([0.0, 0.0, 9.0, 0.0]), truth) == 0.0
    assert stats.random_regret(truth) == pytest.approx(50.0 - 27.5)
    batch = stats.pick_regret(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([[5.0, 7.0],
                                                                             [5.0, 7.0]]))
    np.testing.assert_allclose(batch, [0.0, 2.0])


def test_seeds_are_resampled_together_when_every_configuration_ran_the_same_seeds():
    rng = np.random.default_rng(0)
    shared = select.seed_draws([[0, 1, 2], [0, 1, 2]], 100, rng)
    np.testing.assert_array_equal(shared[0], shared[1])
    assert shared[0].shape == (100, 3) and set(np.unique(shared[0])) == {0, 1, 2}
    own = select.seed_draws([[0, 1, 2], [0, 1]], 100, rng)
    assert own[0].shape == (100, 3) and own[1].shape == (100, 2)
    assert own[1].max() == 1


def test_a_criterion_blind_to_a_setting_stays_tied_in_every_resample(tmp_path):
    # Two configurations whose criterion is the same per seed (as IQL's critic is the same for
    # two actor learning rates): the tie at the top holds in every resample, so the regret's
    # interval is the tie's expected regret alone.
    runs = []
    for rate, scores in ((1, {0: [10, 20, 30, 40], 1: [10, 20, 30, 60]}),
                         (2, {0: [10, 20, 30, 80], 1: [10, 20, 30, 20]})):
        losses = {s: {"td_error": [0.5 + s] * 3} for s in (0, 1)}
        runs.append(write_run(tmp_path / f"r{rate}", "iql", "d/a-v0", scores,
                              agent_config={"actor_learning_rate": rate},
                              prequential=prequential_csv(losses)))
    (cell,) = select.build_cells(load_groups(runs)[0])[0]
    (td,) = [s for s in select.select_configurations(cell, reps=300, seed=0)
             if s.criterion.name == "td_error_dl" and s.truth == "final"]
    assert td.tied == 2
    assert td.regret.point == pytest.approx(0.0)  # both configurations average 50
    # Every resample: the tie picks both, regret max(a, b) - (a + b) / 2 = |a - b| / 2, with
    # a, b the two configurations' resampled means; seed 0 alone gives |40 - 80| / 2 = 20.
    assert td.regret.high == pytest.approx(20.0)
    assert math.isnan(td.spearman.point)


def test_checkpoints_are_scored_on_the_chunk_after_each_evaluation(tmp_path):
    # Seed 0 peaks at 10k, where the next chunk's loss is lowest: picked, no regret. Seed 1
    # peaks at 15k but its lowest next-chunk loss is at 10k: regret 90 - 60.
    scores = {0: [50.0, 80.0, 60.0, 70.0], 1: [50.0, 60.0, 90.0, 70.0]}
    losses = {0: {"action_mse": [0.5, 0.2, 0.4]}, 1: {"action_mse": [0.3, 0.2, 0.4]}}
    runs = [write_run(tmp_path / f"c{alpha}", "td3_bc", "d/a-v0", scores,
                      agent_config={"actor_q_coef": alpha}, prequential=prequential_csv(losses))
            for alpha in (1, 2)]
    (cell,) = select.build_cells(load_groups(runs)[0])[0]
    (mse,) = cell.checkpoint_criteria
    assert mse.name == "action_mse_next"
    record = cell.configurations[0].seeds[0]
    # The evaluation at 20k (the full-data model) has no next chunk, so no score.
    assert record.checkpoint_values(mse) == pytest.approx({5000: 0.5, 10000: 0.2, 15000: 0.4})
    # Random: a uniformly random candidate (5k, 10k, 15k), not any evaluation point.
    assert select.run_checkpoint_regrets(record, mse) == pytest.approx(
        (0.0, 10.0, 80.0 - 190.0 / 3, True, 1.0, 3))
    (result,) = select.select_checkpoints(cell)
    assert result.runs == 4 and result.candidates == 3.0 and result.configurations == 2
    assert result.regret.point == pytest.approx((0.0 + 30.0) / 2)
    assert result.final_regret.point == pytest.approx((10.0 + 20.0) / 2)
    assert result.random_regret.point == pytest.approx((80.0 - 190.0 / 3 + 90.0 - 200.0 / 3)
                                                       / 2)
    assert result.hit_rate == 0.5
    # Within-run Spearman: +1 for seed 0; ranks (2, 3, 1) against (1, 2, 3) for seed 1: -0.5.
    assert result.spearman.point == pytest.approx((1.0 - 0.5) / 2)


def test_command_writes_its_files_and_refuses_bad_input(study, tmp_path, capsys):
    out = tmp_path / "selection"
    assert main(["select", *map(str, study), "--out", str(out), "--reps", "200"]) == 0
    printed = capsys.readouterr().out
    assert "action_mse_dl" in printed and f"selection: {out / 'selection.md'}" in printed
    rows = read_csv(out / "selection.csv")
    assert len(rows) == 7 * 2  # criteria x truths
    row = next(r for r in rows if r["criterion"] == "td_error_dl" and r["truth"] == "final")
    assert (row["direction"], row["picked"], row["best"]) == ("lower is better",
                                                              "actor_q_coef=0",
                                                              "actor_q_coef=3")
    assert float(row["regret"]) == pytest.approx(60.0)
    assert len(read_csv(out / "configurations.csv")) == 4
    assert {r["criterion"] for r in read_csv(out / "checkpoints.csv")} == {
        "action_mse_next", "q_value_next", "td_error_next", "train_critic_loss"}
    markdown = (out / "selection.md").read_text()
    assert "## Which criterion to trust" in markdown and "![selection](selection.png)" in markdown
    assert (out / "selection.png").stat().st_size > 10_000 and (out / "selection.pdf").exists()

    # One criterion: only its rows, and a figure of it alone; a second run leaves no stale files.
    assert main(["select", *map(str, study), "--out", str(out), "--reps", "50",
                 "--criterion", "q_value_mean", "--no-figures"]) == 0
    assert {r["criterion"] for r in read_csv(out / "selection.csv")} == {"q_value_mean"}
    assert not (out / "selection.png").exists()
    capsys.readouterr()

    assert main(["select", str(study[0]), "--criterion", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no agent has two configurations" in err and err.count("\n") == 1
    assert main(["select", *map(str, study), "--criterion", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--criterion nope: not recorded by these runs; choose from action_mse_dl" in err
    assert main(["select", *map(str, study), "--reps", "0", "--out", str(out)]) == 2
    assert "--reps 0" in capsys.readouterr().err
    assert main(["select", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "'" + str(tmp_path / "missing") + "' does not exist" in err and err.count("\n") == 1


def write_study(path: Path, runs: dict[str, str]) -> Path:
    """A study directory's study.json as `seqeval sweep` keeps it: run path -> status."""
    path.mkdir(parents=True, exist_ok=True)
    records = [{"id": p, "path": p, "key": p, "status": status} for p, status in runs.items()]
    (path / "study.json").write_text(json.dumps({"format": 1, "runs": records}))
    return path


def test_a_study_selects_its_complete_runs_and_says_how_many_it_left_out(study, tmp_path,
                                                                         capsys):
    # The hand-made runs are the complete runs of a study (they live in tmp_path); one more is
    # still running and one is pending: left out, and the command says so.
    statuses = {d.name: "complete" for d in study} | {"r5": "running", "r6": "pending"}
    root = write_study(tmp_path, statuses)
    out = tmp_path / "selection"
    assert main(["select", str(root), "--out", str(out), "--reps", "50", "--no-figures"]) == 0
    note = (f"study '{root}': 2 of 6 runs are not complete (1 pending, 1 running) and are left "
            "out")
    assert note in capsys.readouterr().out
    assert note in (out / "selection.md").read_text()
    assert len(read_csv(out / "configurations.csv")) == 4

    nothing = write_study(tmp_path / "new", {"a": "pending", "b": "running"})
    assert main(["select", str(nothing)]) == 2
    err = capsys.readouterr().err
    assert "has no complete runs yet" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["td3_bc", "iql"])
def test_q_value_on_dataset_actions_follows_the_reward(name):
    """Trained on rewards shifted up by one, the critic predicts higher Q of the same actions."""
    import jax

    agent, config = small_config(name)
    batch = synthetic_batch(jax.random.PRNGKey(0))
    q = {}
    for shift in (0.0, 1.0):
        shifted = batch._replace(rewards=batch.rewards + shift)
        state = agent.init(config, jax.random.PRNGKey(1), SPACES, identity_stats(), 300)
        state, _ = run_updates(agent, config, state, shifted, 300)
        q[shift] = float(agent.score(config, state, shifted)["q_value"])
    assert q[1.0] > q[0.0] + 0.5, q


# ---------------------------------------------------------------------------------------------
# The session's tiny real study (three TD3+BC configurations swept on a local Ray), selected.


def test_select_on_a_tiny_real_study(tiny_study, tmp_path, capsys):
    study = tmp_path / "study"
    shutil.copytree(tiny_study.path, study)  # `select` writes into the study directory
    assert main(["select", str(study), "--reps", "300"]) == 0
    printed = capsys.readouterr().out
    out = study / "selection"
    assert f"selection: {out / 'selection.md'}" in printed

    # The criteria are the runs' own prequential rows, summed (full precision: the CSVs keep
    # 6 digits, which can tie configurations whose description lengths differ in the 7th).
    configurations = read_csv(out / "configurations.csv")
    assert sorted(r["configuration"] for r in configurations) == [
        "actor_q_coef=0.1", "actor_q_coef=10.0", "actor_q_coef=2.5"]
    run_dirs = {"actor_q_coef={}".format(
        json.loads((d / "config.json").read_text())["agent_config"]["actor_q_coef"]): d
        for d in (study / "runs").glob("*/*")}
    result = select.run_selection([study], reps=300)
    (cell,) = result.cells
    labels = [c.label for c in cell.configurations]
    recorded: dict[str, list[float]] = {"td_error_dl": [], "q_value_mean": []}
    for label in labels:
        with open(run_dirs[label] / "prequential.csv", newline="") as handle:
            chunks = list(csv.DictReader(handle))
        assert {int(c["samples"]) for c in chunks} == {8500, 9000, 9500}
        per_seed = {seed: [c for c in chunks if c["seed"] == seed] for seed in ("0", "1")}
        recorded["td_error_dl"].append(np.mean([
            sum(float(c["td_error"]) * int(c["transitions"]) for c in rows)
            for rows in per_seed.values()]))
        recorded["q_value_mean"].append(np.mean([
            sum(float(c["q_value"]) * int(c["transitions"]) for c in rows)
            / sum(int(c["transitions"]) for c in rows) for rows in per_seed.values()]))
    final = np.array([float(r["final"]) for r in sorted(
        configurations, key=lambda r: labels.index(r["configuration"]))])

    # Correlations and regrets follow from those means (scipy as the reference).
    for name, sign in (("td_error_dl", -1.0), ("q_value_mean", 1.0)):
        (s,) = [s for s in result.configurations
                if s.criterion.name == name and s.truth == "final"]
        np.testing.assert_allclose(s.criterion_means, recorded[name], rtol=1e-4)
        np.testing.assert_allclose(s.truth_means, final, rtol=1e-5, atol=1e-4)
        oriented = sign * s.criterion_means
        assert s.spearman.point == pytest.approx(
            scipy.stats.spearmanr(oriented, s.truth_means).statistic, abs=1e-9)
        assert s.kendall.point == pytest.approx(
            scipy.stats.kendalltau(oriented, s.truth_means).statistic, abs=1e-9)
        truth = s.truth_means
        assert s.regret.point == pytest.approx(truth.max() - truth[np.argmax(oriented)])
        assert s.random_regret.point == pytest.approx(truth.max() - truth.mean())
        (row,) = [r for r in read_csv(out / "selection.csv")
                  if r["criterion"] == name and r["truth"] == "final"]
        assert float(row["regret"]) == pytest.approx(s.regret.point, abs=1e-3)
    checkpoints = {r["criterion"]: r for r in read_csv(out / "checkpoints.csv")}
    assert int(checkpoints["td_error_next"]["runs"]) == 6  # 3 configurations x 2 seeds
    # Evaluations at 9k, 9.5k and 10k; the chunks after the first two score them (the chunk
    # at 8.5k scores the untrained agent), the training rows all three.
    assert float(checkpoints["td_error_next"]["candidates"]) == 2.0
    assert float(checkpoints["train_critic_loss"]["candidates"]) == 3.0
    assert (out / "selection.png").stat().st_size > 10_000


def test_a_running_sum_that_crosses_zero_reads_back(tmp_path):
    """q_value changes sign over a run, so its running sum can come near zero while each term
    is large; 6-digit rounding of the terms must not make the file look damaged (a real study's
    row: -15204.54 + 17.1090 x 1000 = 1904.46)."""
    from seqeval.results import read_prequential

    (tmp_path / "prequential.csv").write_text(
        "samples,seed,transitions,q_value,q_value_cumulative\n"
        "5000,0,1000,-15.2045,-15204.5\n"
        "6000,0,1000,17.109,1904.46\n")
    assert [r.cumulative["q_value"] for r in read_prequential(tmp_path)] == [-15204.5, 1904.46]


@pytest.mark.parametrize("agent, undirected", [("cql", "alpha_loss"),
                                               ("sac", "alpha_loss")])
def test_a_loss_without_a_direction_is_no_criterion(tmp_path, agent, undirected):
    scores = {0: [50.0, 60.0, 70.0, 80.0]}
    runs = []
    for alpha in (1, 2):
        run = write_run(tmp_path / f"c{alpha}", agent, "d/a-v0", scores,
                        agent_config={"initial_alpha": alpha})
        (run / "training.csv").write_text(training_csv(
            {0: {"critic_loss": [1.0, 0.5, 0.4, 0.3], undirected: [0.1, -0.2, 0.3, -0.4]}}))
        runs.append(run)
    (cell,), notes = select.build_cells(load_groups(runs)[0])
    assert [c.name for c in cell.criteria] == ["train_critic_loss"]
    assert [c.name for c in cell.checkpoint_criteria] == ["train_critic_loss"]
    assert any(f"{undirected} has no direction" in note for note in notes)


def test_checkpoint_baselines_use_only_the_points_a_criterion_can_pick(tmp_path):
    # The full-data model (20k) is the best point but has no next chunk: the pick (10k, the
    # lowest loss) is the best candidate, and keeping the final model beats every candidate.
    scores = {0: [50.0, 60.0, 55.0, 95.0]}
    losses = {0: {"action_mse": [0.5, 0.2, 0.4]}}
    runs = [write_run(tmp_path / f"c{alpha}", "td3_bc", "d/a-v0", scores,
                      agent_config={"actor_q_coef": alpha}, prequential=prequential_csv(losses))
            for alpha in (1, 2)]
    (cell,) = select.build_cells(load_groups(runs)[0])[0]
    (mse,) = cell.checkpoint_criteria
    record = cell.configurations[0].seeds[0]
    assert select.run_checkpoint_regrets(record, mse) == pytest.approx(
        (0.0, 60.0 - 95.0, 60.0 - 55.0, True, 1.0, 3))


def test_checkpoint_intervals_take_configurations_as_units(tmp_path):
    # Regrets per run: configuration 1 seeds 0, 0 (pick = best); configuration 2: 30, 10.
    losses = {0: {"action_mse": [0.5, 0.2, 0.4]}, 1: {"action_mse": [0.3, 0.2, 0.4]}}
    scores = {1: {0: [50.0, 80.0, 60.0, 70.0], 1: [50.0, 80.0, 60.0, 70.0]},
              2: {0: [50.0, 60.0, 90.0, 70.0], 1: [50.0, 70.0, 80.0, 70.0]}}
    runs = [write_run(tmp_path / f"c{alpha}", "td3_bc", "d/a-v0", scores[alpha],
                      agent_config={"actor_q_coef": alpha}, prequential=prequential_csv(losses))
            for alpha in (1, 2)]
    (cell,) = select.build_cells(load_groups(runs)[0])[0]
    (result,) = select.select_checkpoints(cell)
    assert result.runs == 4 and result.configurations == 2
    # Configuration means 0 and 20: mean 10, t interval with one degree of freedom.
    half = scipy.stats.t.ppf(0.975, 1) * np.std([0.0, 20.0], ddof=1) / math.sqrt(2)
    assert result.regret.point == pytest.approx(10.0)
    assert (result.regret.low, result.regret.high) == pytest.approx((10.0 - half, 10.0 + half))

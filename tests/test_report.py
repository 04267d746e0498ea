"""`seqeval report` on hand-made run directories, its figures, and on real runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import read_csv, write_run

from seqeval import cli, report, stats
from seqeval.errors import UserError
from seqeval.runs import is_cumulative, load_groups


def non_white_fraction(png: Path) -> float:
    import matplotlib.image

    image = matplotlib.image.imread(png)[..., :3]
    return float(np.mean(np.any(image < 0.95, axis=-1)))


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    """Two agents on two datasets; iql's seeds are split over two run dirs (pooled)."""
    base = tmp_path / "runs"
    return [
        write_run(base / "bc-a", "bc", "d/a-v0", {0: [50, 55, 60, 60], 1: [40, 50, 60, 70]}),
        write_run(base / "iql-a-0", "iql", "d/a-v0", {0: [20, 60, 80, 90]}),
        write_run(base / "iql-a-1", "iql", "d/a-v0", {1: [30, 70, 90, 100]}),
        write_run(base / "bc-b", "bc", "d/b-v0", {0: [10, 20, 30, 30], 1: [10, 10, 20, 40]}),
        write_run(base / "iql-b", "iql", "d/b-v0", {0: [0, 40, 80, 120], 1: [0, 20, 40, 50]}),
    ]


def test_per_dataset_table_pools_run_dirs_and_matches_hand_computation(runs, tmp_path):
    out = tmp_path / "report"
    paths = report.make_report(runs, out, reps=2000, figures=False)
    assert out / "report.md" in paths
    rows = {(r["dataset"], r["agent"]): r for r in read_csv(out / "per_dataset.csv")}
    assert set(rows) == {("d/a-v0", "bc"), ("d/a-v0", "iql"), ("d/b-v0", "bc"),
                         ("d/b-v0", "iql")}
    iql_a = rows[("d/a-v0", "iql")]
    assert iql_a["seeds"] == "2" and iql_a["scale"] == "normalized"  # two dirs pooled
    # final: seeds 90 and 100 -> mean 95, t interval 95 +- 12.706 * 7.071 / sqrt(2)
    assert float(iql_a["final_mean"]) == pytest.approx(95.0)
    assert float(iql_a["final_ci_high"]) == pytest.approx(95 + 12.7062 * 5.0, rel=1e-4)
    # AUC of seed 0 (20, 60, 80, 90 at 5k..20k, held at 20 on [0, 5k]):
    # (5k*20 + 5k*40 + 5k*70 + 5k*85) / 20k = 53.75; seed 1: (30+50+80+95)/4 = 63.75
    assert float(iql_a["auc_mean"]) == pytest.approx((53.75 + 63.75) / 2)
    # samples to 90%: seed 0 target 81 (80 at 15k falls short) -> 20k; seed 1 target 90 -> 15k
    assert float(iql_a["samples_to_90_mean"]) == pytest.approx(17_500)
    bc_b = rows[("d/b-v0", "bc")]
    # seed 0 final 30 -> target 27 -> 15k; seed 1 final 40 -> target 36 -> 20k
    assert float(bc_b["samples_to_90_mean"]) == pytest.approx(17_500)
    assert bc_b["final_online_mean"] == ""  # no online phase


def test_aggregates_and_improvement_match_stats_on_the_seed_matrix(runs, tmp_path):
    out = tmp_path / "report"
    report.make_report(runs, out, reps=3000, seed=5, figures=False)
    aggregates = {(r["agent"], r["measure"], r["aggregate"]): r
                  for r in read_csv(out / "aggregates.csv")}
    iql_final = np.array([[90.0, 120.0], [100.0, 50.0]])  # seeds x datasets (a, b)
    bc_final = np.array([[60.0, 30.0], [70.0, 40.0]])
    expected = stats.aggregate_intervals(iql_final, reps=3000, seed=5)
    for name, interval in expected.items():
        row = aggregates[("iql", "final", name)]
        assert float(row["estimate"]) == pytest.approx(interval.point, rel=1e-5)
        assert float(row["ci_low"]) == pytest.approx(interval.low, rel=1e-5)
        assert float(row["ci_high"]) == pytest.approx(interval.high, rel=1e-5)
    assert float(aggregates[("iql", "final", "optimality_gap")]["estimate"]) == (
        pytest.approx(100 - (90 + 100 + 100 + 50) / 4))
    assert ("bc", "auc", "iqm") in aggregates
    rows = {r["measure"]: r for r in read_csv(out / "probability_of_improvement.csv")}
    # Pairs are stated better-first by final score: iql > bc.
    row = rows["final"]
    assert (row["agent_x"], row["agent_y"], row["datasets"]) == ("iql", "bc", "2")
    # d/a: iql {90, 100} vs bc {60, 70} -> 1; d/b: iql {120, 50} vs bc {30, 40} -> 1
    assert float(row["probability_x_better"]) == pytest.approx(
        stats.probability_of_improvement(iql_final, bc_final))
    assert float(row["probability_x_better"]) == pytest.approx(1.0)
    # AUC (held at the first score on [0, 5k], trapezoids after), same orientation:
    # d/a iql 53.75, 63.75 vs bc (50+52.5+57.5+60)/4 = 55, (40+45+55+65)/4 = 51.25 -> 3/4;
    # d/b iql (0+20+60+100)/4 = 45, (0+10+30+45)/4 = 21.25 vs bc 20, 16.25 -> 1.
    row = rows["auc"]
    assert (row["agent_x"], row["agent_y"]) == ("iql", "bc")
    assert float(row["probability_x_better"]) == pytest.approx(0.875)
    # The flipped interval is the interval of 1 - P(bc > iql).
    flipped = stats.probability_of_improvement_interval(bc_final, iql_final, reps=3000, seed=5)
    assert float(rows["final"]["ci_low"]) == pytest.approx(1 - flipped.high, abs=1e-6)
    text = (out / "report.md").read_text()
    assert "## Across datasets" in text and "Probability of improvement" in text
    assert "| d/a-v0 | iql | normalized | 2 | 95.0 [" in text


def test_report_writes_figures_that_are_not_blank(runs, tmp_path):
    out = tmp_path / "report"
    paths = report.make_report(runs, out, reps=500)
    for stem in ("curves", "aggregates", "probability_of_improvement"):
        png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
        assert png in paths and pdf in paths
        assert pdf.stat().st_size > 1000
        assert non_white_fraction(png) > 0.02, stem
        assert f"![{stem}]({stem}.png)" in (out / "report.md").read_text()


def test_curves_figure_uses_paper_sizes(runs, tmp_path):
    import matplotlib.image

    from seqeval.figures import curves_figure

    groups, _ = load_groups(runs)
    png, _ = curves_figure(groups, tmp_path / "c")
    height, width = matplotlib.image.imread(png).shape[:2]
    # two dataset panels at ~3.3 in each, 300 dpi, cropped tight
    assert 1500 < width < 2300 and height > 500


def test_without_reference_scores_reports_raw_returns_with_a_note(tmp_path):
    runs = [
        write_run(tmp_path / "bc", "bc", "custom/x-v0", {0: [100, 200, 300, 400]}, ref=None),
        write_run(tmp_path / "iql", "iql", "custom/x-v0", {0: [100, 300, 500, 700]}, ref=None),
    ]
    out = tmp_path / "report"
    report.make_report(runs, out, reps=500)
    rows = read_csv(out / "per_dataset.csv")
    assert {r["scale"] for r in rows} == {"return"}
    bc = next(r for r in rows if r["agent"] == "bc")
    assert float(bc["final_mean"]) == pytest.approx(4000.0)  # raw return, not a score
    # 90% of the rise above the curve's lowest point: 1000 + 0.9 * 3000 = 3700 -> 20k
    assert float(bc["samples_to_90_mean"]) == pytest.approx(20_000)
    text = (out / "report.md").read_text()
    assert "raw returns" in text and "No aggregates" in text
    assert not read_csv(out / "aggregates.csv")
    # Rank-based, so it still compares the agents.
    (poi,) = [r for r in read_csv(out / "probability_of_improvement.csv")
              if r["measure"] == "final"]
    assert (poi["agent_x"], float(poi["probability_x_better"])) == ("iql", 1.0)
    assert non_white_fraction(out / "curves.png") > 0.02


def test_online_phase_is_summarised_and_drawn(tmp_path):
    online = {0: [(25_000, 80.0), (30_000, 90.0)], 1: [(25_000, 70.0), (30_000, 70.0)]}
    run = write_run(tmp_path / "td3", "td3_bc", "d/a-v0", {0: [50, 60, 70, 80], 1: [50] * 4},
                    online=online)
    out = tmp_path / "report"
    report.make_report([run], out, reps=200)
    (row,) = read_csv(out / "per_dataset.csv")
    assert float(row["final_mean"]) == pytest.approx(65.0)  # offline end, not online
    assert float(row["final_online_mean"]) == pytest.approx(80.0)
    # online AUC on [20k, 30k]: seed 0 held 80 then ramp 80 -> 90: (5k*80 + 5k*85)/10k = 82.5
    assert float(row["auc_online_mean"]) == pytest.approx((82.5 + 70.0) / 2)
    assert "final online" in (out / "report.md").read_text()


# As the engine writes it: the chunk starting at `samples`, its size, then per metric the mean
# loss per transition and the running sum (the description length).
PREQUENTIAL_CSV = """samples,seed,transitions,action_mse,action_mse_cumulative,td_error,\
td_error_cumulative
5000,0,5000,0.50,2500,2.0,10000
10000,0,5000,0.30,4000,1.5,17500
15000,0,5000,0.20,5000,1.0,22500
5000,1,5000,0.70,3500,2.5,12500
10000,1,5000,0.40,5500,1.0,17500
15000,1,5000,0.10,6000,0.5,20000
"""


def test_prequential_csv_is_summarised_and_drawn_under_the_curves(runs, tmp_path):
    run = write_run(tmp_path / "with-preq", "td3_bc", "d/a-v0",
                    {0: [50, 60, 70, 80], 1: [40, 60, 60, 70]}, prequential=PREQUENTIAL_CSV)
    groups, _ = load_groups([run])
    (curve0, curve1) = groups[0].prequential
    np.testing.assert_allclose(curve1.metrics["action_mse"][1], [0.7, 0.4, 0.1])
    assert set(curve0.metrics) == {"action_mse", "action_mse_cumulative", "td_error",
                                   "td_error_cumulative"}
    assert is_cumulative("action_mse_cumulative") and not is_cumulative("td_error")
    out = tmp_path / "report"
    report.make_report([*runs, run], out, reps=200)
    rows = {r["metric"]: r for r in read_csv(out / "prequential.csv")}
    assert set(rows) == {"action_mse", "td_error", "action_mse_cumulative",
                         "td_error_cumulative"}
    assert rows["action_mse_cumulative"]["agent"] == "td3_bc"
    assert float(rows["action_mse_cumulative"]["last_mean"]) == pytest.approx(5500.0)
    assert rows["action_mse_cumulative"]["average_mean"] == ""  # meaningless for a running sum
    assert float(rows["action_mse"]["average_mean"]) == pytest.approx((1.0 / 3 + 1.2 / 3) / 2)
    # Unequal chunks: the average weights each chunk's mean loss by its transitions.
    uneven = write_run(tmp_path / "uneven", "bc", "d/a-v0", {0: [50, 60, 70, 80]},
                       prequential="samples,seed,transitions,action_mse,action_mse_cumulative\n"
                                   "5000,0,5000,0.4,2000\n10000,0,1000,0.1,2100\n")
    (summary,) = [p for p in report.summarise_prequential(load_groups([uneven])[0][0])
                  if p.metric == "action_mse"]
    assert summary.average.point == pytest.approx((5000 * 0.4 + 1000 * 0.1) / 6000)
    assert float(rows["td_error"]["last_mean"]) == pytest.approx(0.75)
    assert "## Prequential signal" in (out / "report.md").read_text()
    # The curve figure grows a panel row per per-chunk metric (2) under each return panel.
    import matplotlib.image

    without = tmp_path / "plain"
    report.make_report(runs, without, reps=200)
    tall = matplotlib.image.imread(out / "curves.png").shape[0]
    short = matplotlib.image.imread(without / "curves.png").shape[0]
    assert tall > 1.6 * short
    # Reporting again into the same dir without that run leaves no stale prequential table.
    report.make_report(runs, out, reps=200, figures=False)
    assert not (out / "prequential.csv").exists() and not (out / "curves.png").exists()


def test_mean_curve_interpolates_seeds_onto_a_common_grid():
    from seqeval.figures import mean_curve

    grid, mean, low, high = mean_curve([(np.array([0, 10]), np.array([0.0, 10.0])),
                                        (np.array([0, 5, 10]), np.array([2.0, 4.0, 6.0]))])
    np.testing.assert_allclose(grid, [0, 5, 10])
    np.testing.assert_allclose(mean, [1.0, 4.5, 8.0])
    half = 12.7062047 * np.std([5.0, 4.0], ddof=1) / math.sqrt(2)
    assert (low[1], high[1]) == pytest.approx((4.5 - half, 4.5 + half))


def test_bad_input_is_a_user_error(runs, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        report.make_report([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a seqeval run"):
        report.make_report([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(UserError, match="no run directories"):
        report.make_report([], tmp_path / "out")
    broken = write_run(tmp_path / "broken", "bc", "d/c-v0", {0: [1, 2, 3, 4]},
                       prequential="samples,seed,transitions,action_mse,action_mse_cumulative\n"
                                   "5000,0,5000,oops,1\n")
    with pytest.raises(UserError, match="prequential.csv'"):
        report.make_report([broken], tmp_path / "out")
    duplicate = write_run(tmp_path / "dup", "bc", "d/a-v0", {1: [1, 2, 3, 4]})
    with pytest.raises(UserError, match="seed 1 of bc on d/a-v0"):
        report.make_report([runs[0], duplicate], tmp_path / "out")


def test_cli_report_and_its_errors(runs, tmp_path, capsys):
    out = tmp_path / "cli-report"
    code = cli.main(["report", *map(str, runs), "--out", str(out), "--reps", "300",
                     "--no-figures"])
    assert code == 0
    assert (out / "report.md").is_file() and (out / "aggregates.csv").is_file()
    assert str(out / "report.md") in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_on_real_runs_through_the_cli(store, tmp_path):
    """Two small real runs (bc, td3_bc; 2 seeds each) made by `seqeval run`, then reported."""
    from helpers import EXPERT

    small = ["--dataset", EXPERT, "--initial-size", "2000", "--increment", "40",
             "--steps-per-increment", "2", "--eval-every", "4000", "--eval-episodes", "2",
             "--batch-size", "64", "--seeds", "2", "--no-progress"]
    nets = {"bc": ["--agent.hidden_dims", "32,32"],
            "td3_bc": ["--agent.actor_hidden_dims", "32,32", "--agent.critic_hidden_dims", "32,32"]}
    run_dirs = []
    for agent, net in nets.items():
        run_dirs.append(tmp_path / agent)
        assert cli.main(["run", "--agent", agent, "--out", str(run_dirs[-1]), *small, *net]) == 0
    out = tmp_path / "report"
    assert cli.main(["report", *map(str, run_dirs), "--out", str(out), "--reps", "2000"]) == 0
    rows = {r["agent"]: r for r in read_csv(out / "per_dataset.csv")}
    assert set(rows) == {"bc", "td3_bc"}
    for agent, row in rows.items():
        assert row["scale"] == "normalized" and row["seeds"] == "2"
        evaluations = [r for r in read_csv(tmp_path / agent / "evaluations.csv")]
        finals = [float(r["normalized_score"]) for r in evaluations
                  if int(r["samples"]) == max(int(e["samples"]) for e in evaluations)]
        assert float(row["final_mean"]) == pytest.approx(np.mean(finals), abs=1e-4)
        assert math.isfinite(float(row["auc_mean"]))
    aggregates = read_csv(out / "aggregates.csv")
    assert {r["agent"] for r in aggregates} == {"bc", "td3_bc"}
    assert len(read_csv(out / "probability_of_improvement.csv")) == 2
    # The engine's prequential signal is summarised: action error for both, TD error for the
    # agent with a critic.
    prequential = {(r["agent"], r["metric"]): r for r in read_csv(out / "prequential.csv")}
    assert {("bc", "action_mse"), ("td3_bc", "action_mse"), ("td3_bc", "td_error"),
            ("td3_bc", "td_error_cumulative")} <= set(prequential)
    assert float(prequential[("bc", "action_mse")]["average_mean"]) > 0
    assert non_white_fraction(out / "curves.png") > 0.02

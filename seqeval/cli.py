"""The `seqeval` command line: run, plot, datasets, report, agents, demo.

User errors (unknown names, bad settings, broken data) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence

from seqeval.errors import DivergenceError, UserError

AGENT_PREFIX = "--agent."


def _positive_pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got '{text}'") from None
    return low, high


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N1,N2,..., got '{text}'") from None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `seqeval run` (the protocol's settings, with the paper's defaults)."""
    parser.add_argument("--agent", required=True,
                        help="agent name (bc, td3_bc, iql, cql, an entry point) or FILE.py:NAME")
    parser.add_argument("--dataset", required=True,
                        help="Minari dataset id; ID1,ID2,... feeds datasets in that order, "
                        "shuffled within each (distribution shift)")
    parser.add_argument("--out", required=True, help="run directory (created; resumed if killed)")
    parser.add_argument("--initial-size", type=int, default=None,
                        help="T0, transitions before training starts (default min(5000, N/10))")
    parser.add_argument("--increment", type=int, default=1,
                        help="gamma, transitions added per increment (default 1)")
    parser.add_argument("--steps-per-increment", type=int, default=1,
                        help="K, gradient steps per increment (default 1)")
    parser.add_argument("--eval-every", type=int, default=5000,
                        help="f_e, evaluate every this many added samples (default 5000)")
    parser.add_argument("--eval-episodes", type=int, default=10,
                        help="episodes per evaluation and seed (default 10)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="number of seeds trained together in one program (default 1)")
    parser.add_argument("--mode", default="sequential", choices=["sequential", "full", "retrain"],
                        help="sequential (default); full: whole dataset from step 0 for the "
                        "same steps (the paper's 'Normal'); retrain: a fresh agent per size")
    parser.add_argument("--window", type=int, default=None,
                        help="train only on the most recent N transitions (distribution shift)")
    parser.add_argument("--online-steps", type=int, default=0,
                        help="environment steps of online fine-tuning after the offline pass")
    parser.add_argument("--updates-per-env-step", type=int, default=1,
                        help="gradient steps per online environment step (default 1)")
    parser.add_argument("--online-block", type=int, default=1000,
                        help="env steps collected between compiled training calls (default 1000)")
    parser.add_argument("--sizes", type=_int_list, default=None, metavar="N1,N2,...",
                        help="retrain mode: dataset sizes (default: geometric grid T0..N)")
    parser.add_argument("--retrain-steps", type=int, default=None,
                        help="retrain mode: gradient steps per size (default: as many as the "
                        "sequential run had taken at that size, at least --retrain-min-steps)")
    parser.add_argument("--retrain-min-steps", type=int, default=1000)
    parser.add_argument("--no-prequential", action="store_true",
                        help="skip scoring each chunk before training on it")
    parser.add_argument("--ref-scores", type=_positive_pair, default=None, metavar="MIN,MAX",
                        help="reference returns for normalized scores (overrides the dataset's)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def parse_agent_overrides(extra: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--agent.KEY VALUE` / `--agent.KEY=VALUE` pairs left over by argparse."""
    overrides = []
    items = list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith(AGENT_PREFIX):
            raise UserError(f"unrecognised argument '{item}'; agent settings are "
                            "--agent.KEY VALUE (see 'seqeval agents')")
        key, sep, value = item[len(AGENT_PREFIX):].partition("=")
        if not sep:
            if not items:
                raise UserError(f"{item} needs a value: {item} VALUE")
            value = items.pop(0)
        overrides.append((key.replace("-", "_"), value))
    return tuple(overrides)


def cmd_run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from seqeval.runner import RunSettings, run

    settings = RunSettings(
        agent=args.agent,
        dataset=args.dataset,
        out=args.out,
        agent_overrides=parse_agent_overrides(extra),
        initial_size=args.initial_size,
        increment=args.increment,
        steps_per_increment=args.steps_per_increment,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        batch_size=args.batch_size,
        seed=args.seed,
        num_seeds=args.seeds,
        mode=args.mode,
        window=args.window,
        online_steps=args.online_steps,
        updates_per_env_step=args.updates_per_env_step,
        online_block=args.online_block,
        sizes=args.sizes,
        retrain_steps=args.retrain_steps,
        retrain_min_steps=args.retrain_min_steps,
        prequential=not args.no_prequential,
        ref_scores=args.ref_scores,
        progress=not args.no_progress,
    )
    summary = run(settings)
    score = summary.get("last_mean_normalized_score")
    shown = f"normalized score {score:.1f}" if score is not None else (
        f"return {summary['last_mean_return']:.1f}")
    if args.mode == "retrain":
        print(f"{args.out}: retrained at {len(summary['sizes'])} sizes, at the full dataset "
              f"{shown}")
    else:
        print(f"{args.out}: {summary['samples']} samples, {summary['gradient_steps']} "
              f"gradient steps, final {shown}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from seqeval.plot import plot_runs

    out = args.out or os.path.join(args.run_dirs[0], "curve.png")
    for path in plot_runs(args.run_dirs, out, title=args.title):
        print(path)
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    import dataclasses

    from seqeval.algorithms.base import available_agents, get_agent

    for name in available_agents():
        agent = get_agent(name)
        print(f"{name}: {agent.description}")
        for field in dataclasses.fields(agent.config_class):
            print(f"    --agent.{field.name} {field.default!r}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from seqeval.demo import run_demo

    return run_demo(out_dir=args.out, figure=args.figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqeval",
        description="Sequential evaluation of offline RL agents: data-efficiency curves.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run_parser = sub.add_parser("run", help="run a sequential evaluation",
                                epilog="agent settings: --agent.KEY VALUE (see 'seqeval agents')")
    add_run_arguments(run_parser)
    run_parser.set_defaults(func=cmd_run, takes_extra=True)

    plot_parser = sub.add_parser("plot", help="plot data-efficiency curves of runs")
    plot_parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot_parser.add_argument("--out", default=None,
                             help="PNG path (a PDF beside it), or a directory for DIR/curve.png "
                             "(default RUN_DIR/curve.png)")
    plot_parser.add_argument("--title", default=None)
    plot_parser.set_defaults(func=cmd_plot)

    agents_parser = sub.add_parser("agents", help="list agents and their settings")
    agents_parser.set_defaults(func=cmd_agents)

    demo_parser = sub.add_parser("demo", help="build Pendulum datasets and compare every agent")
    demo_parser.add_argument("--out", default="runs/demo", help="where the demo's runs go")
    demo_parser.add_argument("--figure", default="figures/demo.png")
    demo_parser.set_defaults(func=cmd_demo)

    # Subcommands that live with their subsystems.
    for module in ("seqeval.envs.cli", "seqeval.report"):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module="minari")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if getattr(args, "takes_extra", False):
            return args.func(args, extra)
        if extra:
            raise UserError(f"unrecognised arguments: {' '.join(extra)}")
        return args.func(args)
    except UserError as error:
        print(f"seqeval: error: {error}", file=sys.stderr)
        return 2
    except DivergenceError as error:
        print(f"seqeval: diverged: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("seqeval: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

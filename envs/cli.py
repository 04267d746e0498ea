"""`seqeval datasets build|list`: build D4RL-style datasets locally and list what is available."""

from __future__ import annotations

import argparse
import math

from seqeval.envs.registry import QUALITIES, RECIPES


def cmd_build(args: argparse.Namespace) -> int:
    from seqeval.envs.datasets import build_datasets, read_card

    ids = build_datasets(
        args.env,
        qualities=args.quality,
        transitions=args.transitions,
        seed=args.seed,
        sac_steps=args.sac_steps,
        checkpoint_every=args.checkpoint_every,
        force=args.force,
        progress=not args.no_progress,
    )
    print(format_table([card for card in (read_card(i) for i in ids) if card is not None]))
    return 0


def _number(value: object, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """A plain-text table: id, transitions, episodes, behaviour score, reference scores."""
    header = ("dataset", "transitions", "episodes", "behaviour score", "ref min", "ref max",
              "card")
    lines = [header]
    for row in sorted(rows, key=lambda r: r["dataset_id"]):
        lines.append((
            row["dataset_id"],
            _number(row.get("transitions")),
            _number(row.get("episodes")),
            _number(row.get("behaviour_normalized_score")),
            _number(row.get("ref_min_score")),
            _number(row.get("ref_max_score")),
            "yes" if row.get("has_card", True) else "no",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:],
                                                                          strict=True)]
        out.append("  ".join(cells))
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def cmd_list(args: argparse.Namespace) -> int:
    from seqeval.envs.datasets import list_datasets, minari_root

    rows = list_datasets()
    if not rows:
        print(f"no local Minari datasets in {minari_root()}; "
              "build some with: seqeval datasets build pendulum")
        return 0
    print(format_table(rows))
    print(f"\n(store: {minari_root()}; behaviour score is the behaviour policy's normalized "
          "score, 0 = random, 100 = expert)")
    return 0


def _positive_int(text: str) -> int:
    # Parsed as int here; the builder raises the user-facing error for values <= 0.
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `datasets build|list` to the seqeval command line."""
    datasets = subparsers.add_parser("datasets", help="build or list local D4RL-style datasets")
    commands = datasets.add_subparsers(dest="datasets_command", metavar="{build,list}")
    commands.required = True

    build = commands.add_parser(
        "build",
        help="train SAC behaviour policies and write Minari datasets",
        description="Build D4RL-style datasets (random, medium, expert, medium-replay, "
                    "medium-expert) into the local Minari store (MINARI_DATASETS_PATH). "
                    "Datasets that already exist are kept; an interrupted build resumes.",
    )
    # The environment is checked by the builder, so a typo gets seqeval's one-line error.
    build.add_argument("env", help=f"one of: {', '.join(RECIPES)}")
    build.add_argument("--quality", nargs="+", default=None, metavar="Q",
                       help=f"qualities to build (default all): {', '.join(QUALITIES)}")
    build.add_argument("--transitions", type=_positive_int, default=None,
                       help="transitions per dataset (medium-expert gets twice this; "
                            "default 20000 for pendulum, 1000000 for MuJoCo)")
    build.add_argument("--seed", type=int, default=0, help="SAC and collection seed")
    build.add_argument("--sac-steps", type=_positive_int, default=None,
                       help="SAC environment steps (= gradient steps); default 15000 for "
                            "pendulum, 1000000 for MuJoCo")
    build.add_argument("--checkpoint-every", type=_positive_int, default=None,
                       help="environment steps between SAC checkpoints/snapshots")
    build.add_argument("--force", action="store_true",
                       help="rebuild datasets that already exist")
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.set_defaults(func=cmd_build)

    listing = commands.add_parser("list", help="list local Minari datasets and their cards")
    listing.set_defaults(func=cmd_list)

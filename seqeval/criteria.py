"""The criteria `seqeval select` ranks by: numbers a run records without the environment
(prequential losses, the critic's Q on the dataset's actions, training losses), each with the
direction its agent declares (`Agent.metrics`). docs/selection.md defines every one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from seqeval.errors import UserError
from seqeval.runs import Group

if TYPE_CHECKING:  # base imports JAX; the CLI imports this module for every command
    from seqeval.algorithms.base import Metric


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A number computed per seed from what a run records, without the environment."""

    name: str
    source: str  # "prequential" (prequential.csv) or "training" (training.csv)
    metric: str  # the recorded column it reads
    summary: str  # dl | mean | last (configurations); next | train (checkpoints, and train)
    higher_is_better: bool

    @property
    def sign(self) -> float:
        """Orientation: sign x value is larger for what the criterion predicts is better."""
        return 1.0 if self.higher_is_better else -1.0

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def worst(self) -> float:
        """The value a non-finite measurement takes: it ranks its configuration last."""
        return -math.inf if self.higher_is_better else math.inf

    @property
    def description(self) -> str:
        what = self.metric.replace("_", " ")
        return {
            "dl": f"prequential description length of {what} (sum over every scored "
                  "transition)",
            "mean": f"mean {what} over every scored transition",
            "last": f"{what} on the last chunk",
            "next": f"{what} on the chunk after the evaluation",
            "train": f"training {what} over the chunk before the evaluation",
        }[self.summary]


def directed(metrics: Iterable[str], declared: Mapping[str, Metric]) -> list[str]:
    """The metrics the agent declares a direction for (`Agent.metrics`), sorted; a metric
    without one (a temperature's tuning loss, an entropy) or undeclared is no criterion."""
    return sorted(m for m in metrics if m in declared and declared[m].direction is not None)


def _higher(metric: str, declared: Mapping[str, Metric]) -> bool:
    return declared[metric].direction == "higher"


def configuration_criteria(prequential: Sequence[str], training: Sequence[str],
                           declared: Mapping[str, Metric]) -> list[Criterion]:
    """Criteria that rank configurations, from the metrics runs record and the directions
    their agent declares: per prequential loss its description length and last-chunk value,
    per prediction (higher is better) its mean and last-chunk value, per training metric its
    value over the last chunk."""
    out = []
    for metric in directed(prequential, declared):
        higher = _higher(metric, declared)
        out.append(Criterion(f"{metric}_{'mean' if higher else 'dl'}", "prequential", metric,
                             "mean" if higher else "dl", higher))
        out.append(Criterion(f"{metric}_last", "prequential", metric, "last", higher))
    out += [Criterion(f"train_{m}", "training", m, "train", _higher(m, declared))
            for m in directed(training, declared)]
    return out


def checkpoint_criteria(prequential: Sequence[str], training: Sequence[str],
                        declared: Mapping[str, Metric]) -> list[Criterion]:
    """Criteria that rank a run's evaluation points: each prequential metric on the next chunk
    (the data the evaluated model has not seen), each training metric over the chunk just
    trained on; only metrics with a declared direction."""
    out = [Criterion(f"{m}_next", "prequential", m, "next", _higher(m, declared))
           for m in directed(prequential, declared)]
    out += [Criterion(f"train_{m}", "training", m, "train", _higher(m, declared))
            for m in directed(training, declared)]
    return out


def declared_metrics(group: Group) -> dict[str, Metric] | None:
    """The metric declarations of the group's agent (None when it cannot be loaded)."""
    from seqeval.algorithms.registry import get_agent

    try:
        return dict(get_agent(group.runs[0].config.agent).metrics)
    except UserError:
        return None

"""The environments seqeval builds D4RL-style datasets for, with their default budgets.

Dataset ids live in seqeval's own namespace, `seqeval/<env>/<quality>-v0` (e.g.
`seqeval/hopper/medium-v0`, `seqeval/pendulum/medium-v0`), never in Farama's `mujoco/...`, where
Farama's own (different) datasets live. Earlier versions wrote `mujoco/<env>/<quality>-v0` and
`pendulum/<quality>-v0`; `OLD_NAMESPACES` recognises those builds so they can be named.
"""

from __future__ import annotations

import dataclasses

from seqeval.algorithms.sac import SACConfig
from seqeval.envs.sac import TrainBudget
from seqeval.errors import UserError

QUALITIES: tuple[str, ...] = ("random", "medium", "expert", "medium-replay", "medium-expert")
NAMESPACE = "seqeval"

# D4RL's medium policy sits at roughly a third of the expert on the normalized scale.
MEDIUM_TARGET_SCORE = 100.0 / 3.0


@dataclasses.dataclass(frozen=True)
class EnvRecipe:
    """How one environment's dataset suite is built."""

    name: str  # command-line name, e.g. "hopper"
    gym_id: str  # e.g. "Hopper-v5"
    namespace: str  # dataset id prefix, e.g. "seqeval/hopper"
    sac: SACConfig  # the behaviour policies' SAC agent (seqeval.algorithms.sac)
    budget: TrainBudget
    transitions: int  # per dataset (medium-expert has twice this); D4RL used 1M
    collect_envs: int = 10  # environments side by side while collecting a dataset
    reference_episodes: int = 100  # episodes behind each reference score (D4RL/Minari: 100)

    def dataset_id(self, quality: str) -> str:
        return f"{self.namespace}/{quality}-v0"


def _mujoco(name: str, gym_id: str) -> EnvRecipe:
    return EnvRecipe(
        name=name,
        gym_id=gym_id,
        namespace=f"{NAMESPACE}/{name}",
        sac=SACConfig(actor_hidden_dims=(256, 256), critic_hidden_dims=(256, 256)),
        budget=TrainBudget(env_steps=1_000_000, num_envs=4, chunk_env_steps=1000,
                           learning_starts=10_000, checkpoint_every=20_000,
                           snapshot_eval_episodes=10),
        transitions=1_000_000,
    )


RECIPES: dict[str, EnvRecipe] = {
    # Small nets and a short run: the whole Pendulum suite builds in well under a minute.
    "pendulum": EnvRecipe(
        name="pendulum",
        gym_id="Pendulum-v1",
        namespace=f"{NAMESPACE}/pendulum",
        sac=SACConfig(actor_hidden_dims=(64, 64), critic_hidden_dims=(64, 64)),
        budget=TrainBudget(env_steps=15_000, num_envs=4, chunk_env_steps=500,
                           learning_starts=1000, checkpoint_every=500,
                           snapshot_eval_episodes=10),
        transitions=20_000,
    ),
    "hopper": _mujoco("hopper", "Hopper-v5"),
    "halfcheetah": _mujoco("halfcheetah", "HalfCheetah-v5"),
    "walker2d": _mujoco("walker2d", "Walker2d-v5"),
}


# Where seqeval wrote each environment's datasets before they had their own namespace.
OLD_NAMESPACES: dict[str, str] = {"pendulum": "pendulum", "hopper": "mujoco/hopper",
                                  "halfcheetah": "mujoco/halfcheetah",
                                  "walker2d": "mujoco/walker2d"}


def get_recipe(name: str) -> EnvRecipe:
    recipe = RECIPES.get(name.lower())
    if recipe is None:
        raise UserError(
            f"unknown environment '{name}'; choose one of: {', '.join(RECIPES)}"
        )
    return recipe


def check_qualities(qualities: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The requested qualities in canonical order (all when none given)."""
    if not qualities:
        return QUALITIES
    unknown = [q for q in qualities if q not in QUALITIES]
    if unknown:
        raise UserError(
            f"unknown dataset quality '{unknown[0]}'; choose from: {', '.join(QUALITIES)}"
        )
    return tuple(q for q in QUALITIES if q in qualities)


def budget_for(recipe: EnvRecipe, sac_steps: int | None,
               checkpoint_every: int | None = None) -> TrainBudget:
    """The recipe's SAC budget, resized to `sac_steps` environment steps when given.

    A smaller run keeps about 20 checkpoints (at most the recipe's spacing), so there is still
    a snapshot near the medium level, and starts learning after at most a fifth of its steps.
    """
    budget = recipe.budget
    if sac_steps is None and checkpoint_every is None:
        return budget
    steps = budget.env_steps if sac_steps is None else int(sac_steps)
    if steps <= 0:
        raise UserError(f"--sac-steps must be positive, got {steps}")
    if checkpoint_every is None:
        checkpoint_every = min(budget.checkpoint_every, max(budget.num_envs, steps // 20))
    if checkpoint_every <= 0:
        raise UserError(f"--checkpoint-every must be positive, got {checkpoint_every}")
    # Checkpoints land on whole rounds of the environments.
    checkpoint_every = max(budget.num_envs,
                           checkpoint_every // budget.num_envs * budget.num_envs)
    return dataclasses.replace(
        budget,
        env_steps=steps,
        checkpoint_every=checkpoint_every,
        learning_starts=min(budget.learning_starts, max(steps // 5, 1)),
        chunk_env_steps=min(budget.chunk_env_steps, checkpoint_every),
    )

"""Build D4RL-style Minari datasets locally: random, medium, expert, medium-replay, medium-expert.

The recipe (D4RL, Fu et al. 2020, for the MuJoCo locomotion tasks):
- random: a randomly initialised SAC policy;
- medium: a SAC snapshot whose normalized score is nearest a third of the expert's;
- expert: the fully trained SAC policy;
- medium-replay: every episode SAC collected while training up to the medium snapshot, in
  collection order;
- medium-expert: the medium dataset followed by the expert dataset, exactly.
Behaviour policies act stochastically (sampling from the SAC policy), as in D4RL. The reference
scores stored with each dataset are the mean returns of the random policy and of the expert
policy over `reference_episodes` (100) fresh episodes, so `minari.get_normalized_score` works.

Everything expensive is cached under `<minari root>/.seqeval_builds/<env>-seed<S>-steps<N>/`
(a hidden directory, which Minari's listing skips): the SAC checkpoints (an interrupted build
resumes from the last one and continues exactly as an uninterrupted build), reference scores,
the medium choice and each collection. Each dataset is written under
`.seqeval_builds/staging/` and renamed into place when complete, so a killed build never leaves
a half-written dataset in the store; a dataset that is there anyway but incomplete (files
missing, unreadable, or of other sizes than its card records) is rebuilt, with a note saying so.
"""

from __future__ import annotations

import dataclasses
import time

import gymnasium as gym
import jax
import numpy as np
from tqdm.auto import tqdm

from seqeval.envs.registry import (
    MEDIUM_TARGET_SCORE,
    QUALITIES,
    RECIPES,
    EnvRecipe,
    budget_for,
    check_qualities,
    get_recipe,
)
from seqeval.envs.rollout import (
    Episode,
    collect_episodes,
    load_episodes,
    rollout_returns,
    save_episodes,
)
from seqeval.envs.sac import SACTrainer, policy_fn
from seqeval.envs.store import (
    CARD_NAME,
    FOREIGN,
    dataset_dir,
    dataset_files,
    dataset_problem,
    install_dataset,
    minari_root,
    note,
    package_versions,
    read_json,
    remove_dead_staging,
    stage_dataset,
)
from seqeval.errors import UserError
from seqeval.fileio import write_json_atomic
from seqeval.scores import normalized_score
from seqeval.seeds import derive_seed


def natural_returns(episodes: list[Episode], max_episode_steps: int | None) -> np.ndarray:
    """Returns of the episodes that ended by themselves (terminated, or hit the time limit).

    Episodes cut short by the builder (at the end of a collection or at a training checkpoint)
    would drag the mean down, so they are left out of the behaviour policy's score.
    """
    returns = [e.episode_return for e in episodes
               if e.terminations[-1] or (max_episode_steps is not None
                                         and len(e) == max_episode_steps)]
    if not returns:  # every episode was cut (tiny datasets): use them all
        returns = [e.episode_return for e in episodes]
    return np.asarray(returns)


class SuiteBuilder:
    """Builds (or completes) the dataset suite of one environment."""

    def __init__(self, recipe: EnvRecipe, transitions: int | None = None, seed: int = 0,
                 sac_steps: int | None = None, checkpoint_every: int | None = None,
                 progress: bool = True):
        if transitions is not None and int(transitions) <= 0:
            raise UserError(f"--transitions must be positive, got {transitions}")
        self.recipe = recipe
        self.transitions = int(transitions) if transitions is not None else recipe.transitions
        self.seed = int(seed)
        self.budget = budget_for(recipe, sac_steps, checkpoint_every)
        self.progress = progress
        self.max_episode_steps = gym.spec(recipe.gym_id).max_episode_steps
        self.work_dir = (minari_root() / ".seqeval_builds"
                         / f"{recipe.name}-seed{self.seed}-steps{self.budget.env_steps}")
        self._trainer: SACTrainer | None = None

    # -- shared pieces (each cached in work_dir) ---------------------------------------------
    @property
    def trainer(self) -> SACTrainer:
        if self._trainer is None:
            self._trainer = SACTrainer(self.recipe.gym_id, self.recipe.sac, self.budget,
                                       self.work_dir / "sac", self.seed, progress=self.progress)
        return self._trainer

    def train(self) -> dict:
        """Train SAC to the budget, resuming from the last checkpoint."""
        return self.trainer.train()

    def _policy(self, quality: str, seed: int, deterministic: bool = False):
        learner = self.trainer.learner
        if quality == "random":
            key = jax.random.PRNGKey(derive_seed(self.seed, "random policy"))
            actor = learner.init(key)["agent"].actor.params
        else:
            actor = self.trainer.load_actor(self.behaviour_snapshot(quality))
        return policy_fn(learner, actor, seed, deterministic)

    def behaviour_snapshot(self, quality: str) -> int:
        if quality == "expert":
            return len(self.trainer.read_progress()["checkpoints"]) - 1
        if quality in ("medium", "medium-replay"):
            return int(self.medium_choice()["index"])
        raise ValueError(quality)

    def reference_scores(self) -> dict:
        """Mean returns of the random and the expert policy over `reference_episodes` each."""
        path = self.work_dir / "reference_scores.json"
        cached = read_json(path)
        if cached is None:
            cached = self._measure_reference_scores()
            write_json_atomic(path, cached)
        if not cached["ref_max_score"] > cached["ref_min_score"]:
            raise UserError(
                f"the SAC expert on {self.recipe.gym_id} (mean return "
                f"{cached['ref_max_score']:.1f}) does not beat the random policy "
                f"({cached['ref_min_score']:.1f}), so normalized scores would mean nothing; "
                f"train longer (--sac-steps above {self.budget.env_steps})")
        return cached

    def _measure_reference_scores(self) -> dict:
        episodes = self.recipe.reference_episodes
        scores = {}
        for quality in ("random", "expert"):
            seed = derive_seed(self.seed, f"reference {quality}")
            returns = rollout_returns(self._policy(quality, seed), self.recipe.gym_id,
                                      episodes, seed)
            scores[quality] = {"mean": float(returns.mean()), "std": float(returns.std()),
                               "episodes": int(returns.size)}
        return {"ref_min_score": scores["random"]["mean"],
                "ref_max_score": scores["expert"]["mean"], "detail": scores}

    def normalize(self, returns: np.ndarray | float) -> np.ndarray:
        refs = self.reference_scores()
        return normalized_score(returns, refs["ref_min_score"], refs["ref_max_score"])

    def medium_choice(self) -> dict:
        """The snapshot whose normalized score is nearest a third of the expert's.

        Each snapshot was scored on a few episodes during training; the three nearest the
        target are re-scored on more episodes before choosing, to cut the noise.
        """
        path = self.work_dir / "medium.json"
        cached = read_json(path)
        if cached is not None:
            return cached
        checkpoints = self.trainer.read_progress()["checkpoints"][:-1]  # the last is the expert
        if not checkpoints:
            raise UserError("the SAC budget gives a single checkpoint, so there is no medium "
                            "snapshot; raise --sac-steps or lower --checkpoint-every")
        scored = sorted(checkpoints, key=lambda c: abs(
            float(self.normalize(c["eval_return_mean"])) - MEDIUM_TARGET_SCORE))[:3]
        candidates = []
        for checkpoint in scored:
            seed = derive_seed(self.seed, "medium rescoring", checkpoint["index"])
            actor = self.trainer.load_actor(checkpoint["index"])
            returns = rollout_returns(policy_fn(self.trainer.learner, actor, seed, False),
                                      self.recipe.gym_id, 30, seed)
            candidates.append({**checkpoint, "rescored_return_mean": float(returns.mean()),
                               "rescored_normalized": float(self.normalize(returns.mean()))})
        best = min(candidates, key=lambda c: abs(c["rescored_normalized"] - MEDIUM_TARGET_SCORE))
        result = {**best, "target_normalized": MEDIUM_TARGET_SCORE, "candidates": candidates}
        write_json_atomic(path, result)
        return result

    def collection(self, quality: str) -> tuple[list[Episode], float, int]:
        """(episodes, seconds it took, collection seed) for random, medium or expert data."""
        path = self.work_dir / f"collect_{quality}_{self.transitions}.npz"
        meta_path = path.with_suffix(".json")
        seed = derive_seed(self.seed, f"collect {quality}")
        if path.exists() and meta_path.exists():
            return load_episodes(path), float(read_json(meta_path)["seconds"]), seed
        start = time.perf_counter()
        with tqdm(total=self.transitions, desc=f"collect {self.recipe.name} {quality}",
                  unit="step", disable=not self.progress, dynamic_ncols=True) as bar:
            episodes = collect_episodes(self._policy(quality, seed), self.recipe.gym_id,
                                        self.transitions, self.recipe.collect_envs, seed,
                                        on_progress=bar.update)
        seconds = time.perf_counter() - start
        save_episodes(path, episodes)
        write_json_atomic(meta_path, {"seconds": seconds, "seed": seed})
        return episodes, seconds, seed

    # -- datasets -----------------------------------------------------------------------------
    def episodes_for(self, quality: str) -> tuple[list[Episode], float, dict]:
        """The episodes of one dataset, the seconds spent collecting them, and provenance."""
        if quality in ("random", "medium", "expert"):
            episodes, seconds, seed = self.collection(quality)
            info: dict = {"collection_seed": seed}
            if quality != "random":
                info["snapshot"] = self._snapshot_info(self.behaviour_snapshot(quality))
            return episodes, seconds, info
        if quality == "medium-expert":
            medium, medium_seconds, medium_seed = self.collection("medium")
            expert, expert_seconds, expert_seed = self.collection("expert")
            return medium + expert, medium_seconds + expert_seconds, {
                "collection_seed": [medium_seed, expert_seed],
                "snapshot": [self._snapshot_info(self.behaviour_snapshot("medium")),
                             self._snapshot_info(self.behaviour_snapshot("expert"))],
                "parts": {"medium": len(medium), "expert": len(expert)},
            }
        if quality == "medium-replay":
            index = self.behaviour_snapshot("medium-replay")
            start = time.perf_counter()
            episodes = self.trainer.replay_episodes(index)
            return episodes, time.perf_counter() - start, {
                "snapshot": self._snapshot_info(index),
                "note": "every transition SAC collected up to the medium snapshot, in "
                        "collection order; episodes running at that checkpoint (or at an "
                        "interruption of the build) end there as truncated",
            }
        raise ValueError(quality)

    def _snapshot_info(self, index: int) -> dict:
        checkpoint = self.trainer.read_progress()["checkpoints"][index]
        return {"index": index, "env_steps": checkpoint["env_steps"],
                "gradient_steps": checkpoint["gradient_steps"]}

    def write_dataset(self, quality: str, train_seconds: float) -> dict:
        """Write one Minari dataset and its card (staged, then renamed into place); returns
        the card."""
        dataset_id = self.recipe.dataset_id(quality)
        episodes, collect_seconds, provenance = self.episodes_for(quality)
        refs = self.reference_scores()
        returns = natural_returns(episodes, self.max_episode_steps)
        behaviour_score = float(self.normalize(returns.mean()))
        transitions = int(sum(len(e) for e in episodes))
        description = (
            f"D4RL-style {quality} data for {self.recipe.gym_id}, built locally by seqeval with "
            f"a JAX SAC behaviour policy (seed {self.seed}, {self.budget.env_steps} SAC env "
            f"steps). {transitions} transitions in {len(episodes)} episodes; behaviour policy "
            f"normalized score {behaviour_score:.1f}. Reference scores: mean return of the "
            f"random and the expert policy over {self.recipe.reference_episodes} episodes."
        )
        write_start = time.perf_counter()
        staging = stage_dataset(dataset_id, self.recipe.gym_id, episodes, {
            "algorithm_name": "SAC (seqeval, JAX)",
            "description": description,
            "ref_min_score": refs["ref_min_score"],
            "ref_max_score": refs["ref_max_score"],
            "num_episodes_average_score": self.recipe.reference_episodes,
        })
        write_seconds = time.perf_counter() - write_start
        card = {
            "dataset_id": dataset_id,
            "env": self.recipe.name,
            "gym_id": self.recipe.gym_id,
            "quality": quality,
            "transitions": transitions,
            "episodes": len(episodes),
            "behaviour_return_mean": float(returns.mean()),
            "behaviour_return_std": float(returns.std()),
            "behaviour_return_episodes": int(returns.size),
            "behaviour_normalized_score": behaviour_score,
            "ref_min_score": refs["ref_min_score"],
            "ref_max_score": refs["ref_max_score"],
            "reference_episodes": self.recipe.reference_episodes,
            "reference_returns": refs["detail"],  # mean, std, episodes of random and expert
            "behaviour": provenance,
            "seeds": {"sac": self.seed, **({"collection": provenance["collection_seed"]}
                                           if "collection_seed" in provenance else {})},
            "build_seconds": {"sac_training_shared": round(train_seconds, 2),
                              "collection": round(collect_seconds, 2),
                              "write": round(write_seconds, 2)},
            "sac_config": dataclasses.asdict(self.recipe.sac),
            "sac_budget": dataclasses.asdict(self.budget),
            "packages": package_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": dataset_files(staging),  # checked before a later build keeps the dataset
        }
        write_json_atomic(staging / CARD_NAME, card)
        install_dataset(staging, dataset_id)
        return card

    def _needs_building(self, quality: str, force: bool) -> bool:
        dataset_id = self.recipe.dataset_id(quality)
        if force or not dataset_dir(dataset_id).exists():
            return True
        problem = dataset_problem(dataset_id)
        if problem is None:
            return False
        if problem == FOREIGN:
            note(f"kept {dataset_id}: it was not built by seqeval (no {CARD_NAME}); "
                  "--force replaces it")
            return False
        note(f"rebuilding {dataset_id}: {problem}")
        return True

    def build(self, qualities: tuple[str, ...], force: bool = False) -> list[str]:
        """Build the datasets in `qualities` that are missing or incomplete (all of them with
        `force`)."""
        ids = [self.recipe.dataset_id(q) for q in qualities]
        todo = [q for q in qualities if self._needs_building(q, force)]
        if not todo:
            return ids
        remove_dead_staging()
        progress = self.train()
        train_seconds = float(progress.get("train_seconds", 0.0))
        for quality in todo:
            dataset_id = self.recipe.dataset_id(quality)
            card = self.write_dataset(quality, train_seconds)
            if self.progress:
                tqdm.write(f"wrote {dataset_id}: {card['transitions']} transitions, "
                           f"{card['episodes']} episodes, behaviour normalized score "
                           f"{card['behaviour_normalized_score']:.1f}")
        return ids


def build_datasets(env: str, qualities: list[str] | None = None, transitions: int | None = None,
                   seed: int = 0, sac_steps: int | None = None,
                   checkpoint_every: int | None = None, force: bool = False,
                   progress: bool = True) -> list[str]:
    """Build the missing datasets of `env` (all five qualities by default); returns their ids."""
    recipe = get_recipe(env)
    chosen = check_qualities(qualities)
    builder = SuiteBuilder(recipe, transitions=transitions, seed=seed, sac_steps=sac_steps,
                           checkpoint_every=checkpoint_every, progress=progress)
    return builder.build(chosen, force=force)


def ensure_datasets(env: str, transitions: int | None = None) -> list[str]:
    """Make sure the five datasets of `env` exist locally (building what is missing)."""
    return build_datasets(env, transitions=transitions)


__all__ = [
    "QUALITIES",
    "RECIPES",
    "SuiteBuilder",
    "build_datasets",
    "ensure_datasets",
]

"""SAC (seqeval.algorithms.sac): its losses against numpy, its exploration warm-up, and the agent
run offline then online through the command line. (The dataset builder trains its behaviour
policies with this agent: tests/test_datasets.py checks that it learns Pendulum.)"""

from __future__ import annotations

import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import MIXED

from seqeval.agents import Batch, DatasetStats, Spaces, get_agent
from seqeval.algorithms import cql, sac
from seqeval.algorithms.nets import tanh_gaussian_sample
from seqeval.cli import main

SPACES = Spaces(observation_dim=3, action_dim=2)


def small_config(**overrides) -> sac.SACConfig:
    return dataclasses.replace(sac.SACConfig(), actor_hidden_dims=(16, 16),
                               critic_hidden_dims=(16, 16), **overrides)


def init_state(config: sac.SACConfig, seed: int = 0) -> sac.SACState:
    # Compiled: op by op, initialising networks and optimisers takes seconds on CPU.
    return jax.jit(lambda key: sac.init(config, key, SPACES,
                                        DatasetStats.identity(SPACES.observation_dim), 100))(
        jax.random.PRNGKey(seed))


def random_batch(seed: int, size: int = 64) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(
        observations=jnp.asarray(rng.normal(size=(size, 3)), jnp.float32),
        actions=jnp.asarray(rng.uniform(-1, 1, size=(size, 2)), jnp.float32),
        rewards=jnp.asarray(rng.normal(size=size), jnp.float32),
        next_observations=jnp.asarray(rng.normal(size=(size, 3)), jnp.float32),
        terminals=jnp.asarray(rng.random(size) < 0.2, jnp.float32),
    )


def smooth_batch(key: jax.Array, size: int) -> Batch:
    """Transitions of a smooth task: reward prefers actions near 0.5, episodes of 50 steps."""
    obs_key, next_key, action_key = jax.random.split(key, 3)
    actions = jax.random.uniform(action_key, (size, 2), minval=-1.0, maxval=1.0)
    return Batch(observations=jax.random.normal(obs_key, (size, 3)), actions=actions,
                 rewards=-jnp.sum((actions - 0.5) ** 2, axis=-1),
                 next_observations=jax.random.normal(next_key, (size, 3)),
                 terminals=(jnp.arange(size) % 50 == 49).astype(jnp.float32))


def test_agent_is_registered_and_cql_reuses_its_losses():
    agent = get_agent("sac")
    assert agent.config_class is sac.SACConfig and agent.update is sac.update
    assert cql.sac_actor_loss is sac.sac_actor_loss
    assert cql.entropy_alpha_loss is sac.entropy_alpha_loss


def test_squash_log_std_matches_numpy():
    raw = np.array([-30.0, -1.0, 0.0, 0.7, 30.0], np.float32)
    expected = -5.0 + 0.5 * (2.0 - -5.0) * (np.tanh(raw) + 1.0)
    np.testing.assert_allclose(np.asarray(sac.squash_log_std(jnp.asarray(raw), -5.0, 2.0)),
                               expected, rtol=1e-6)
    assert expected[0] == pytest.approx(-5.0) and expected[-1] == pytest.approx(2.0)


def test_soft_value_and_actor_loss_match_numpy():
    rng = np.random.default_rng(0)
    q, log_probs = rng.normal(size=32), rng.normal(size=32)
    np.testing.assert_allclose(np.asarray(sac.soft_value(q, log_probs, 0.3)), q - 0.3 * log_probs)
    assert float(sac.sac_actor_loss(jnp.asarray(log_probs), jnp.asarray(q), jnp.float32(0.3))) \
        == pytest.approx(np.mean(0.3 * log_probs - q), rel=1e-5)


def test_alpha_loss_and_gradient_match_numpy():
    log_probs = np.array([-1.5, -0.2, 0.4, -2.0], np.float32)
    target_entropy = -2.0
    value, grad = jax.value_and_grad(sac.entropy_alpha_loss)(
        jnp.float32(0.3), jnp.asarray(log_probs), target_entropy)
    assert float(value) == pytest.approx(-0.3 * np.mean(log_probs + target_entropy), rel=1e-6)
    # d/dlog_alpha: alpha grows when the policy's entropy (-E log pi) is below the target.
    assert float(grad) == pytest.approx(-np.mean(log_probs + target_entropy), rel=1e-6)


@pytest.mark.parametrize("backup_entropy", [True, False])
def test_update_losses_match_numpy(backup_entropy):
    """The critic loss is sum over the Q networks of MSE to r + gamma (1 - d) (min Q'(s', a')
    - alpha log pi(a'|s')); the actor loss uses the critics after this step's update."""
    config = small_config(backup_entropy=backup_entropy, initial_alpha=0.5)
    state, batch, key = init_state(config), random_batch(1), jax.random.PRNGKey(7)
    new_state, metrics = jax.jit(lambda s, b, k: sac.update(config, s, b, k))(state, batch, key)

    @jax.jit
    def network_outputs(state, new_state, batch, key):
        """The networks' outputs the losses are made of (the same samples as update's)."""
        next_key, actor_key = jax.random.split(key)
        mean, raw_log_std = state.actor.apply_fn(state.actor.params, batch.next_observations)
        log_std = sac.squash_log_std(raw_log_std, config.log_std_min, config.log_std_max)
        next_actions, next_log_probs = tanh_gaussian_sample(mean, log_std, next_key)
        next_q = state.critic.apply_fn(state.target_critic_params, batch.next_observations,
                                       next_actions)
        q = state.critic.apply_fn(state.critic.params, batch.observations, batch.actions)
        mean, raw_log_std = state.actor.apply_fn(state.actor.params, batch.observations)
        log_std = sac.squash_log_std(raw_log_std, config.log_std_min, config.log_std_max)
        actions, log_probs = tanh_gaussian_sample(mean, log_std, actor_key)
        q_new = new_state.critic.apply_fn(new_state.critic.params, batch.observations, actions)
        return next_q, next_log_probs, q, q_new, log_probs

    next_q, next_log_probs, q, q_new, log_probs = (
        np.asarray(x) for x in network_outputs(state, new_state, batch, key))
    next_v = next_q.min(0) - (0.5 * next_log_probs if backup_entropy else 0.0)
    rewards, terminals = np.asarray(batch.rewards), np.asarray(batch.terminals)
    target = rewards + 0.99 * (1.0 - terminals) * next_v
    assert q.shape == (2, 64)
    expected_critic = np.sum(np.mean((q - target) ** 2, axis=1))
    assert float(metrics["critic_loss"]) == pytest.approx(expected_critic, rel=1e-4)
    # The actor loss uses the critics after this step's update.
    expected_actor = np.mean(0.5 * log_probs - q_new.min(0))
    assert float(metrics["actor_loss"]) == pytest.approx(expected_actor, rel=1e-4, abs=1e-5)
    # Target networks moved by tau towards the updated critics.
    first = jax.tree.leaves(state.target_critic_params)[0]
    online = jax.tree.leaves(new_state.critic.params)[0]
    np.testing.assert_allclose(np.asarray(jax.tree.leaves(new_state.target_critic_params)[0]),
                               0.995 * np.asarray(first) + 0.005 * np.asarray(online), rtol=1e-5,
                               atol=1e-7)


def test_hard_log_std_bounds_clip():
    config = small_config(soft_log_std_bounds=False, log_std_min=-0.1, log_std_max=0.1)
    state = init_state(config)
    observations = 50.0 * jax.random.normal(jax.random.PRNGKey(1), (256, 3))
    _, log_std = jax.jit(lambda s, o: sac._policy(config, s, s.actor.params, o))(state,
                                                                               observations)
    log_std = np.asarray(log_std)
    assert log_std.min() == pytest.approx(-0.1) and log_std.max() == pytest.approx(0.1)


def test_exploration_is_uniform_until_the_first_update():
    config = small_config()
    state = init_state(config)
    observations = jnp.zeros((4000, 3))
    key = jax.random.PRNGKey(3)
    explore = jax.jit(sac.explore, static_argnums=0)
    before = np.asarray(explore(config, state, observations, key))
    # Uniform on [-1, 1]: mean 0, variance 1/3, whatever the (constant) observation.
    assert abs(before.mean()) < 0.03 and before.var() == pytest.approx(1 / 3, abs=0.02)
    policy_key, _ = jax.random.split(key)
    state, _ = jax.jit(sac.update, static_argnums=0)(config, state, random_batch(2),
                                                     jax.random.PRNGKey(4))
    after = np.asarray(explore(config, state, observations, key))
    np.testing.assert_array_equal(after, np.asarray(jax.jit(sac.act, static_argnums=(0, 4))(
        config, state, observations, policy_key, False)))
    # The untrained policy covers a narrow band; without the warm-up it explores with it.
    no_warmup = dataclasses.replace(config, uniform_warmup=False)
    narrow = np.asarray(explore(no_warmup, init_state(config), observations, key))
    assert narrow.var() < 0.2


def test_mean_log_prob_is_the_sampled_mean_for_a_narrow_policy():
    """Where tanh is nearly linear over the policy's spread, E[log pi] ~ the sample mean."""
    mean = jnp.array([[0.2, -0.4], [0.0, 0.6]])
    log_std = jnp.full((2, 2), -3.0)
    _, samples = tanh_gaussian_sample(mean, log_std, jax.random.PRNGKey(0), 20_000)
    np.testing.assert_allclose(np.asarray(sac.mean_log_prob(mean, log_std)),
                               np.asarray(samples).mean(axis=-1), atol=0.02)
    gaussian = 2 * (3.0 - 0.5 * np.log(2 * np.pi) - 0.5)  # -log_std = 3 in each of 2 dims
    jacobian = np.sum(np.log(1 - np.tanh(np.asarray(mean)) ** 2), axis=-1)
    np.testing.assert_allclose(np.asarray(sac.mean_log_prob(mean, log_std)),
                               gaussian - jacobian, rtol=1e-4)


def test_training_on_a_fixed_batch_fits_the_critics():
    config = small_config()
    batch = smooth_batch(jax.random.PRNGKey(5), 128)
    state = init_state(config)
    score = jax.jit(lambda s: sac.score(config, s, batch))
    before = score(state)
    keys = jax.random.split(jax.random.PRNGKey(9), 400)
    state, metrics = jax.jit(lambda s: jax.lax.scan(
        lambda s, k: sac.update(config, s, batch, k), s, keys))(state)
    after = score(state)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values())
    assert float(after["td_error"]) < 0.75 * float(before["td_error"]), (before, after)


def test_sac_runs_offline_then_online_on_the_same_axis(store, tmp_path):
    out = tmp_path / "sac"
    assert main(["run", "--agent", "sac", "--dataset", MIXED, "--out", str(out),
                 "--initial-size", "9000", "--increment", "50", "--eval-every", "1000",
                 "--eval-episodes", "2", "--batch-size", "64", "--online-steps", "400",
                 "--online-block", "200", "--agent.actor_hidden_dims", "32,32",
                 "--agent.critic_hidden_dims", "32,32", "--no-progress"]) == 0
    with open(out / "evaluations.csv") as handle:
        rows = list(csv.DictReader(handle))
    phases = [(int(row["samples"]), row["phase"]) for row in rows]
    assert phases == [(10_000, "offline"), (10_400, "online")]
    assert all(np.isfinite(float(row["normalized_score"])) for row in rows)


def test_a_dataset_build_cache_recorded_under_the_old_names_is_kept(tmp_path):
    """A finished SAC training of the dataset builder, recorded by an earlier seqeval under
    alpha's old setting names, is the same training: kept, not retrained; other values are
    still refused."""
    import json

    from seqeval.envs.sac import CHECKPOINT_FORMAT, SACTrainer, TrainBudget
    from seqeval.errors import UserError

    config, budget = small_config(), TrainBudget(env_steps=1000)
    trainer = SACTrainer("Pendulum-v1", config, budget, tmp_path, seed=0, progress=False)
    recorded = dataclasses.asdict(config)
    renamed = {new: old for old, new in sac.AGENT.renamed_settings.items()}
    recorded = {renamed.get(key, key): value for key, value in recorded.items()}
    assert "initial_temperature" in recorded and "initial_alpha" not in recorded
    progress = {"format": CHECKPOINT_FORMAT, "env_id": "Pendulum-v1", "seed": 0,
                "sac_config": recorded, "budget": dataclasses.asdict(budget), "complete": True}
    trainer.progress_path.write_text(json.dumps(progress))
    assert trainer.train() == json.loads(json.dumps(progress))
    recorded["initial_temperature"] = 0.5
    trainer.progress_path.write_text(json.dumps(progress))
    with pytest.raises(UserError, match="holds a SAC run with other settings"):
        trainer.train()

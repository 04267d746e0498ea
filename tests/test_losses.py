"""Each agent's losses on tiny hand-made inputs against values computed independently in numpy."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqeval.agents import Batch, DatasetStats, Spaces
from seqeval.algorithms import awac, bc, cql, iql, nets, rebrac, td3_bc
from seqeval.algorithms.nets import (
    MLPOptions,
    StateActionEnsemble,
    StateActionValue,
    gaussian_log_prob,
    member,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
    td_target,
)

LAYER_NORM_OPTIONS = MLPOptions(layer_norm=True, kernel_init="fan_in_uniform", hidden_bias=0.1,
                                output_scale=3e-3)


def numpy_layer_mlp(layers: dict, x: np.ndarray) -> np.ndarray:
    """An `MLP` (Dense_i, ReLU, and LayerNorm_i when present) evaluated with numpy."""
    count = sum(name.startswith("Dense_") for name in layers)
    for i in range(count):
        dense = layers[f"Dense_{i}"]
        x = x @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
        if i < count - 1:
            x = np.maximum(x, 0.0)
            if f"LayerNorm_{i}" in layers:
                norm = layers[f"LayerNorm_{i}"]
                centred = x - x.mean(-1, keepdims=True)
                x = centred / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
                x = x * np.asarray(norm["scale"]) + np.asarray(norm["bias"])
    return x


def test_bc_loss_is_mean_squared_error_over_batch_and_action_axes():
    predicted = np.array([[0.5, -0.2], [0.1, 0.9], [-1.0, 0.0]], np.float32)
    actions = np.array([[0.0, 0.0], [0.1, 1.0], [1.0, -0.5]], np.float32)
    # (0.25 + 0.04 + 0 + 0.01 + 4 + 0.25) / 6
    assert float(bc.bc_loss(predicted, actions)) == pytest.approx(4.55 / 6, rel=1e-6)


def test_td3_target_with_clipped_smoothing_noise_matches_numpy():
    config = td3_bc.TD3BCConfig(actor_hidden_dims=(8, 8), critic_hidden_dims=(8,))
    spaces = Spaces(observation_dim=3, action_dim=2)
    state = td3_bc.init(config, jax.random.PRNGKey(3), spaces, DatasetStats.identity(3), 10)
    # Make the target networks differ from the online ones, so the test sees which is used.
    state = state.replace(
        target_actor_params=jax.tree.map(lambda p: p * 1.5, state.target_actor_params),
        target_critic_params=jax.tree.map(lambda p: p - 0.1, state.target_critic_params),
    )
    next_obs = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.7], [-2.0, 0.1, 0.4]], np.float32)
    # Large standard-normal draws so that 0.2 * noise exceeds the 0.5 clip on some entries.
    noise = np.array([[4.0, -0.5], [-3.0, 1.0], [0.2, 10.0]], np.float32)
    rewards = np.array([1.0, -0.5, 2.0], np.float32)
    terminals = np.array([0.0, 1.0, 0.0], np.float32)

    batch = Batch(observations=np.zeros((3, 3), np.float32), actions=np.zeros((3, 2), np.float32),
                  rewards=rewards, next_observations=next_obs, terminals=terminals)
    target = td3_bc._critic_target(config, state, jax.tree.map(jnp.asarray, batch),
                                   jnp.asarray(next_obs), jnp.asarray(noise))

    actor_params = state.target_actor_params["params"]
    next_actions = np.tanh(numpy_layer_mlp(actor_params["MLP_0"], next_obs))
    smoothing = np.clip(0.2 * noise, -0.5, 0.5)
    assert smoothing[0, 0] == 0.5 and smoothing[1, 0] == -0.5 and smoothing[2, 1] == 0.5
    next_actions = np.clip(next_actions + smoothing, -1.0, 1.0)
    critic_params = state.target_critic_params["params"]
    inputs = np.concatenate([next_obs, next_actions], axis=1)
    twin_q = [numpy_layer_mlp(jax.tree.map(lambda p, i=i: np.asarray(p)[i], critic_params["MLP_0"]),
                              inputs)[:, 0]
              for i in range(2)]
    expected = rewards + 0.99 * (1.0 - terminals) * np.minimum(*twin_q)
    np.testing.assert_allclose(np.asarray(target), expected, rtol=1e-5, atol=1e-6)


def test_td3_bc_actor_loss_normalises_q_without_differentiating_the_normaliser():
    q = np.array([2.0, -4.0, 6.0], np.float32)
    policy = np.array([[0.5], [0.0], [-0.5]], np.float32)
    actions = np.array([[0.0], [0.0], [0.5]], np.float32)
    lam = 2.5 / np.mean(np.abs(q))
    expected = -lam * np.mean(q) + np.mean((policy - actions) ** 2)
    loss = td3_bc.td3_bc_actor_loss(jnp.asarray(q), jnp.asarray(policy), jnp.asarray(actions), 2.5)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    # lambda is a constant: dL/dQ_i = -lambda / B for every i.
    grad = jax.grad(lambda q: td3_bc.td3_bc_actor_loss(q, policy, actions, 2.5))(jnp.asarray(q))
    np.testing.assert_allclose(np.asarray(grad), np.full(3, -lam / 3), rtol=1e-6)


def test_expectile_loss_weights_positive_and_negative_errors_asymmetrically():
    differences = np.array([-2.0, -0.5, 0.0, 1.0, 3.0], np.float32)
    # tau = 0.7 on positive u = Q - V, 0.3 on the rest: (1.2 + 0.075 + 0 + 0.7 + 6.3) / 5
    assert float(iql.expectile_loss(jnp.asarray(differences), 0.7)) == pytest.approx(1.655)
    # expectile 0.5 is half the mean squared error
    half = float(iql.expectile_loss(jnp.asarray(differences), 0.5))
    assert half == pytest.approx(0.5 * np.mean(differences**2))


def test_advantage_weights_are_exponentiated_and_clipped():
    advantages = np.array([-1.0, 0.0, 1.0, 2.0], np.float32)
    weights = np.asarray(nets.advantage_weights(jnp.asarray(advantages), 3.0, 100.0))
    np.testing.assert_allclose(weights, [math.exp(-3.0), 1.0, math.exp(3.0), 100.0], rtol=1e-6)
    log_probs = np.array([-1.0, -2.0, 0.5, -0.3], np.float32)
    loss = nets.awr_actor_loss(jnp.asarray(log_probs), jnp.asarray(weights))
    assert float(loss) == pytest.approx(float(-np.mean(weights * log_probs)), rel=1e-6)
    # The weights are targets, not parameters: no gradient flows into them.
    grad_w = jax.grad(lambda w: nets.awr_actor_loss(jnp.asarray(log_probs), w))(
        jnp.asarray(weights))
    assert np.all(np.asarray(grad_w) == 0.0)


def test_iql_reward_scale_is_1000_over_the_episode_return_range():
    stats = DatasetStats.identity(2)._replace(episode_return_min=jnp.float32(-1500.0),
                                              episode_return_max=jnp.float32(-250.0))
    assert float(iql.return_range_reward_scale(stats)) == pytest.approx(1000.0 / 1250.0)
    flat = stats._replace(episode_return_max=jnp.float32(-1500.0))
    assert float(iql.return_range_reward_scale(flat)) == 1.0


def _numpy_logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    return np.log(np.sum(np.exp(x.astype(np.float64)), axis=axis))


@pytest.mark.parametrize("importance_sampling", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_cql_logsumexp_penalty_matches_numpy(importance_sampling, temperature):
    rng = np.random.default_rng(0)
    critics, batch, n, action_dim = 2, 4, 3, 2
    q_data = rng.normal(size=(critics, batch)).astype(np.float32)
    q_random, q_current, q_next = (rng.normal(size=(critics, batch, n)).astype(np.float32)
                                   for _ in range(3))
    logp_current, logp_next = (rng.normal(size=(batch, n)).astype(np.float32) for _ in range(2))

    gap = cql.cql_penalty(q_data, q_random, q_current, q_next, logp_current, logp_next,
                          action_dim, temperature, importance_sampling)

    if importance_sampling:
        density_uniform = 0.5**action_dim  # uniform on [-1, 1]^2
        parts = [q_random - np.log(density_uniform), q_next - logp_next, q_current - logp_current]
    else:
        parts = [q_random, q_next, q_current]
    candidates = np.concatenate(parts, axis=-1)  # (critics, batch, 3n)
    expected = np.mean(temperature * _numpy_logsumexp(candidates / temperature, -1) - q_data, -1)
    assert gap.shape == (critics,)
    np.testing.assert_allclose(np.asarray(gap), expected, rtol=1e-5)


def test_cql_penalty_pushes_sampled_q_down_and_data_q_up():
    q_data = jnp.zeros((1, 2))
    q_sampled = jnp.zeros((1, 2, 3))
    logp = jnp.zeros((2, 3))
    grads = jax.grad(lambda qd, qs: jnp.sum(cql.cql_penalty(qd, qs, qs, qs, logp, logp, 1, 1.0,
                                                            True)), argnums=(0, 1))(
        q_data, q_sampled)
    assert np.all(np.asarray(grads[0]) < 0)  # minimising raises Q on dataset actions
    assert np.all(np.asarray(grads[1]) > 0)  # and lowers it on sampled actions


def test_sac_losses_match_numpy():
    log_probs = np.array([-1.0, 0.5, -2.0], np.float32)
    q = np.array([3.0, -1.0, 0.5], np.float32)
    assert float(cql.sac_actor_loss(log_probs, q, jnp.float32(0.2))) == pytest.approx(
        float(np.mean(0.2 * log_probs - q)))
    # target entropy -2: loss = -log_alpha * mean(logp - 2)
    loss = cql.entropy_alpha_loss(jnp.float32(0.3), jnp.asarray(log_probs), -2.0)
    assert float(loss) == pytest.approx(-0.3 * float(np.mean(log_probs - 2.0)), rel=1e-6)


def test_gaussian_and_tanh_gaussian_log_densities_match_numpy():
    mean = np.array([[0.2, -0.4], [1.0, 0.0]], np.float32)
    log_std = np.array([[-0.5, 0.3], [0.0, -1.0]], np.float32)
    actions = np.array([[0.1, 0.7], [-0.9, 0.99]], np.float32)
    std = np.exp(log_std)
    normal = -0.5 * ((actions - mean) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(np.asarray(gaussian_log_prob(mean, log_std, actions)),
                               normal.sum(-1), rtol=1e-5)
    u = np.arctanh(actions)
    squashed = -0.5 * ((u - mean) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi)) - np.log(
        1 - actions**2)
    np.testing.assert_allclose(np.asarray(tanh_gaussian_log_prob(mean, log_std, actions)),
                               squashed.sum(-1), rtol=1e-4)
    # The sampler's log-density agrees with the density of the action it returns.
    sampled, log_prob = tanh_gaussian_sample(jnp.asarray(mean), jnp.asarray(log_std),
                                             jax.random.PRNGKey(0), 5)
    assert sampled.shape == (2, 5, 2) and log_prob.shape == (2, 5)
    again = tanh_gaussian_log_prob(jnp.asarray(mean)[:, None], jnp.asarray(log_std)[:, None],
                                   sampled, epsilon=0.0)
    np.testing.assert_allclose(np.asarray(log_prob), np.asarray(again), rtol=1e-3, atol=1e-3)


def test_td_target_bootstraps_only_non_terminal_transitions():
    target = td_target(jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0]), jnp.array([10.0, 10.0]),
                       0.9)
    np.testing.assert_allclose(np.asarray(target), [10.0, 2.0])


@pytest.mark.parametrize("in_dim,out_dim", [(11, 256), (256, 256), (256, 3), (64, 1)])
def test_dense_matmul_gradients_equal_plain_matmul_gradients(in_dim, out_dim):
    """The layer's hand-written backward pass (skinny operands transposed first) gives the
    gradients of a plain matmul, also under vmap over an ensemble axis as the critics use."""
    from seqeval.algorithms.cpu_layers import dense_matmul

    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    inputs = jax.random.normal(keys[0], (2, 5, 7, in_dim))  # (ensemble, batch, samples, in)
    kernel = jax.random.normal(keys[1], (2, in_dim, out_dim))
    weights = jax.random.normal(keys[2], (2, 5, 7, out_dim))

    def loss(matmul, x, w):
        return jnp.sum(jnp.tanh(jax.vmap(matmul)(x, w)) * weights)

    got = jax.grad(lambda x, w: loss(dense_matmul, x, w), argnums=(0, 1))(inputs, kernel)
    want = jax.grad(lambda x, w: loss(jnp.matmul, x, w), argnums=(0, 1))(inputs, kernel)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cpu_layers", [True, False])
@pytest.mark.parametrize("options", [MLPOptions(), LAYER_NORM_OPTIONS])
def test_critic_ensemble_members_equal_the_single_network_on_their_parameters(
        monkeypatch, cpu_layers, options):
    """The ensemble (feature-major on CPU, row-major elsewhere) computes, member by member,
    what StateActionValue computes on that member's parameters (so `member` can apply one)."""
    monkeypatch.setattr(nets, "use_cpu_layers", lambda: cpu_layers)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    observations = jax.random.normal(keys[0], (4, 6, 5))  # (batch, samples, observation)
    actions = jax.random.uniform(keys[1], (4, 6, 2), minval=-1.0, maxval=1.0)
    ensemble = StateActionEnsemble((16, 8), size=3, options=options)
    params = ensemble.init(keys[2], observations, actions)
    q = ensemble.apply(params, observations, actions)
    assert q.shape == (3, 4, 6)
    single = StateActionValue((16, 8), options)
    for index in range(3):
        np.testing.assert_allclose(
            np.asarray(q[index]),
            np.asarray(single.apply(member(params, index), observations, actions)),
            rtol=1e-5, atol=1e-5)
    # Members are initialised independently, with kernels scaled by each member's fan-in.
    kernels = params["params"]["MLP_0"]["Dense_1"]["kernel"]
    assert not np.allclose(kernels[0], kernels[1])
    uniform = options.kernel_init == "fan_in_uniform"  # U(+-b) has std b / sqrt(3)
    expected_std = (1 / 16) ** 0.5 / (3**0.5 if uniform else 1.0)
    assert float(jnp.std(kernels)) == pytest.approx(expected_std, rel=0.3)


def _outputs_and_gradients(module, params, *inputs):
    def loss(params, *inputs):
        outputs = module.apply(params, *inputs)
        return jnp.sum(jnp.sin(outputs)), outputs

    (_, outputs), grads = jax.value_and_grad(loss, argnums=tuple(range(len(inputs) + 1)),
                                             has_aux=True)(params, *inputs)
    return outputs, grads


@pytest.mark.parametrize("options", [MLPOptions(), LAYER_NORM_OPTIONS])
def test_cpu_layers_and_plain_layers_agree_on_the_same_parameters(monkeypatch, options):
    """On the CPU backend the networks use seqeval.algorithms.cpu_layers, elsewhere the plain
    layers: same parameter tree (and initial values), same outputs and gradients."""
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    observations = jax.random.normal(keys[0], (5, 7, 11))  # (batch, samples, observation)
    actions = jax.random.uniform(keys[1], (5, 7, 3), minval=-1.0, maxval=1.0)
    cases = [(StateActionEnsemble((32, 16), 2, options), (observations, actions)),
             (StateActionEnsemble((32,), 3, options), (observations[:, 0], actions[:, 0])),
             (nets.DeterministicActor((40, 8), 3, options), (observations,))]
    for module, inputs in cases:
        results, programs = {}, {}
        for cpu_layers in (True, False):
            monkeypatch.setattr(nets, "use_cpu_layers", lambda cpu_layers=cpu_layers: cpu_layers)
            # Jitted (op-by-op dispatch costs ~15 s here), through new functions so that each
            # layer choice is traced afresh; the two programs must really differ.
            params = jax.jit(lambda k, *x, m=module: m.init(k, *x))(keys[2], *inputs)
            forward = jax.jit(lambda p, *x, m=module: _outputs_and_gradients(m, p, *x))
            programs[cpu_layers] = str(forward.lower(params, *inputs).as_text())
            results[cpu_layers] = (params, *forward(params, *inputs))
        assert programs[True] != programs[False]
        (cpu_params, *cpu), (plain_params, *plain) = results[True], results[False]
        assert jax.tree.structure(cpu_params) == jax.tree.structure(plain_params)
        for a, b in zip(jax.tree.leaves(cpu_params), jax.tree.leaves(plain_params), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(cpu), jax.tree.leaves(plain), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_ensemble_layer_norm_is_flax_layer_norm_per_member():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 9)) * 3.0 + 1.0  # (members, rows, width)
    layer = nets.EnsembleLayerNorm(2)
    params = jax.tree.map(lambda p: p + jax.random.uniform(jax.random.PRNGKey(1), p.shape),
                          layer.init(jax.random.PRNGKey(0), x))
    got = layer.apply(params, x)
    flax_norm = nn.LayerNorm()
    for i in range(2):
        want = flax_norm.apply({"params": member(params["params"], i)}, x[i])
        np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), rtol=1e-5, atol=1e-5)
    feature_major = nets.EnsembleLayerNorm(2, feature_axis=-2).apply(params,
                                                                     jnp.swapaxes(x, 1, 2))
    np.testing.assert_allclose(np.asarray(jnp.swapaxes(feature_major, 1, 2)), np.asarray(got),
                               rtol=1e-5, atol=1e-5)


def test_mlp_initialisation_options_follow_their_definitions():
    options = MLPOptions(kernel_init="fan_in_uniform", hidden_bias=0.1, output_scale=3e-3)
    params = nets.MLP((256, 256), 1, options).init(jax.random.PRNGKey(0), jnp.ones((1, 20)))
    layers = params["params"]
    first = np.asarray(layers["Dense_0"]["kernel"])
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's nn.Linear: bounded, std bound/sqrt(3).
    assert np.abs(first).max() <= 1 / np.sqrt(20) and first.std() == pytest.approx(
        1 / np.sqrt(20) / np.sqrt(3), rel=0.05)
    np.testing.assert_array_equal(np.asarray(layers["Dense_1"]["bias"]), np.full(256, 0.1,
                                                                                  np.float32))
    last_kernel, last_bias = (np.asarray(layers["Dense_2"][k]) for k in ("kernel", "bias"))
    assert np.abs(last_kernel).max() <= 3e-3 and np.abs(last_bias).max() <= 3e-3
    assert last_kernel.std() == pytest.approx(3e-3 / np.sqrt(3), rel=0.2)
    with pytest.raises(ValueError, match="kernel_init"):
        MLPOptions(kernel_init="orthogonal")


def test_rebrac_target_penalises_departure_from_the_datasets_next_action():
    rewards = np.array([1.0, -0.5, 2.0, 0.3], np.float32)
    terminals = np.array([0.0, 1.0, 0.0, 0.0], np.float32)
    next_q = np.array([5.0, 4.0, -3.0, 1.0], np.float32)
    next_actions = np.array([[0.5, -0.5], [0.1, 0.2], [1.0, 1.0], [0.0, 0.9]], np.float32)
    dataset_next = np.array([[0.0, 0.0], [0.3, 0.2], [-1.0, 1.0], [0.9, -0.9]], np.float32)
    valid = np.array([1.0, 1.0, 1.0, 0.0], np.float32)  # row 3: no next action known
    target = rebrac.rebrac_critic_target(*map(jnp.asarray, (
        rewards, terminals, next_q, next_actions, dataset_next, valid)), 0.9, 0.1)
    penalty = np.array([0.5, 0.04, 4.0, 0.0], np.float32)  # squared distance, summed
    expected = rewards + 0.9 * (1.0 - terminals) * (next_q - 0.1 * penalty)
    np.testing.assert_allclose(np.asarray(target), expected, rtol=1e-6)


def test_rebrac_actor_loss_matches_numpy_and_its_normaliser_carries_no_gradient():
    q = np.array([2.0, -4.0, 6.0], np.float32)
    policy = np.array([[0.5, 0.1], [0.0, -0.2], [-0.5, 0.3]], np.float32)
    actions = np.array([[0.0, 0.1], [0.0, 0.2], [0.5, 0.3]], np.float32)
    bc = np.sum((policy - actions) ** 2, axis=-1)
    lam = 1.0 / np.mean(np.abs(q))
    expected = np.mean(0.3 * bc - lam * q)
    loss = rebrac.rebrac_actor_loss(jnp.asarray(q), jnp.asarray(policy), jnp.asarray(actions),
                                    0.3, True)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    grad = jax.grad(lambda q: rebrac.rebrac_actor_loss(q, policy, actions, 0.3, True))(
        jnp.asarray(q))
    np.testing.assert_allclose(np.asarray(grad), np.full(3, -lam / 3), rtol=1e-6)
    raw = rebrac.rebrac_actor_loss(jnp.asarray(q), jnp.asarray(policy), jnp.asarray(actions),
                                   0.3, False)
    assert float(raw) == pytest.approx(float(np.mean(0.3 * bc - q)), rel=1e-6)


def test_rebrac_critic_target_with_its_networks_matches_numpy():
    config = rebrac.ReBRACConfig(actor_hidden_dims=(8, 8), critic_hidden_dims=(8, 8),
                                 critic_bc_coef=0.5)
    spaces = Spaces(observation_dim=3, action_dim=2)
    state = rebrac.init(config, jax.random.PRNGKey(3), spaces, DatasetStats.identity(3), 10)
    state = state.replace(
        target_actor_params=jax.tree.map(lambda p: p * 1.5, state.target_actor_params),
        target_critic_params=jax.tree.map(lambda p: p - 0.1, state.target_critic_params),
    )
    next_obs = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.7], [-2.0, 0.1, 0.4]], np.float32)
    noise = np.array([[4.0, -0.5], [-3.0, 1.0], [0.2, 10.0]], np.float32)
    batch = Batch(observations=np.zeros((3, 3), np.float32), actions=np.zeros((3, 2), np.float32),
                  rewards=np.array([1.0, -0.5, 2.0], np.float32), next_observations=next_obs,
                  terminals=np.array([0.0, 1.0, 0.0], np.float32),
                  next_actions=np.array([[0.2, 0.2], [0.0, 0.0], [-0.7, 0.4]], np.float32),
                  next_action_valid=np.array([1.0, 1.0, 0.0], np.float32))
    target = rebrac._critic_target(config, state, jax.tree.map(jnp.asarray, batch),
                                   jnp.asarray(next_obs), jnp.asarray(noise))

    next_actions = np.tanh(numpy_layer_mlp(state.target_actor_params["params"]["MLP_0"],
                                           next_obs))
    next_actions = np.clip(next_actions + np.clip(0.2 * noise, -0.5, 0.5), -1.0, 1.0)
    critics = state.target_critic_params["params"]["MLP_0"]
    assert "LayerNorm_0" in critics  # ReBRAC's critics normalise every hidden layer
    inputs = np.concatenate([next_obs, next_actions], axis=1)
    twin_q = [numpy_layer_mlp(jax.tree.map(lambda p, i=i: np.asarray(p)[i], critics),
                              inputs)[:, 0] for i in range(2)]
    penalty = batch.next_action_valid * np.sum((next_actions - batch.next_actions) ** 2, -1)
    expected = batch.rewards + 0.99 * (1.0 - batch.terminals) * (np.minimum(*twin_q)
                                                                 - 0.5 * penalty)
    np.testing.assert_allclose(np.asarray(target), expected, rtol=1e-5, atol=1e-5)


def test_awac_weights_are_the_exponentiated_advantage_of_data_over_policy_actions():
    q_data = np.array([[1.0, 0.0, 5.0], [2.0, -1.0, 4.0]], np.float32)  # twins x batch
    q_policy = np.array([[0.5, 0.5, -20.0], [0.0, 1.0, -30.0]], np.float32)
    weights = awac.awac_weights(jnp.asarray(q_data), jnp.asarray(q_policy), 0.5, 100.0)
    advantages = q_data.min(0) - q_policy.min(0)  # [1, -1, 34]
    np.testing.assert_allclose(np.asarray(weights),
                               np.minimum(np.exp(advantages / 0.5), 100.0), rtol=1e-6)
    assert float(weights[2]) == 100.0


def test_awac_critic_target_at_the_policy_mean_matches_numpy():
    config = awac.AWACConfig(actor_hidden_dims=(8,), critic_hidden_dims=(8, 8))
    spaces = Spaces(observation_dim=3, action_dim=2)
    state = awac.init(config, jax.random.PRNGKey(4), spaces, DatasetStats.identity(3), 10)
    state = state.replace(
        target_critic_params=jax.tree.map(lambda p: p + 0.05, state.target_critic_params))
    next_obs = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.7]], np.float32)
    batch = Batch(observations=np.zeros((2, 3), np.float32), actions=np.zeros((2, 2), np.float32),
                  rewards=np.array([1.0, -2.0], np.float32), next_observations=next_obs,
                  terminals=np.array([1.0, 0.0], np.float32))
    target = awac._critic_target(config, state, jax.tree.map(jnp.asarray, batch),
                                 jnp.asarray(next_obs), None)
    mean = np.tanh(numpy_layer_mlp(state.actor.params["params"]["MLP_0"], next_obs))
    inputs = np.concatenate([next_obs, mean], axis=1)
    critics = state.target_critic_params["params"]["MLP_0"]
    twin_q = [numpy_layer_mlp(jax.tree.map(lambda p, i=i: np.asarray(p)[i], critics),
                              inputs)[:, 0] for i in range(2)]
    expected = batch.rewards + 0.99 * (1.0 - batch.terminals) * np.minimum(*twin_q)
    np.testing.assert_allclose(np.asarray(target), expected, rtol=1e-5, atol=1e-5)

"""Programs run a few times are compiled quickly, with options this jaxlib accepts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqeval import compilation


@pytest.fixture
def fresh_probe():
    compilation.quick_compile_options.cache_clear()
    yield
    compilation.quick_compile_options.cache_clear()


def test_quick_options_are_accepted_and_compute_the_same(fresh_probe):
    options = compilation.quick_compile_options()
    assert options is not None and options["xla_backend_optimization_level"] == 0
    x = np.linspace(-2.0, 2.0, 64, dtype=np.float32).reshape(8, 8)
    quick = compilation.jit_once(lambda a: jnp.tanh(a @ a.T).sum(0))(x)
    default = jax.jit(lambda a: jnp.tanh(a @ a.T).sum(0))(x)
    np.testing.assert_allclose(np.asarray(quick), np.asarray(default), rtol=1e-5)


def test_an_option_this_jaxlib_refuses_falls_back_to_the_next(fresh_probe, monkeypatch):
    refused = {"xla_backend_optimization_level": 0, "xla_no_such_option_here": True}
    monkeypatch.setattr(compilation, "QUICK_COMPILE_OPTIONS",
                        (refused, {"xla_backend_optimization_level": 0}))
    assert compilation.quick_compile_options() == {"xla_backend_optimization_level": 0}
    monkeypatch.setattr(compilation, "QUICK_COMPILE_OPTIONS", (refused,))
    compilation.quick_compile_options.cache_clear()
    assert compilation.quick_compile_options() is None
    assert float(compilation.jit_once(lambda a: a + 1)(np.float32(1))) == 2.0

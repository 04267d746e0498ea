"""Programs a run calls only a few times, compiled quickly.

A run compiles two kinds of program. The training programs, the policy and the explorer run for
most of a run's time and get XLA's full optimisation. The others run once or a few times per run
(the agents' vmapped `init`, the contract check's first actions, each seed's permutation,
retrain's member subsets), and on a CPU their compile time dwarfs their run time: XLA:CPU compiled
TD3+BC's vmapped init for 4 seeds (a 1,400-line program) in 4.8 s at its defaults and in 0.4 s
at optimisation level 0 without the fusion emitters (measured on the 2-core machine). Their
results agree to float rounding (the inits differ by at most one ulp), and a run always compiles
them the same way, so the same settings still give the same numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

# Tried in order; the first this jaxlib accepts is used. The fusion-emitter option may leave a
# later XLA (an unknown option is refused at compile time, so a probe finds out).
QUICK_COMPILE_OPTIONS: tuple[dict[str, Any], ...] = (
    {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False},
    {"xla_backend_optimization_level": 0},
)


@functools.cache
def quick_compile_options() -> dict[str, Any] | None:
    """XLA options for programs run a few times (None off the CPU: the GPU's compiler is not
    the bottleneck there, and its options differ)."""
    if jax.default_backend() != "cpu":
        return None
    for options in QUICK_COMPILE_OPTIONS:
        try:
            jax.jit(lambda x: x + 1, compiler_options=options)(np.float32(0)).block_until_ready()
        except jax.errors.JaxRuntimeError:
            continue
        return dict(options)
    return None


def jit_once(fun: Callable, **jit_kwargs: Any) -> Callable:
    """`jax.jit` for a program a run calls only a few times: compiled quickly on a CPU.

    The options are chosen at the first call, so that decorating a module's function does not
    start JAX's backend when the module is imported."""
    jitted: Callable | None = None

    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal jitted
        if jitted is None:
            jitted = jax.jit(fun, compiler_options=quick_compile_options(), **jit_kwargs)
        return jitted(*args, **kwargs)

    return call


__all__ = ["QUICK_COMPILE_OPTIONS", "jit_once", "quick_compile_options"]

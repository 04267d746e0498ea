"""XLA:CPU flags the suite compiles with (set by tests/conftest.py before JAX starts), in a
module of their own so that conftest can read them before anything imports JAX.

The suite's programs are tiny and each runs briefly: XLA:CPU's compile time, not run time,
dominates it. Measured on the 2-core machine (four agents' 200-update programs, compile seconds
/ run seconds): XLA's defaults 15.9 / 0.8; level 0 (no LLVM optimisation passes) 9.7 / 1.9;
level 0 without the new fusion emitters 3.7 / 2.4. Speed is measured in benchmarks/ at XLA's
defaults, never here. Tests whose time goes to long training loops run in a child process with
the fusion emitters at level 1 (helpers.optimized_environment): 5,000 learning updates took
11-15% less CPU there than at the default level 2 (TD3+BC 14.4 against 16.8 CPU-s, CQL 46
against 53, ReBRAC 19.6 against 22.8), with the same scores."""

from __future__ import annotations

import os
import subprocess
import sys

OPTIMISATION_LEVEL_0 = "--xla_backend_optimization_level=0"
# The fusion emitters' code generation is most of a small program's compile at level 0. The
# flag may leave a later jaxlib (XLA aborts on an unknown flag), so it is used only where a
# child process with it starts JAX.
LEGACY_FUSION_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
SUITE_FLAGS = (OPTIMISATION_LEVEL_0, LEGACY_FUSION_EMITTERS)


def _jax_accepts(flag: str) -> bool:
    probe = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    environment = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    try:
        done = subprocess.run([sys.executable, "-c", probe], env=environment,
                              capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def set_suite_flags() -> None:
    """Add the suite's flags to XLA_FLAGS unless the user's own choice names them; workers,
    CLI subprocesses and Ray runs inherit the variable."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" not in flags:
        flags = f"{flags} {OPTIMISATION_LEVEL_0}"
    if "--xla_cpu_use_fusion_emitters" not in flags and _jax_accepts(LEGACY_FUSION_EMITTERS):
        flags = f"{flags} {LEGACY_FUSION_EMITTERS}"
    os.environ["XLA_FLAGS"] = flags.strip()


def training_flags(flags: str) -> str:
    """`flags` without the suite's own, at optimisation level 1 (unless the user's own flags
    name a level): for long training loops."""
    for flag in SUITE_FLAGS:
        flags = flags.replace(flag, "")
    if "--xla_backend_optimization_level" not in flags:
        flags = f"{flags} --xla_backend_optimization_level=1"
    return " ".join(flags.split())

"""Shared set-up: full float32 matmuls on accelerators; every test leaves x64 as it found it."""

import os

import jax
import pytest


def pytest_configure(config):
  """Runs float32 matmuls in full float32 on GPUs and TPUs, as on a CPU.

  JAX's default matmul precision lets a GPU (Ampere and later) compute float32
  dots in TF32 and a TPU in bfloat16 passes, about 1e-3 relative error, which
  the float32 tolerances here (1e-6 to 2e-6) are not meant to absorb: they check
  the explicit BPTT and the scan against each other, not the hardware's rounding.
  A precision set in the environment (JAX_DEFAULT_MATMUL_PRECISION) wins.
  """
  del config
  if ("JAX_DEFAULT_MATMUL_PRECISION" not in os.environ
      and jax.default_backend() != "cpu"):
    jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(autouse=True)
def restore_x64():
  before = jax.config.jax_enable_x64
  yield
  jax.config.update("jax_enable_x64", before)

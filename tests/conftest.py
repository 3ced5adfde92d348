"""Shared fixtures: every test leaves x64 as it found it."""

import jax
import pytest


@pytest.fixture(autouse=True)
def restore_x64():
  before = jax.config.jax_enable_x64
  yield
  jax.config.update("jax_enable_x64", before)

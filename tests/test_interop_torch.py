"""jaxrnn.interop against torch.nn.RNN/LSTM/GRU: same outputs and states, exact round trips."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxrnn
from jaxrnn import interop

T, B, I, H = 5, 3, 4, 6
TOL = dict(rtol=1e-5, atol=1e-5)

CASES = (
    ("rnn_tanh", torch.nn.RNN, dict()),
    ("rnn_relu_no_bias_2_layers", torch.nn.RNN, dict(nonlinearity="relu", bias=False, num_layers=2)),
    ("rnn_bidirectional", torch.nn.RNN, dict(bidirectional=True, num_layers=2)),
    ("lstm", torch.nn.LSTM, dict()),
    ("lstm_3_layers_dropout", torch.nn.LSTM, dict(num_layers=3, dropout=0.25)),
    ("lstm_bidirectional_batch_first", torch.nn.LSTM,
     dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("lstm_no_bias_bidirectional", torch.nn.LSTM, dict(bias=False, bidirectional=True)),
    ("gru_batch_first", torch.nn.GRU, dict(batch_first=True)),
    ("gru_3_layers_bidirectional_batch_first", torch.nn.GRU,
     dict(num_layers=3, bidirectional=True, batch_first=True)),
    ("gru_no_bias_2_layers", torch.nn.GRU, dict(bias=False, num_layers=2)),
)


def _random_module(cls, kwargs, seed=0, dtype=torch.float32):
  """A module with every weight and bias drawn N(0, 0.5^2), not PyTorch's init."""
  torch.manual_seed(seed)
  module = cls(I, H, **kwargs).to(dtype)
  with torch.no_grad():
    for p in module.parameters():
      p.normal_(0.0, 0.5)
  return module.eval()


def _numpy(x):
  return x.detach().numpy()


class FromTorchTest(parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  def test_outputs_and_final_state_match(self, cls, kwargs):
    module = _random_module(cls, kwargs)
    batch_first = kwargs.get("batch_first", False)
    num_states = module.num_layers * (2 if module.bidirectional else 1)
    xs = torch.randn((B, T, I) if batch_first else (T, B, I))
    h0 = torch.randn(num_states, B, H)
    c0 = torch.randn(num_states, B, H) if cls is torch.nn.LSTM else None
    with torch.no_grad():
      ys, final = module(xs, h0 if c0 is None else (h0, c0))

    model, params = interop.from_torch(module)
    state = interop.from_torch_state(params, h0, c0)
    our_final, our_ys = jaxrnn.unroll(model, params, jnp.asarray(_numpy(xs)), state,
                                      time_major=not batch_first)

    np.testing.assert_allclose(our_ys, _numpy(ys), **TOL)
    expected = (final,) if c0 is None else final
    ours = interop.to_torch_state(params, our_final)
    ours = (ours,) if c0 is None else ours
    for a, b in zip(ours, expected):
      np.testing.assert_allclose(a, _numpy(b), **TOL)
    # The nested state is the one from_torch_state builds from h_n and c_n.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), our_final,
                 interop.from_torch_state(params, *expected))

  @parameterized.named_parameters(*CASES)
  def test_round_trip_is_exact(self, cls, kwargs):
    module = _random_module(cls, kwargs)
    model, params = interop.from_torch(module)
    # check=False: ToTorchTest covers the check; here only the tensors matter.
    state_dict = interop.to_torch(model, params, check=False)

    fresh = cls(I, H, **kwargs)
    fresh.load_state_dict(state_dict, strict=True)
    self.assertEqual(list(state_dict), list(module.state_dict()))
    for name, tensor in module.state_dict().items():
      self.assertEqual(state_dict[name].dtype, torch.float32, name)
      self.assertTrue(torch.equal(state_dict[name], tensor), name)
    jax.tree.map(lambda p: self.assertEqual(p.dtype, jnp.float32), params)

  @parameterized.named_parameters(
      ("single_layer", dict(), jaxrnn.LSTMParams),
      ("bidirectional", dict(bidirectional=True), jaxrnn.StackParams),
      ("two_layers", dict(num_layers=2), jaxrnn.StackParams),
  )
  def test_layout_is_a_bare_cell_only_for_one_unidirectional_layer(self, kwargs, param_type):
    _, params = interop.from_torch(_random_module(torch.nn.LSTM, kwargs))
    self.assertIsInstance(params, param_type)
    if kwargs.get("bidirectional"):
      self.assertIsInstance(params.layers[0], jaxrnn.BidirectionalParams)
    if param_type is jaxrnn.StackParams:
      self.assertLen(params.layers, kwargs.get("num_layers", 1))

  def test_float64_is_kept(self):
    with jax.enable_x64(True):
      module = _random_module(torch.nn.GRU, dict(num_layers=2, bidirectional=True),
                              dtype=torch.float64)
      model, params = interop.from_torch(module)
      jax.tree.map(lambda p: self.assertEqual(p.dtype, jnp.float64), params)
      xs = torch.randn(T, B, I, dtype=torch.float64)
      with torch.no_grad():
        ys, _ = module(xs)
      _, our_ys = jaxrnn.unroll(model, params, jnp.asarray(_numpy(xs)))
      np.testing.assert_allclose(our_ys, _numpy(ys), rtol=1e-12, atol=1e-12)
      state_dict = interop.to_torch(model, params)
    for name, tensor in module.state_dict().items():
      self.assertEqual(state_dict[name].dtype, torch.float64, name)
      self.assertTrue(torch.equal(state_dict[name], tensor), name)

  def test_dropout_is_carried_over(self):
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((T, B, I)), jnp.float32)
    rng = jax.random.key(0)
    for dropout, changes in ((0.0, False), (0.5, True)):
      model, params = interop.from_torch(
          _random_module(torch.nn.GRU, dict(num_layers=2, dropout=dropout)))
      _, ys = jaxrnn.unroll(model, params, xs)
      _, dropped = jaxrnn.unroll(model, params, xs, rng=rng)
      self.assertEqual(not np.array_equal(ys, dropped), changes, f"dropout={dropout}")

  def test_unbatched_state_layout(self):
    module = _random_module(torch.nn.LSTM, dict(num_layers=2, bidirectional=True))
    _, params = interop.from_torch(module)
    h_n, c_n = np.arange(2 * 4 * H, dtype=np.float32).reshape(2, 4, H)
    state = interop.from_torch_state(params, h_n, c_n)
    np.testing.assert_array_equal(state.layers[1].forward.hidden, h_n[2])
    np.testing.assert_array_equal(state.layers[0].backward.cell, c_n[1])
    back_h, back_c = interop.to_torch_state(params, state)
    np.testing.assert_array_equal(back_h, h_n)
    np.testing.assert_array_equal(back_c, c_n)


class ToTorchTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("rnn_relu", lambda: jaxrnn.rnn(H, activation="relu"), torch.nn.RNN,
       dict(nonlinearity="relu")),
      ("lstm_no_bias", lambda: jaxrnn.lstm(H, bias=False, forget_bias=0.0), torch.nn.LSTM,
       dict(bias=False)),
      ("gru", lambda: jaxrnn.gru(H), torch.nn.GRU, dict()),
  )
  def test_jaxrnn_cell_runs_the_same_in_torch(self, make_cell, cls, kwargs):
    model = jaxrnn.stack([jaxrnn.bidirectional(make_cell(), make_cell()) for _ in range(2)])
    params = model.init(jax.random.key(1), I)
    module = cls(I, H, num_layers=2, bidirectional=True, **kwargs)
    module.load_state_dict(interop.to_torch(model, params), strict=True)
    xs = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    with torch.no_grad():
      ys, _ = module(torch.from_numpy(xs))
    _, our_ys = jaxrnn.unroll(model, params, jnp.asarray(xs))
    np.testing.assert_allclose(our_ys, _numpy(ys), **TOL)

  def test_reset_before_gru_is_rejected(self):
    model = jaxrnn.gru(H, reset_after=False)
    params = model.init(jax.random.key(0), I)
    with self.assertRaisesRegex(ValueError, "reset-before"):
      interop.to_torch(model, params)
    self.assertIn("weight_ih_l0", interop.to_torch(model, params, check=False))

  def test_layers_that_one_module_cannot_hold_are_rejected(self):
    model = jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.lstm(H + 1)])
    with self.assertRaisesRegex(ValueError, "hidden size"):
      interop.to_torch(model, model.init(jax.random.key(0), I))
    model = jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.gru(H)])
    with self.assertRaisesRegex(ValueError, "one cell type"):
      interop.to_torch(model, model.init(jax.random.key(0), I))

  def test_proj_size_is_not_implemented(self):
    with self.assertRaisesRegex(NotImplementedError, "proj_size"):
      interop.from_torch(torch.nn.LSTM(I, H, proj_size=2))

  def test_other_modules_are_rejected(self):
    with self.assertRaisesRegex(TypeError, "module"):
      interop.from_torch(torch.nn.Linear(I, H))

  def test_missing_c_n_is_rejected(self):
    _, params = interop.from_torch(torch.nn.LSTM(I, H))
    with self.assertRaisesRegex(ValueError, "c_n"):
      interop.from_torch_state(params, np.zeros((1, B, H), np.float32))


if __name__ == "__main__":
  absltest.main()

"""jaxrnn.interop against torch.nn.RNN/LSTM/GRU: same outputs and states, exact round trips."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxrnn
from jaxrnn import interop
import model_zoo

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
    ("lstm_proj_2_layers_bidirectional", torch.nn.LSTM,
     dict(num_layers=2, bidirectional=True, proj_size=2)),
    ("lstm_proj_no_bias_batch_first", torch.nn.LSTM, dict(bias=False, batch_first=True, proj_size=3)),
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


def _randomize_learned_state(params):
  """``params`` with a random learned initial state, so that its layout shows."""
  leaves, treedef = jax.tree.flatten(params.initial_state)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  return params._replace(initial_state=treedef.unflatten(
      [model_zoo.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]))


def _numpy(x):
  return x.detach().numpy()



# Formatted with where the cell is: "" or, e.g., r" in layers\[1\]".
_CUSTOM_CELL_MESSAGE = (r"^model: expected an rnn, lstm or gru cell{} \(config RNNConfig,"
                        r" LSTMConfig or GRUConfig.*got custom_cell 'indrnn' \(CustomCellConfig\)")


class FromTorchTest(parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  def test_outputs_and_final_state_match(self, cls, kwargs):
    module = _random_module(cls, kwargs)
    batch_first = kwargs.get("batch_first", False)
    num_states = module.num_layers * (2 if module.bidirectional else 1)
    xs = torch.randn((B, T, I) if batch_first else (T, B, I))
    h0 = torch.randn(num_states, B, kwargs.get("proj_size") or H)
    c0 = torch.randn(num_states, B, H) if cls is torch.nn.LSTM else None
    with torch.no_grad():
      ys, final = module(xs, h0 if c0 is None else (h0, c0))

    model, params = interop.from_torch(module)
    state = interop.from_torch_state(model, h0, c0)
    our_final, our_ys = jaxrnn.unroll(model, params, jnp.asarray(_numpy(xs)), state,
                                      time_major=not batch_first)

    np.testing.assert_allclose(our_ys, _numpy(ys), **TOL)
    expected = (final,) if c0 is None else final
    ours = interop.to_torch_state(model, our_final)
    ours = (ours,) if c0 is None else ours
    for a, b in zip(ours, expected):
      np.testing.assert_allclose(a, _numpy(b), **TOL)
    # The nested state is the one from_torch_state builds from h_n and c_n.
    model_zoo.assert_trees_close(our_final, interop.from_torch_state(model, *expected), **TOL)

  @parameterized.named_parameters(*CASES)
  def test_round_trip_is_exact(self, cls, kwargs):
    module = _random_module(cls, kwargs)
    model, params = interop.from_torch(module)
    state_dict = interop.to_torch(model, params)

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
    model, _ = interop.from_torch(module)
    h_n, c_n = np.arange(2 * 4 * H, dtype=np.float32).reshape(2, 4, H)
    state = interop.from_torch_state(model, h_n, c_n)
    np.testing.assert_array_equal(state.layers[1].forward.hidden, h_n[2])
    np.testing.assert_array_equal(state.layers[0].backward.cell, c_n[1])
    back_h, back_c = interop.to_torch_state(model, state)
    np.testing.assert_array_equal(back_h, h_n)
    np.testing.assert_array_equal(back_c, c_n)


class ProjSizeFloat64Test(parameterized.TestCase):
  """``nn.LSTM(proj_size=P)``, two layers, bidirectional, in float64: equal to rounding."""

  P = 2

  def setUp(self):
    super().setUp()
    jax.config.update("jax_enable_x64", True)
    self.module = _random_module(torch.nn.LSTM, dict(num_layers=2, bidirectional=True,
                                                     proj_size=self.P), dtype=torch.float64)
    self.model, self.params = interop.from_torch(self.module)
    gen = torch.Generator().manual_seed(3)
    self.xs = torch.randn(T, B, I, dtype=torch.float64, generator=gen)
    self.h0 = torch.randn(4, B, self.P, dtype=torch.float64, generator=gen)
    self.c0 = torch.randn(4, B, H, dtype=torch.float64, generator=gen)

  def _assert_close(self, ours, theirs):
    err = max(float(np.max(np.abs(np.asarray(a) - _numpy(b)))) for a, b in zip(ours, theirs))
    self.assertLessEqual(err, 1e-10)

  def test_outputs_and_final_states_match(self):
    with torch.no_grad():
      ys, (h_n, c_n) = self.module(self.xs, (self.h0, self.c0))
    state = interop.from_torch_state(self.model, self.h0, self.c0)
    final, our_ys = jaxrnn.unroll(self.model, self.params, jnp.asarray(_numpy(self.xs)), state)
    self.assertEqual(our_ys.dtype, jnp.float64)
    self._assert_close((our_ys, *interop.to_torch_state(self.model, final)), (ys, h_n, c_n))

  def test_packed_sequences_match_seq_lengths(self):
    lengths = torch.tensor([T, 2, 4])
    packed = torch.nn.utils.rnn.pack_padded_sequence(self.xs, lengths, enforce_sorted=False)
    with torch.no_grad():
      out, (h_n, c_n) = self.module(packed, (self.h0, self.c0))
    ys, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    state = interop.from_torch_state(self.model, self.h0, self.c0)
    final, our_ys = jaxrnn.unroll(self.model, self.params, jnp.asarray(_numpy(self.xs)), state,
                                  seq_lengths=jnp.asarray(lengths.numpy()))
    self._assert_close((our_ys, *interop.to_torch_state(self.model, final)), (ys, h_n, c_n))

  def test_round_trip_is_exact(self):
    state_dict = interop.to_torch(self.model, self.params)
    self.assertEqual(list(state_dict), list(self.module.state_dict()))
    for name, tensor in self.module.state_dict().items():
      self.assertEqual(state_dict[name].dtype, torch.float64, name)
      self.assertTrue(torch.equal(state_dict[name], tensor), name)
    fresh = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=self.P)
    fresh.to(torch.float64).load_state_dict(state_dict, strict=True)


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

  @parameterized.named_parameters(
      ("reset_before_gru", lambda: jaxrnn.gru(H, reset_after=False), "reset-after GRU"),
      ("hidden_sizes", lambda: jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.lstm(H + 1)]),
       "hidden size"),
      ("direction_hidden_sizes", lambda: jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H + 1)),
       "hidden size"),
      ("cell_types", lambda: jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.gru(H)]), "one cell type"),
      ("bias", lambda: jaxrnn.stack([jaxrnn.rnn(H), jaxrnn.rnn(H, bias=False)]), "bias="),
      ("activations", lambda: jaxrnn.stack([jaxrnn.rnn(H), jaxrnn.rnn(H, activation="relu")]),
       "nonlinearity="),
      ("directions", lambda: jaxrnn.stack([
          jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.lstm(H)), jaxrnn.lstm(H)]), "direction"),
      ("merge_sum", lambda: jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.lstm(H), merge="sum"),
       "merge='concat'"),
      ("learned_initial_state", lambda: jaxrnn.learned_initial_state(jaxrnn.lstm(H)),
       "no learned_initial_state"),
      ("learned_state_in_a_layer", lambda: jaxrnn.stack([
          jaxrnn.learned_initial_state(jaxrnn.lstm(H)), jaxrnn.lstm(H)]),
       r"no learned_initial_state in layers\[0\]"),
      ("nested_stack", lambda: jaxrnn.stack([jaxrnn.stack([jaxrnn.lstm(H)]), jaxrnn.lstm(H)]),
       r"cell or bidirectional\(cell, cell\) in layers\[0\].*got stack"),
      ("bfloat16", lambda: jaxrnn.lstm(H, dtype=jnp.bfloat16), "dtype=bfloat16"),
  )
  def test_models_no_module_computes_are_rejected(self, make_model, message):
    model = make_model()
    params = model.init(jax.random.key(0), I)
    with self.assertRaisesRegex(ValueError, "^model: expected .*" + message):
      interop.to_torch(model, params)

  def test_model_without_config_is_rejected(self):
    model = jaxrnn.lstm(H)._replace(config=None)
    with self.assertRaisesRegex(TypeError, "^model: .*config=None"):
      interop.to_torch(model, model.init(jax.random.key(0), I))

  def test_params_of_another_model_are_rejected(self):
    with self.assertRaisesRegex(TypeError, "^params: expected LSTMParams"):
      interop.to_torch(jaxrnn.lstm(H), jaxrnn.gru(H).init(jax.random.key(0), I))
    with self.assertRaisesRegex(ValueError, "^params: expected hidden size 6"):
      interop.to_torch(jaxrnn.lstm(H), jaxrnn.lstm(H + 1).init(jax.random.key(0), I))

  @parameterized.named_parameters(
      ("peephole", lambda: jaxrnn.lstm(H, peephole=True), "without peepholes.*peephole=True"),
      ("layer_norm", lambda: jaxrnn.lstm(H, layer_norm=True), "layer norm.*layer_norm=True"),
      ("proj_sizes", lambda: jaxrnn.stack([jaxrnn.lstm(H, proj_size=2), jaxrnn.lstm(H)]),
       "proj_size"),
  )
  def test_lstm_options_no_module_has_are_rejected(self, make_model, message):
    model = make_model()
    with self.assertRaisesRegex(ValueError, "^model: expected .*" + message):
      interop.to_torch(model, model.init(jax.random.key(0), I))

  def test_projected_state_shapes_are_checked(self):
    model, _ = interop.from_torch(torch.nn.LSTM(I, H, proj_size=2))
    with self.assertRaisesRegex(ValueError, r"^h_n: expected shape \[1, B, 2\].*proj_size"):
      interop.from_torch_state(model, np.zeros((1, B, H)), np.zeros((1, B, H)))
    with self.assertRaisesRegex(ValueError, r"^c_n: expected shape \(1, 3, 6\)"):
      interop.from_torch_state(model, np.zeros((1, B, 2)), np.zeros((1, B, 2)))

  def test_other_modules_are_rejected(self):
    with self.assertRaisesRegex(TypeError, "module"):
      interop.from_torch(torch.nn.Linear(I, H))

  def test_missing_c_n_is_rejected(self):
    model, _ = interop.from_torch(torch.nn.LSTM(I, H))
    with self.assertRaisesRegex(ValueError, "^c_n: expected an array"):
      interop.from_torch_state(model, np.zeros((1, B, H), np.float32))

  def test_h_n_of_another_shape_is_rejected(self):
    model, _ = interop.from_torch(torch.nn.GRU(I, H, num_layers=2))
    with self.assertRaisesRegex(ValueError, r"^h_n: expected shape \[2, B, 6\]"):
      interop.from_torch_state(model, np.zeros((2, B, H + 1), np.float32))

  def test_state_functions_look_through_a_learned_initial_state(self):
    core = jaxrnn.stack([jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H)), jaxrnn.gru(H)])
    model = jaxrnn.learned_initial_state(core)
    params = _randomize_learned_state(model.init(jax.random.key(0), I))
    h_n = interop.to_torch_state(model, model.initial_state(params, B))
    self.assertEqual(h_n.shape, (3, B, H))
    np.testing.assert_array_equal(h_n[1], np.broadcast_to(params.initial_state.layers[0].backward,
                                                          (B, H)))
    model_zoo.assert_trees_equal(interop.from_torch_state(model, h_n),
                                 model.initial_state(params, B))

  @parameterized.named_parameters(
      ("to_torch", lambda model, params: interop.to_torch(model, params)),
      ("to_torch_state",
       lambda model, params: interop.to_torch_state(model, model.initial_state(params, B))),
      ("from_torch_state",
       lambda model, params: interop.from_torch_state(model, np.zeros((1, B, H), np.float32))),
  )
  def test_custom_cell_is_rejected(self, convert):
    model = model_zoo.indrnn_without_vjp(H)
    with self.assertRaisesRegex(ValueError, _CUSTOM_CELL_MESSAGE.format("")):
      convert(model, model.init(jax.random.key(0), I))

  @parameterized.named_parameters(
      ("stack", lambda cell: jaxrnn.stack([jaxrnn.gru(H), cell]), r" in layers\[1\]"),
      ("bidirectional", lambda cell: jaxrnn.bidirectional(jaxrnn.gru(H), cell),
       " in the backward direction"),
      ("learned_initial_state", jaxrnn.learned_initial_state, ""),
  )
  def test_custom_cell_in_a_composite_is_rejected(self, wrap, where):
    model = wrap(model_zoo.indrnn_without_vjp(H))
    params = model.init(jax.random.key(0), I)
    with self.assertRaisesRegex(ValueError, _CUSTOM_CELL_MESSAGE.format(where)):
      interop.to_torch_state(model, model.initial_state(params, B))

  def test_state_functions_need_one_cell_type(self):
    model = jaxrnn.stack([jaxrnn.gru(H), jaxrnn.rnn(H)])
    with self.assertRaisesRegex(ValueError, "^model: expected the cell type"):
      interop.from_torch_state(model, np.zeros((2, B, H), np.float32))


if __name__ == "__main__":
  absltest.main()

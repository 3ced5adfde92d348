"""Smoke test of experiments/benchmark.py on a tiny shape (timings never asserted)."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
from absl.testing import parameterized

import jaxrnn
from experiments import benchmark
from experiments import benchmark_parallel
from experiments import benchmark_peers as peers
from experiments import benchmark_report as report
from experiments import hlo_ops

TINY = peers.Shape("lstm", batch=2, time=3, inputs=3, hidden=4)
ROW_KEYS = {"peer", "label", "mode", "shape", "median_ms", "times_ms", "gflops",
            "pct_peak", "peak_gflops", "ratio_to_jaxrnn", "compile_s", "flops"}


class ShapesAndFlopsTest(absltest.TestCase):

  def test_parse_shapes_round_trips(self):
    text = "lstm:32:100:64:256,gru:1:2:3:4,rnn:5:6:7:8"
    self.assertEqual(",".join(map(str, peers.parse_shapes(text))), text)

  def test_parse_shapes_takes_every_cell_of_the_library(self):
    for name in jaxrnn.CELLS:
      self.assertEqual(peers.parse_shapes(f"{name}:1:2:3:4"), [peers.Shape(name, 1, 2, 3, 4)])

  def test_parse_shapes_takes_the_layer_norm_lstm(self):
    self.assertEqual(peers.parse_shapes("lstm_ln:1:2:3:4"), [peers.Shape("lstm_ln", 1, 2, 3, 4)])

  def test_parse_shapes_rejects_bad_items(self):
    for bad in ("lstm:1:2:3", "conv:1:2:3:4", "lstm:a:2:3:4"):
      with self.assertRaises(ValueError):
        peers.parse_shapes(bad)

  def test_flops(self):
    lstm, gru, rnn = (TINY._replace(cell=c) for c in ("lstm", "gru", "rnn"))
    self.assertEqual(peers.flops(lstm, "forward"), 2 * 3 * 2 * (3 + 4) * 16)
    self.assertEqual(peers.flops(lstm, "train"), 3 * peers.flops(lstm, "forward"))
    self.assertEqual(peers.flops(lstm, "forward"), 4 * peers.flops(rnn, "forward"))
    self.assertEqual(3 * peers.flops(lstm, "forward"), 4 * peers.flops(gru, "forward"))


class PeerCellsTest(parameterized.TestCase):

  @parameterized.parameters(peers.flax_peer, peers.equinox_peer, peers.haiku_peer,
                            peers.torch_peer)
  def test_a_peer_without_the_cell_is_unsupported(self, builder):
    with self.assertRaisesRegex(peers.Unsupported, "has no newcell cell"):
      builder(TINY._replace(cell="newcell"), "train")

  def test_a_skipped_peer_is_recorded_with_its_reason(self):
    config = benchmark.Config(shapes=[], modes=["forward"], peers=["jaxrnn", "equinox"],
                              out_dir="", repeats=1, warmup=1)
    skipped = []
    rows = benchmark.benchmark_shape(TINY._replace(cell="rnn"), config, 64, skipped)
    self.assertEqual([r["peer"] for r in rows], ["jaxrnn"])
    self.assertLen(skipped, 1)
    self.assertContainsSubset(
        {"peer": "equinox", "shape": "rnn:2:3:3:4", "mode": "forward"}.items(),
        skipped[0].items())
    self.assertStartsWith(skipped[0]["reason"], "Unsupported: equinox.nn has no rnn cell")

  def test_every_cell_of_the_library_has_the_jaxrnn_rows(self):
    config = benchmark.Config(
        shapes=[TINY._replace(cell=name) for name in jaxrnn.CELLS], modes=["train"],
        peers=["jaxrnn", "scan_floor"], out_dir=self.create_tempdir().full_path, repeats=1,
        warmup=1, peak_size=8, compile_scaling=False)
    results = benchmark.run(config)
    ran = {(r["peer"], r["shape"].split(":")[0]) for r in results["rows"]}
    self.assertContainsSubset({("jaxrnn", name) for name in jaxrnn.CELLS}, ran)
    # scan_floor times any cell whose weights are [I + H, G*H], and says why it skips another.
    noted = {(s["peer"], s["shape"].split(":")[0]) for s in results["skipped"]
             if s["reason"].startswith("Unsupported")}
    self.assertEqual(ran | noted, {(p, name) for p in config.peers for name in jaxrnn.CELLS})
    self.assertContainsSubset({("scan_floor", name) for name in ("rnn", "lstm", "gru")}, ran)


  def test_layer_norm_lstm_row(self):
    # jaxrnn's LN-LSTM against the scan floor; the peers have none, and say so.
    config = benchmark.Config(
        shapes=[TINY._replace(cell="lstm_ln")], modes=["train"],
        peers=["jaxrnn", "scan_floor", "flax", "equinox", "haiku", "torch", "cudnn"],
        out_dir=self.create_tempdir().full_path, repeats=1, warmup=1, peak_size=8,
        compile_scaling=False)
    results = benchmark.run(config)
    rows = {r["peer"]: r for r in results["rows"]}
    self.assertCountEqual(rows, ["jaxrnn", "scan_floor"])
    self.assertEqual(rows["jaxrnn"]["label"],
                     "jaxrnn.unroll(lstm(layer_norm=True), backward='bptt')")
    self.assertEqual(rows["jaxrnn"]["flops"], peers.flops(TINY, "train"))
    reasons = {s["peer"]: s["reason"] for s in results["skipped"]}
    self.assertCountEqual(reasons, ["flax", "equinox", "haiku", "torch", "cudnn"])
    for name in ("flax", "equinox", "haiku", "torch"):
      self.assertIn("has no layer-normalised LSTM (lstm_ln)", reasons[name])


def _textbook_loss(cell: str, params, xs, targets):
  """The plain LSTM (i, f, g, o) or reset-after GRU (r, z, n), autodiffed: scan_minimal's check."""
  w_x, w_h, b_x = params[:3]
  hidden = w_h.shape[0]
  blocks = lambda a: [a[:, k * hidden:(k + 1) * hidden] for k in range(a.shape[1] // hidden)]

  def lstm_step(carry, x):
    h, c = carry
    i, f, g, o = blocks(x @ w_x + h @ w_h + b_x)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h

  def gru_step(h, x):
    (xr, xz, xn), (hr, hz, hn) = blocks(x @ w_x + b_x), blocks(h @ w_h + params[3])
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h = (1 - z) * n + z * h
    return h, h

  zeros = jnp.zeros((xs.shape[1], hidden), xs.dtype)
  if cell == "lstm":
    hs = jax.lax.scan(lstm_step, (zeros, zeros), xs)[1]
  else:
    hs = jax.lax.scan(gru_step, zeros, xs)[1]
  return jnp.mean(jnp.square(hs - targets)), hs


class ScanMinimalTest(parameterized.TestCase):

  @parameterized.parameters("lstm", "gru")
  def test_hand_gradient_matches_autodiff_and_finite_differences(self, cell):
    jax.config.update("jax_enable_x64", True)  # conftest's restore_x64 puts it back
    shape = peers.Shape(cell, batch=3, time=5, inputs=2, hidden=4)
    params, forward, grad = peers.minimal_cell(shape)
    rng = np.random.default_rng(7)
    # Non-zero biases, so that their gradients and the GRU's b_hn path are checked too.
    params = [p.astype(np.float64) + 0.3 * rng.standard_normal(p.shape) for p in params]
    xs, targets = rng.standard_normal((5, 3, 2)), rng.standard_normal((5, 3, 4))
    # Jitted: op by op, the scans would take seconds to dispatch.
    textbook = jax.jit(functools.partial(_textbook_loss, cell))
    want_loss, want_hs = textbook(params, xs, targets)
    np.testing.assert_allclose(jax.jit(forward)(params, xs)[0], want_hs, rtol=1e-13,
                               atol=1e-14)
    want = jax.jit(jax.grad(lambda p: textbook(p, xs, targets)[0]))(params)
    got = jax.jit(grad)(params, xs, targets)
    self.assertLen(got, len(want))
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-14)
    # One random direction by central differences.
    direction = [rng.standard_normal(p.shape) for p in params]
    eps = 1e-6
    moved = lambda sign: textbook(
        [p + sign * eps * d for p, d in zip(params, direction)], xs, targets)[0]
    numeric = (moved(1) - moved(-1)) / (2 * eps)
    analytic = sum(np.vdot(g, d) for g, d in zip(got, direction))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7)
    self.assertNotEqual(float(want_loss), 0.0)

  def test_peer_builds_and_runs_both_modes(self):
    for cell in ("lstm", "gru"):
      for mode in ("train", "forward"):
        step = peers.scan_minimal_peer(TINY._replace(cell=cell), mode)
        result = step.run()
        self.assertTrue(all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result)))
        self.assertLen(jax.tree.leaves(result), {"lstm": 3, "gru": 4}[cell] if mode == "train"
                       else 1)

  def test_other_cells_are_unsupported(self):
    with self.assertRaisesRegex(peers.Unsupported, "lstm and gru only, not rnn"):
      peers.scan_minimal_peer(TINY._replace(cell="rnn"), "train")


CONV_TINY = peers.Shape("conv_lstm", batch=2, time=3, inputs=2, hidden=3, spatial=(4, 4), kernel=3)


class ConvLSTMRowTest(absltest.TestCase):

  def test_parse_shapes_reads_a_conv_lstm_shape(self):
    self.assertEqual(peers.parse_shapes("conv_lstm:2:3:2:3:4x4:3"), [CONV_TINY])
    self.assertEqual(str(CONV_TINY), "conv_lstm:2:3:2:3:4x4:3")
    for bad in ("conv_lstm:2:3:2:3", "conv_lstm:2:3:2:3:4x4"):
      with self.assertRaisesRegex(ValueError, "conv_lstm:B:T:C:Hc:HxW:K"):
        peers.parse_shapes(bad)

  def test_flops_count_the_kernels_at_every_position(self):
    # Per position and step: a 3x3 kernel over C + Hc = 5 channels into 4 * Hc = 12.
    self.assertEqual(peers.flops(CONV_TINY, "forward"), 2 * 3 * 2 * 16 * (9 * 5 * 12))
    self.assertEqual(peers.flops(CONV_TINY, "train"), 3 * peers.flops(CONV_TINY, "forward"))

  def test_jaxrnn_and_flax_rows_run_and_the_others_say_why_not(self):
    config = benchmark.Config(shapes=[CONV_TINY], modes=["train", "forward"],
                              peers=["jaxrnn", "flax", "jaxrnn_bf16", "torch"],
                              out_dir=self.create_tempdir().full_path, repeats=1, warmup=1,
                              peak_size=8, compile_scaling=False)
    results = benchmark.run(config)
    ran = {(r["peer"], r["mode"]) for r in results["rows"]}
    self.assertEqual(ran, {(p, m) for p in ("jaxrnn", "flax") for m in ("train", "forward")})
    self.assertEqual({(s["peer"], s["mode"]) for s in results["skipped"]},
                     {(p, m) for p in ("jaxrnn_bf16", "torch") for m in ("train", "forward")})
    for s in results["skipped"]:
      self.assertStartsWith(s["reason"], "Unsupported")
    flax = next(r for r in results["rows"] if r["peer"] == "flax")
    self.assertEqual(flax["label"], "flax.linen.RNN(ConvLSTMCell)")


class BenchmarkRunTest(absltest.TestCase):

  def test_run_writes_table_json_and_plot(self):
    out_dir = self.create_tempdir().full_path
    config = benchmark.Config(
        shapes=[TINY], modes=benchmark.MODES, peers=list(peers.PEERS),
        out_dir=out_dir, repeats=1, warmup=1, peak_size=64,
        memory_shape=TINY._replace(time=8), remat_chunks=[2], memory_repeats=1)
    results = benchmark.run(config)

    for name in (report.JSON_NAME, report.TABLE_NAME, report.PLOT_NAME):
      self.assertGreater(os.path.getsize(os.path.join(out_dir, name)), 0, name)
    with open(os.path.join(out_dir, report.JSON_NAME)) as f:
      saved = json.load(f)
    self.assertContainsSubset(
        {"config", "environment", "peak_matmul_size", "rows", "compile_scaling",
         "bf16_gradient_error", "memory", "skipped"}, saved)
    self.assertNotEmpty(saved["rows"])
    for row in saved["rows"]:
      self.assertContainsSubset(ROW_KEYS, row)
      self.assertLen(row["times_ms"], 1)
    # Every (peer, mode) gives a row or says why it was skipped.
    ran = {(r["peer"], r["mode"]) for r in saved["rows"]}
    noted = {(s["peer"], s["mode"]) for s in saved["skipped"]}
    for name in peers.PEERS:
      for mode in peers.MODES:
        self.assertIn((name, mode), ran | noted)
    # jaxrnn and the peers installed with the test extra must run, not be skipped.
    for name in ("jaxrnn", "jaxrnn_autodiff", "jaxrnn_bf16", "flax", "haiku", "torch"):
      self.assertIn((name, "train"), ran)
    for row in saved["rows"]:
      if row["peer"] == "jaxrnn":
        self.assertEqual(row["ratio_to_jaxrnn"], 1.0)
    self.assertEqual({r["peer"] for r in saved["compile_scaling"]},
                     {"jaxrnn", "jaxrnn_autodiff"})
    bf16 = saved["bf16_gradient_error"][0]
    self.assertLess(bf16["relative_error"], 0.1)
    self.assertGreater(bf16["rounding_reference"], 0)
    memory = {r["peer"]: r for r in saved["memory"]}
    self.assertContainsSubset({"jaxrnn", "jaxrnn_autodiff", "jaxrnn_remat2"}, memory)
    for row in memory.values():
      self.assertGreater(row["total_bytes"], 0)
    table = report.format_table(results)
    self.assertIn("jaxrnn", table)
    self.assertIn("x floor", table)

  def test_main_reads_flags(self):
    out_dir = self.create_tempdir().full_path
    with flagsaver.flagsaver(shapes="gru:2:3:3:4", peers=["jaxrnn", "torch"],
                             mode=["forward"], repeats=1, warmup=1, peak_size=64,
                             compile_scaling=False, out_dir=out_dir):
      benchmark.main(["benchmark"])
    with open(os.path.join(out_dir, report.JSON_NAME)) as f:
      rows = json.load(f)["rows"]
    self.assertEqual({(r["peer"], r["mode"]) for r in rows},
                     {("jaxrnn", "forward"), ("torch", "forward")})

  def test_unknown_peer_is_an_error(self):
    config = benchmark.Config(shapes=[TINY], modes=["train"], peers=["nope"],
                              out_dir=self.create_tempdir().full_path)
    with self.assertRaisesRegex(ValueError, "Unknown peers"):
      benchmark.run(config)


class ParallelModeTest(absltest.TestCase):

  def test_rows_skips_and_table(self):
    # elk's Jacobians (three [T, B, D, D] arrays, 1.2e-6 GB here) pass max_gb,
    # quasi_elk's (three [T, B, D], 5.8e-7 GB) do not.
    parallel = benchmark_parallel.ParallelConfig(
        cells=("gru",), times=(4,), hiddens=(2,), batch=2,
        paths=("sequential", "elk", "quasi_elk"), repeats=1, max_gb=8e-7)
    config = benchmark.Config(shapes=[], modes=["parallel"], peers=["jaxrnn"],
                              out_dir=self.create_tempdir().full_path, parallel=parallel)
    results = benchmark.run(config)
    self.assertEqual({(r["path"], r["mode"]) for r in results["parallel"]},
                     {(p, m) for p in ("sequential", "quasi_elk") for m in ("forward", "train")})
    for row in results["parallel"]:
      if row["path"] == "sequential":
        self.assertEqual((row["iterations"], row["depth"]), (None, 4))
      else:
        self.assertTrue(row["converged"])
        self.assertEqual(row["depth"], benchmark_parallel.depth(4, row["iterations"]))
    self.assertEqual([s["peer"] for s in results["skipped"]], ["elk"])
    self.assertIn("GB > max_gb", results["skipped"][0]["reason"])
    table = benchmark_parallel.format_table(results["parallel"], results["skipped"])
    self.assertIn("| gru | 4 | 2 | quasi_elk | train |", table)
    with open(os.path.join(config.out_dir, report.JSON_NAME)) as f:
      self.assertLen(json.load(f)["parallel"], 4)

  def test_shapes_and_time_budgets(self):
    parallel = benchmark_parallel.ParallelConfig(
        shapes=[("gru", 3, 2), ("gru", 5, 2)], batch=1, paths=("sequential", "quasi_newton"),
        modes=("forward",), repeats=1, row_budget_s=1e-9)
    skipped = []
    rows = benchmark_parallel.benchmark(parallel, skipped)
    # Each path's first row runs (nothing to predict from); the next is predicted too long.
    self.assertEqual([(r["T"], r["path"]) for r in rows], [(3, "sequential"), (3, "quasi_newton")])
    self.assertLen(skipped, 2)
    for s in skipped:
      self.assertIn("gru:1:5:2:2", s["shape"])
      self.assertRegex(s["reason"], r"predicted .* s > the row budget of 1e-09 s")
    skipped = []
    self.assertEqual(benchmark_parallel.benchmark(
        parallel._replace(row_budget_s=0.0, time_budget_s=1e-9), skipped), [])
    self.assertLen(skipped, 4)
    self.assertIn("the time budget of 1e-09 s is spent", skipped[0]["reason"])

  def test_parse_shapes(self):
    self.assertEqual(benchmark_parallel.parse_shapes("gru:1024:64, lstm:8:256"),
                     [("gru", 1024, 64), ("lstm", 8, 256)])
    for bad in ("gru:1024", "foo:1:2", "gru:0:4", "gru:x:4"):
      with self.assertRaisesRegex(ValueError, "parallel_shapes: expected cell:T:H"):
        benchmark_parallel.parse_shapes(bad)

  def test_main_reads_the_parallel_flags(self):
    out_dir = self.create_tempdir().full_path
    with flagsaver.flagsaver(mode=["parallel"], parallel_cells=["min_gru"], parallel_times=["3"],
                             parallel_hiddens=["2"], parallel_paths=["newton"],
                             parallel_repeats=1, parallel_batch=1, out_dir=out_dir):
      benchmark.main(["benchmark"])
    with open(os.path.join(out_dir, report.JSON_NAME)) as f:
      rows = json.load(f)["parallel"]
    self.assertEqual({(r["cell"], r["T"], r["H"], r["B"], r["path"]) for r in rows},
                     {("min_gru", 3, 2, 1, "newton")})
    self.assertEqual({r["iterations"] for r in rows}, {1})


def setUpModule():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class HloOpsTest(absltest.TestCase):

  def test_counts_the_ops_of_each_while_body(self):
    text = """HloModule m

%body (p: (s32[], f32[2])) -> (s32[], f32[2]) {
  %p = (s32[], f32[2]) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %copy.1 = s32[] copy(%i)
  %x = f32[2]{0} get-tuple-element(%p), index=1
  %fusion.1 = f32[2]{0} fusion(%x), kind=kLoop, calls=%f
  %fusion.2 = f32[2]{0} fusion(%fusion.1), kind=kLoop, calls=%g
  ROOT %tuple = (s32[], f32[2]) tuple(%copy.1, %fusion.2)
}

ENTRY %main (a: f32[2]) -> f32[2] {
  %w = (s32[], f32[2]) while(%t), condition=%cond, body=%body
}
"""
    self.assertEqual(hlo_ops.loop_ops(text),
                     [{"body": "body", "ops": 3, "opcodes": {"copy": 1, "fusion": 2}}])

  def test_a_train_step_has_a_forward_and_a_backward_loop(self):
    lines = hlo_ops.report([TINY], ["jaxrnn", "scan_floor"], "train")
    counted = [line for line in lines if "ops per step" in line]
    self.assertLen([line for line in counted if "jaxrnn" in line], 2)
    self.assertLen([line for line in counted if "scan_floor" in line], 2)


if __name__ == "__main__":
  absltest.main()

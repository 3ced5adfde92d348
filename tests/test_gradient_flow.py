"""The gradient-flow experiment, shrunk."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from experiments import gradient_flow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GradientFlowTest(absltest.TestCase):

  def test_exploding_case_is_found_and_clipped(self):
    result = gradient_flow.run(seq_len=40, hidden_size=16, input_size=3, batch_size=4, seed=0,
                               explode_ratio=1e3, clip_norm=0.5)
    ex = result["exploding"]
    self.assertTrue(ex["exploded"])
    self.assertGreaterEqual(ex["ratio_h0_over_hT"], 1e3)
    self.assertGreater(ex["global_grad_norm"], 0.5)
    np.testing.assert_allclose(ex["global_grad_norm_after_clip"], 0.5, rtol=1e-5)
    # The LSTM at initialisation keeps more gradient at t=0 than the tanh RNN.
    init = result["at_init"]
    self.assertGreater(init["lstm"][0] / init["lstm"][-1], init["rnn"][0] / init["rnn"][-1])
    self.assertLen(init["gru"], 40)

  def test_main_writes_png_and_json(self):
    workdir = self.enter_context(tempfile.TemporaryDirectory())
    subprocess.run([sys.executable, "-m", "experiments.gradient_flow", f"--workdir={workdir}",
                    "--seq_len=20", "--hidden_size=8", "--batch_size=2", "--explode_ratio=10"],
                   check=True, capture_output=True, timeout=300, cwd=REPO)
    with open(os.path.join(workdir, "gradient_flow.json")) as f:
      self.assertContainsSubset({"at_init", "exploding", "seq_len"}, set(json.load(f)))
    self.assertGreater(os.stat(os.path.join(workdir, "gradient_flow.png")).st_size, 10_000)


if __name__ == "__main__":
  absltest.main()

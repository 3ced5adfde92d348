r"""How the gradient flows back through time: ``||dL/dh_t||`` against ``t``.

    python -m experiments.gradient_flow --workdir=/tmp/gradient_flow

The loss is the squared error of the last output only, so ``dL/dh_t`` for
``t < T`` is exactly the signal that BPTT carries back through the recurrence.
Three panels:

1. the tanh RNN, the LSTM and the GRU at initialisation;
2. a tanh RNN whose ``W_h`` is scaled up, gain by gain, until the gradient at
   ``t=0`` is ``--explode_ratio`` times the one at ``t=T``;
3. that exploding case under ``optax.clip_by_global_norm``: the whole update
   is rescaled, so the profile over time keeps its shape while its size drops
   to the clipping bound.

The norms come from `jaxrnn.bptt(..., return_hidden_grad_norms=True)`. Writes
``gradient_flow.png`` and ``gradient_flow.json`` to ``--workdir``.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags

import jaxrnn

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/jaxrnn_gradient_flow", "Output folder.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 200, "T.", lower_bound=2)
_HIDDEN = flags.DEFINE_integer("hidden_size", 64, "H.", lower_bound=1)
_INPUT = flags.DEFINE_integer("input_size", 8, "Input features.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 16, "Sequences averaged over.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed.")
_EXPLODE_RATIO = flags.DEFINE_float("explode_ratio", 1e4, "||dL/dh_0|| / ||dL/dh_T|| that counts"
                                    " as exploding.", lower_bound=1.0)
_CLIP_NORM = flags.DEFINE_float("clip_norm", 1.0, "Bound of optax.clip_by_global_norm.",
                                lower_bound=0.0)


def hidden_grad_norms(model, params, xs, target):
  """Mean over the batch of ``||dL/dh_t||`` for the last-step squared error, and the gradient."""
  _, ys = jaxrnn.unroll(model, params, xs)
  d_ys = jnp.zeros_like(ys).at[-1].set(ys[-1] - target)
  d_params, _, _, norms = jaxrnn.bptt(model, params, xs, None, d_ys,
                                      return_hidden_grad_norms=True)
  return norms.mean(axis=1), d_params


def scale_recurrent(params, gain):
  """Sets ``W_h`` to ``gain`` times a matrix of spectral radius about one."""
  H = params.w_h.shape[0]
  w = jax.random.normal(jax.random.PRNGKey(1234), params.w_h.shape) / jnp.sqrt(H)
  return params._replace(w_h=gain * w)


def run(seq_len, hidden_size, input_size, batch_size, seed, explode_ratio, clip_norm):
  """Computes every curve; returns a JSON-ready dict."""
  key = jax.random.PRNGKey(seed)
  k_x, k_t, k_p = jax.random.split(key, 3)
  xs = jax.random.normal(k_x, (seq_len, batch_size, input_size))
  target = jax.random.normal(k_t, (batch_size, hidden_size))
  norms_fn = jax.jit(hidden_grad_norms, static_argnums=0)
  result = {"seq_len": seq_len, "hidden_size": hidden_size, "batch_size": batch_size,
            "seed": seed, "at_init": {}}
  for name, model in (("rnn", jaxrnn.rnn(hidden_size)), ("lstm", jaxrnn.lstm(hidden_size)),
                      ("gru", jaxrnn.gru(hidden_size))):
    norms, _ = norms_fn(model, model.init(k_p, input_size), xs, target)
    result["at_init"][name] = np.asarray(norms).tolist()

  model = jaxrnn.rnn(hidden_size)
  base_params = model.init(k_p, input_size)
  gain = 1.0
  while True:  # Gains 1, 1.25, ..., 8, up to the first that explodes.
    params = scale_recurrent(base_params, gain)
    norms, grads = norms_fn(model, params, xs, target)
    ratio = float(norms[0] / norms[-1])
    if ratio >= explode_ratio or gain >= 8.0:
      break
    gain += 0.25
  grad_norm = float(optax.global_norm(grads))
  clipped, _ = optax.clip_by_global_norm(clip_norm).update(grads, optax.EmptyState())
  scale = float(optax.global_norm(clipped)) / grad_norm
  result["exploding"] = {
      "gain": float(gain), "ratio_h0_over_hT": ratio, "exploded": ratio >= explode_ratio,
      "sigma_max_w_h": float(jnp.linalg.norm(params.w_h, 2)),
      "norms": np.asarray(norms).tolist(),
      "global_grad_norm": grad_norm, "clip_norm": clip_norm,
      "global_grad_norm_after_clip": float(optax.global_norm(clipped)),
      "norms_after_clip": (np.asarray(norms) * scale).tolist(),
  }
  return result


def plot(result, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  t = np.arange(result["seq_len"])
  for name, norms in result["at_init"].items():
    axes[0].semilogy(t, norms, label=name)
  axes[0].set_title("At initialisation")
  ex = result["exploding"]
  axes[1].semilogy(t, ex["norms"], color="C3", label=f"tanh RNN, gain {ex['gain']:.2f}")
  axes[1].set_title(f"Exploding: ||dL/dh_0|| / ||dL/dh_T|| = {ex['ratio_h0_over_hT']:.1e}")
  axes[2].semilogy(t, ex["norms"], color="C3", alpha=0.4, label="raw")
  axes[2].semilogy(t, ex["norms_after_clip"], color="C2",
                   label=f"after clip_by_global_norm({ex['clip_norm']:g})")
  axes[2].set_title(f"Update norm {ex['global_grad_norm']:.1e} -> "
                    f"{ex['global_grad_norm_after_clip']:.2g}")
  for ax in axes:
    ax.set_xlabel("t")
    ax.set_ylabel("||dL/dh_t||")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  result = run(_SEQ_LEN.value, _HIDDEN.value, _INPUT.value, _BATCH.value, _SEED.value,
               _EXPLODE_RATIO.value, _CLIP_NORM.value)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  with open(os.path.join(_WORKDIR.value, "gradient_flow.json"), "w") as f:
    json.dump(result, f)
  plot(result, os.path.join(_WORKDIR.value, "gradient_flow.png"))
  ex = result["exploding"]
  for name, norms in result["at_init"].items():
    print(f"{name:5s} at init: ||dL/dh_0|| / ||dL/dh_T|| = {norms[0] / norms[-1]:.3e}")
  print(f"tanh RNN at gain {ex['gain']:.2f} (sigma_max {ex['sigma_max_w_h']:.2f}):"
        f" ratio {ex['ratio_h0_over_hT']:.3e}, exploded={ex['exploded']}")
  print(f"global grad norm {ex['global_grad_norm']:.3e} -> {ex['global_grad_norm_after_clip']:.3e}"
        f" after clip_by_global_norm({ex['clip_norm']:g})")
  print(f"wrote {_WORKDIR.value}/gradient_flow.png and gradient_flow.json")


if __name__ == "__main__":
  app.run(main)

"""jaxrnn: pure-functional recurrent networks for JAX."""

# --- core (cells, unroll, bptt, composites, readout, losses) ---
# (filled in by the core change)

# --- training ---

# --- parallel ---

__version__ = "0.1.0"

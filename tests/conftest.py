"""Test set-up: 8 simulated CPU devices, so that data-parallel tests run on one CPU."""
import jax

# Must happen before any backend is initialised. Note: jax_numpy_rank_promotion="raise" is not set because
# distrax's bijectors broadcast ranks internally (see BUILD_NOTES.md).
jax.config.update("jax_num_cpu_devices", 8)

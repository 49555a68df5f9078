"""jrs_jax: joint image registration and segmentation in JAX/Flax."""

__version__ = "0.1.0.dev0"

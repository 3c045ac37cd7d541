"""bigjax: JAX/Flax text classification, from pretraining to deployment."""

"""agelatent: an RL policy over the latent space of a frozen face GAN for target-age editing."""

__version__ = "0.1.0"

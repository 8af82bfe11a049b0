"""Frozen pretrained generators (latents -> face images in [-1, 1])."""

from agelatent.generators.dcgan import DCGANGenerator
from agelatent.generators.latents import sample_latents

__all__ = ["DCGANGenerator", "sample_latents"]

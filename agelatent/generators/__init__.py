"""Frozen pretrained generators (latents -> face images in [-1, 1])."""

from agelatent.generators.dcgan import DCGANGenerator
from agelatent.generators.latents import TypicalSet, sample_latents

__all__ = ["DCGANGenerator", "TypicalSet", "sample_latents"]

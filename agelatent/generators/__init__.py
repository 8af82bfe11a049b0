"""Frozen pretrained generators (latents -> face images in [-1, 1])."""

from agelatent.generators.base import GENERATOR_HOOKS, Generator, check_generator
from agelatent.generators.dcgan import DCGANGenerator
from agelatent.generators.latents import TypicalSet, sample_latents

__all__ = [
    "GENERATOR_HOOKS",
    "DCGANGenerator",
    "Generator",
    "TypicalSet",
    "check_generator",
    "sample_latents",
]

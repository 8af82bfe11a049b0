"""The embedded DCGAN generator: loads the real DigiFace-1M weights strictly and samples reproducibly."""

from __future__ import annotations

import pytest
import torch

from agelatent.generators import DCGANGenerator, sample_latents


@pytest.fixture(scope="module")
def generator(model_files):
    return DCGANGenerator.pretrained(model_files["dcgan_generator"])


def test_real_weights_load_frozen_with_the_published_size(generator):
    assert sum(p.numel() for p in generator.parameters()) == 3_576_704
    assert not generator.training
    assert not any(p.requires_grad for p in generator.parameters())


def test_images_are_64px_rgb_in_tanh_range_and_not_degenerate(generator):
    images = generator(sample_latents(range(8), generator.latent_dim))
    assert images.shape == (8, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1
    # different seeds give different faces; each face has real contrast
    assert (images[0] - images[1]).abs().mean() > 0.05
    assert images.flatten(1).std(dim=1).min() > 0.1


def test_sampling_by_seed_is_independent_of_batch_composition(generator):
    alone = sample_latents([7], 100)
    batch = sample_latents([3, 7, 11], 100)
    torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=0)
    torch.testing.assert_close(generator(alone)[0], generator(batch)[1], rtol=1e-5, atol=1e-5)


def test_wrong_latent_shape_names_expected_and_received(generator):
    with pytest.raises(ValueError, match=r"\[B, 100\].*\(4, 99\)"):
        generator(torch.zeros(4, 99))


def test_wrong_checkpoint_layout_fails_loudly(tmp_path):
    bad = tmp_path / "weights.tar"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="netG_state_dict"):
        DCGANGenerator.pretrained(bad)

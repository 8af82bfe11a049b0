"""The locally linear age approximation: age(G(z + δ)) ≈ age(G(z)) + ĝ(z)·δ near z.

ĝ(z) is estimated either by autograd through a differentiable perception (one backward pass), or from K
batched central-difference probes z ± σ·u_k with orthonormal random u_k (any perception, e.g. onnxruntime).
For orthonormal probes the least-squares fit of ĝ is exactly Σ_k c_k u_k with c_k = (a⁺_k − a⁻_k) / 2σ:
the gradient's projection onto the probed subspace, which is all a step inside that subspace needs.

The paper's semantic age scheme then takes the minimum-norm step for a desired change Δ years:
δ = Δ · ĝ / ‖ĝ‖² (:func:`min_norm_step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

METHODS = ("autograd", "probes")


@dataclass(frozen=True, kw_only=True)
class AgeDirectionConfig:
    """How ĝ is estimated (values: ``env.age_direction`` in ``conf/env/``)."""

    method: str  # autograd | probes
    num_probes: int  # K, probes method only (2K extra age evaluations per latent)
    probe_sigma: float  # σ in latent units, probes method only

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"age_direction.method must be one of {METHODS}, got {self.method!r}")
        if self.num_probes < 1:
            raise ValueError(f"age_direction.num_probes must be >= 1, got {self.num_probes}")
        if not self.probe_sigma > 0:
            raise ValueError(f"age_direction.probe_sigma must be > 0, got {self.probe_sigma}")


def local_age_gradient(
    world, latents_bz: torch.Tensor, cfg: AgeDirectionConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (ĝ ``[B, d]`` in years per latent unit, ages at ``latents_bz`` ``[B]``)."""
    if cfg.method == "autograd":
        z = latents_bz.detach().requires_grad_(True)
        ages = world.ages(z, with_grad=True)
        (grad,) = torch.autograd.grad(ages.sum(), z)
        return grad.detach(), ages.detach()

    batch, dim = latents_bz.shape
    k = min(cfg.num_probes, dim)
    noise = torch.randn(batch, dim, k, generator=generator, device="cpu").to(latents_bz.device)
    probes = torch.linalg.qr(noise).Q.transpose(1, 2)  # [B, K, d], orthonormal rows
    offsets = cfg.probe_sigma * probes
    points = torch.cat(
        [latents_bz[:, None] + offsets, latents_bz[:, None] - offsets, latents_bz[:, None]], dim=1
    )  # [B, 2K + 1, d]: one batched world call for all probes and the centre
    ages = world.ages(points.reshape(-1, dim)).reshape(batch, 2 * k + 1)
    slopes = (ages[:, :k] - ages[:, k : 2 * k]) / (2 * cfg.probe_sigma)  # [B, K]
    grad = torch.einsum("bk,bkd->bd", slopes, probes)
    return grad, ages[:, -1]


def min_norm_step(
    grad_bz: torch.Tensor, delta_years: torch.Tensor, max_norm: float | None = None
) -> torch.Tensor:
    """Smallest latent step whose linearised age change is ``delta_years``: δ = Δ·ĝ/‖ĝ‖² (norm-capped)."""
    sq_norm = grad_bz.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-12)
    step = delta_years[:, None] * grad_bz / sq_norm
    if max_norm is not None:
        norms = step.norm(dim=1, keepdim=True)
        step = step * (max_norm / norms.clamp_min(max_norm))
    return step


def orthogonal_basis(direction_bz: torch.Tensor, basis_kd: torch.Tensor) -> torch.Tensor:
    """Project a fixed basis ``[K, d]`` off each ``direction`` and re-orthonormalise: ``[B, K, d]``.

    Used by the ``local_linear`` action: corrections live in a low-dimensional subspace orthogonal to the
    local age direction, so they change identity/appearance without (to first order) changing age.
    """
    unit = direction_bz / direction_bz.norm(dim=1, keepdim=True).clamp_min(1e-12)
    projected = (
        basis_kd[None]
        - torch.einsum("bkd,bd->bk", basis_kd[None].expand(len(unit), -1, -1), unit)[..., None]
        * unit[:, None]
    )
    return torch.linalg.qr(projected.transpose(1, 2)).Q.transpose(1, 2)

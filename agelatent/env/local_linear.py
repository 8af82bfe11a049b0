"""The locally linear age approximation: age(G(z + δ)) ≈ age(G(z)) + ĝ(z)·δ near z.

ĝ(z) is estimated either by autograd through a differentiable perception (one backward pass), or from K
batched central-difference probes z ± σ·u_k with orthonormal random u_k (any perception, e.g. onnxruntime).
For orthonormal probes the least-squares fit of ĝ is exactly Σ_k c_k u_k with c_k = (a⁺_k − a⁻_k) / 2σ:
the gradient's projection onto the probed subspace, which is all a step inside that subspace needs.

The paper's semantic age scheme then takes the minimum-norm step for a desired change Δ years:
δ = Δ · ĝ / ‖ĝ‖² (:func:`min_norm_step`).

Extended to several attributes (``action.keep``): with J = [ĝ; c_1; ...; c_R] the gradients of age and of
the quantities to keep (identity drift ‖e − e0‖², P(male)), the minimum-norm step that changes age by Δ
while keeping the others to first order is δ = Jᵀ (J Jᵀ)⁻¹ [Δ, 0, ..., 0]ᵀ
(:func:`constrained_min_norm_step`), and corrections live in J's null space (:func:`null_space_basis`).

With an identity stiffness λ (the ``levers`` action), the step is the smallest in the metric
‖δ‖² + λ‖J_e δ‖² instead of ‖δ‖², J_e the identity embedding's Jacobian sketched by ``k`` random
vector-Jacobian products S = U J_e (E‖Sδ‖²/k = ‖J_e δ‖²): identity drift is priced from the first step, where
the drift constraint's gradient is still zero (:func:`stiff_min_norm_step`).
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
    return cap_norm(delta_years[:, None] * grad_bz / sq_norm, max_norm)


def cap_norm(step: torch.Tensor, max_norm: float | torch.Tensor | None) -> torch.Tensor:
    """Scale rows of ``step [B, d]`` longer than ``max_norm`` (a number, or ``[B]`` one per row) down to it
    (None: no cap). A number stays a Python number: no tensor is made for it (no host-to-device copy)."""
    if max_norm is None:
        return step
    norm = step.norm(dim=1, keepdim=True)
    if isinstance(max_norm, torch.Tensor):
        cap = max_norm.to(step).reshape(-1, 1)
        return step * (cap / torch.maximum(norm, cap))
    return step * (max_norm / norm.clamp_min(max_norm))


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


def _damped(gram: torch.Tensor) -> torch.Tensor:
    """``G + εI`` for Gram matrices ``[B, R, R]``; ε (1e-6 of the largest diagonal entry) keeps rows that are
    zero (e.g. the identity drift's gradient at the start face) or parallel from blowing up."""
    eps = 1e-6 * gram.diagonal(dim1=1, dim2=2).amax(-1).clamp_min(1e-12)
    eye = torch.eye(gram.shape[1], device=gram.device, dtype=gram.dtype)
    return gram + eps[:, None, None] * eye


def _damped_gram_inverse(rows: torch.Tensor) -> torch.Tensor:
    """``(J Jᵀ + εI)⁻¹`` for ``rows = J [B, R, d]`` (:func:`_damped`)."""
    return torch.linalg.inv(_damped(rows @ rows.transpose(1, 2)))


def constrained_min_norm_step(
    grad_bz: torch.Tensor, keep_brd: torch.Tensor, delta_years: torch.Tensor, max_norm: float | None = None
) -> torch.Tensor:
    """Smallest latent step with linearised age change ``delta_years`` and no first-order change of the
    ``R`` kept quantities (gradients ``keep_brd [B, R, d]``); norm-capped. With ``R = 0`` this is
    :func:`min_norm_step`."""
    if keep_brd.shape[1] == 0:
        return min_norm_step(grad_bz, delta_years, max_norm)
    rows = torch.cat([grad_bz[:, None], keep_brd], 1)  # J [B, 1 + R, d]
    rhs = torch.zeros(rows.shape[:2], device=rows.device, dtype=rows.dtype)
    rhs[:, 0] = delta_years
    step = torch.einsum("brd,br->bd", rows, (_damped_gram_inverse(rows) @ rhs[..., None]).squeeze(-1))
    return cap_norm(step, max_norm)


def stiff_min_norm_step(
    grad_bz: torch.Tensor,
    keep_brd: torch.Tensor,
    delta_years: torch.Tensor,
    sketch_bkd: torch.Tensor,
    stiffness_b: torch.Tensor,
    max_norm: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """argmin ‖δ‖² + (λ/k)‖S δ‖² subject to J δ = [Δ, 0, ..., 0] (J = [ĝ; kept quantities' gradients]),
    with S = ``sketch_bkd [B, k, d]`` and λ = ``stiffness_b [B]`` per row; norm-capped (``max_norm`` a number
    or ``[B]``). δ = M⁻¹Jᵀ(J M⁻¹ Jᵀ)⁻¹ b with M = I + (λ/k) SᵀS, M⁻¹ applied by Woodbury's identity, so λ = 0
    is :func:`constrained_min_norm_step` exactly."""
    rows = torch.cat([grad_bz[:, None], keep_brd], 1)  # J [B, 1 + R, d]
    k = sketch_bkd.shape[1]
    at = rows.transpose(1, 2)  # [B, d, R]
    if k:  # M⁻¹ x = x − (λ/k) Sᵀ (I + (λ/k) S Sᵀ)⁻¹ S x
        lam = (stiffness_b.to(rows) / k)[:, None, None]
        small = torch.eye(k, device=rows.device, dtype=rows.dtype) + lam * sketch_bkd @ sketch_bkd.transpose(
            1, 2
        )
        at = at - lam * sketch_bkd.transpose(1, 2) @ torch.linalg.solve(small, sketch_bkd @ at)
    rhs = torch.zeros(rows.shape[:2], device=rows.device, dtype=rows.dtype)
    rhs[:, 0] = delta_years
    step = (at @ torch.linalg.solve(_damped(rows @ at), rhs[..., None])).squeeze(-1)  # J M⁻¹ Jᵀ damped
    return cap_norm(step, max_norm)


def null_space_basis(rows_brd: torch.Tensor, basis_kd: torch.Tensor) -> torch.Tensor:
    """Project a fixed basis ``[K, d]`` onto the null space of each ``J = rows [B, R, d]`` and
    re-orthonormalise: ``[B, K, d]`` directions that change none of the rows' quantities to first order."""
    b = basis_kd[None].expand(len(rows_brd), -1, -1)  # [B, K, d]
    coeff = (b @ rows_brd.transpose(1, 2)) @ _damped_gram_inverse(rows_brd)  # [B, K, R]
    projected = b - coeff @ rows_brd
    return torch.linalg.qr(projected.transpose(1, 2)).Q.transpose(1, 2)

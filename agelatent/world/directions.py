"""Directions in a world's latent space that do not depend on the face: the global ridge age direction and the
semantic basis (the generator's closed-form directions, with that age direction). The global-direction and
semantic-walk editors step along them, and ``action.mode=semantic`` acts in the semantic basis.
"""

from __future__ import annotations

import hashlib
import json
import logging

import torch

from agelatent.generators.sefa import semantic_directions
from agelatent.runs import write_atomically
from agelatent.store import cache_dir

__all__ = ["fit_global_direction", "semantic_basis"]

log = logging.getLogger(__name__)


def _world_key(world, num_samples: int, seed: int, ridge: float) -> str:
    state = {}
    for name, module in (("generator", world.generator), ("perception", world.perception)):
        h = hashlib.sha256()
        for key, tensor in sorted(module.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes()[:4096])
        state[name] = h.hexdigest()[:16]
    state.update(num_samples=num_samples, seed=seed, ridge=ridge, perception=repr(world.perception))
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:20]


def fit_global_direction(
    world, num_samples: int, first_seed: int, ridge: float = 1.0, cache: bool = True
) -> dict[str, torch.Tensor | float]:
    """Least-squares (ridge) fit of ``age ≈ w·z + b`` on ``num_samples`` latents from seeds ``first_seed..``
    (``splits.direction_fit``: disjoint from the validation and test faces).

    Cached per world under the model cache (``derived/directions/``), keyed by the networks' weights and the fit
    settings. Returns ``{"w": [d], "b": float, "r2": float}``.
    """
    seed = first_seed
    path = cache_dir() / "derived" / "directions" / f"age-{_world_key(world, num_samples, seed, ridge)}.pt"
    if cache and path.is_file():
        return torch.load(path, weights_only=True)
    z = world.sample_latents(range(seed, seed + num_samples)).cpu().double()
    ages = world.ages(z.float().to(world.device)).cpu().double()
    x = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], dim=1)
    reg = ridge * torch.eye(x.shape[1], dtype=z.dtype)
    reg[-1, -1] = 0.0
    coef = torch.linalg.solve(x.T @ x + reg, x.T @ ages)
    pred = x @ coef
    r2 = float(1 - ((ages - pred) ** 2).sum() / ((ages - ages.mean()) ** 2).sum())
    fit = {"w": coef[:-1].float(), "b": float(coef[-1]), "r2": r2}
    log.info(
        "global age direction: R^2 = %.3f on %d latents, |w| = %.2f years/unit",
        r2,
        num_samples,
        fit["w"].norm(),
    )
    if cache:
        write_atomically(path, lambda tmp: torch.save(fit, tmp))
    return fit


def semantic_basis(
    world, num_directions: int, age_direction: bool, num_samples: int, first_seed: int
) -> torch.Tensor:
    """Orthonormal rows ``[k, d]`` spanning the ridge age direction (with ``age_direction``; fitted on
    ``num_samples`` latents from ``first_seed``, :func:`fit_global_direction`) and the generator's
    ``num_directions`` strongest closed-form semantic directions (:func:`semantic_directions`), in that order."""
    rows = []
    if age_direction:
        w = fit_global_direction(world, num_samples, first_seed)["w"].float()
        rows.append(w[None] / w.norm())
    if num_directions:
        rows.append(semantic_directions(world.generator, num_directions)[0])
    if not rows:
        raise ValueError("the semantic basis is empty: give num_directions >= 1 or age_direction=true")
    return torch.linalg.qr(torch.cat(rows).T).Q.T.contiguous()

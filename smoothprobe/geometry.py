"""Norms, dual norms, LMOs and norm constants of the optimizer geometries (docs/design.md §1).

Per parameter tensor i, each family has a primal norm ‖·‖_(i), its dual ‖·‖_(i),*, the linear
minimisation oracle LMO(G) = argmin_{‖u‖ ≤ 1} ⟨G, u⟩ and a constant c_i with dual ≤ c_i · primal:

    spectral   (Muon)              σ_max      Σσ (nuclear)   −U Vᵀ       min(m, n)
    sign       (Lion, signSGD)     ℓ∞         ℓ1             −sign(G)    m·n
    frobenius  (normalised SGD)    Frobenius  Frobenius      −G/‖G‖_F    1
    euclidean  (SGD, AdamW)        whole-model ℓ2 for both norms, LMO −G/‖G‖, κ = 1

The whole model takes the max of per-tensor primal norms and the sum of duals; κ = Σ c_i.
Spectral tensors with ndim > 2 are read as matrices of shape (shape[0], -1); 1-D tensors have no
spectral norm, so a spectral geometry refuses them (leave them out of `names`).
Norms are computed in float32, or float64 for float64 input, and returned as 0-d tensors or floats.
A tensor with a NaN or infinite entry has NaN singular values (a diverging run's probes record NaN
instead of failing in the eigensolver).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from smoothprobe.distributed import full
from smoothprobe.errors import SmoothprobeError

FAMILIES = ("spectral", "sign", "frobenius", "euclidean")
NUCLEAR_METHODS = ("exact", "estimate")

_OPTIMIZER_FAMILY = {
    "muon": "spectral",
    "lion": "sign",
    "signum": "sign",
    "signsgd": "sign",
    "normsgd": "frobenius",
    "adamw": "euclidean",
    "adam": "euclidean",
    "sgd": "euclidean",
}


def family_for_optimizer(name: str) -> str:
    """The geometry family whose LMO the named optimizer steps along."""
    family = _OPTIMIZER_FAMILY.get(name.lower())
    if family is None:
        raise SmoothprobeError(
            f"optimizer must be one of {sorted(_OPTIMIZER_FAMILY)}; got {name!r}"
        )
    return family


def check_family(family: str) -> None:
    """Raise a one-line error unless `family` is one of FAMILIES."""
    if family not in FAMILIES:
        raise SmoothprobeError(f"family must be one of {FAMILIES}; got {family!r}")


def check_nuclear(nuclear: str) -> None:
    """Raise a one-line error unless `nuclear` is one of NUCLEAR_METHODS."""
    if nuclear not in NUCLEAR_METHODS:
        raise SmoothprobeError(f"nuclear must be one of {NUCLEAR_METHODS}; got {nuclear!r}")


def eligible(t: Tensor, family: str) -> bool:
    """Whether a tensor has a norm in `family` (spectral needs at least two dimensions)."""
    return family != "spectral" or t.ndim >= 2


def default_names(named: Iterable[tuple[str, Tensor]], family: str) -> list[str]:
    """Names of the tensors that can take part in `family`: matrices for spectral, else all."""
    check_family(family)
    return [name for name, t in named if eligible(t, family)]


def _work(t: Tensor) -> Tensor:
    """The tensor in float32, or float64 when it already is, for accurate reductions."""
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


def matrix_view(t: Tensor) -> Tensor:
    """The tensor as a matrix of shape (shape[0], -1); raises for tensors with ndim < 2."""
    if t.ndim < 2:
        raise SmoothprobeError(
            f"spectral norms need a tensor with ndim >= 2; got shape {tuple(t.shape)}"
        )
    return t.reshape(t.shape[0], -1)


def _gram(t: Tensor) -> Tensor:
    """The float64 matrix view, transposed to be tall, whose Gram matrix is the smaller one."""
    g = matrix_view(t).detach().to(torch.float64)
    return g.T if g.shape[0] < g.shape[1] else g


def _gram_singular_values(g: Tensor) -> Tensor:
    """Singular values of a tall float64 matrix as square roots of the eigenvalues of GᵀG, computed
    on G / max|G| so that GᵀG cannot overflow; NaN when G has a non-finite entry."""
    scale = g.abs().max()
    if not torch.isfinite(scale):
        return torch.full(g.shape[1:], torch.nan, dtype=g.dtype, device=g.device)
    unit = g / scale.clamp(min=torch.finfo(g.dtype).tiny)
    return torch.linalg.eigvalsh(unit.T @ unit).clamp(min=0.0).sqrt() * scale


def _gram_errors(g: Tensor, sigma: Tensor) -> Tensor:
    """Rigorous bound on |σ̂_i − σ_i| for each singular value σ̂ from the Gram eigenvalues of G.

    For G of shape m×n (n ≤ m after transposing), λ_i = eig(GᵀG) carry an absolute error
    δ ≤ (m + n)·u·‖G‖_F² (u = 2⁻⁵³: product rounding plus a backward-stable eigensolver), and
    |√λ̂ − σ| ≤ min(√δ, δ/σ̂) by Weyl's inequality.
    """
    delta = sum(g.shape) * torch.finfo(torch.float64).eps / 2 * g.square().sum()
    return torch.minimum(delta.sqrt(), delta / sigma.clamp(min=torch.finfo(torch.float64).tiny))


def nuclear_norm_estimate(t: Tensor) -> tuple[Tensor, Tensor]:
    """Σσ from the eigenvalues of the small float64 Gram matrix, with a rigorous error bound
    (`_gram_errors`, summed). Costs one m·n² product and an n×n eigensolve instead of an SVD of the
    tall matrix."""
    g = _gram(t)
    sigma = _gram_singular_values(g)
    return sigma.sum(), _gram_errors(g, sigma).sum()


def singular_values(t: Tensor, nuclear: str = "exact") -> Tensor:
    """Singular values of the matrix view: SVD ("exact") or Gram eigenvalues ("estimate")."""
    check_nuclear(nuclear)
    if nuclear == "exact":
        m = _work(matrix_view(t))
        if not torch.isfinite(m).all():
            return torch.full((min(m.shape),), torch.nan, dtype=m.dtype, device=m.device)
        return torch.linalg.svdvals(m)
    return _gram_singular_values(_gram(t))


def tensor_norms(t: Tensor, family: str, nuclear: str = "exact") -> tuple[Tensor, Tensor]:
    """(primal, dual) norms of one tensor in `family` as 0-d tensors (euclidean: ℓ2 for both).

    An FSDP2 shard (DTensor) reduces its partial norms over ranks; spectral norms gather the one
    matrix they need, since singular values do not split over rows.
    """
    check_family(family)
    if family == "spectral":
        sigma = singular_values(full(t), nuclear)
        return sigma.max(), sigma.sum()
    if family == "sign":
        magnitude = _work(t).abs()
        return full(magnitude.max()), full(magnitude.sum())
    norm = full(torch.linalg.vector_norm(_work(t)))
    return norm, norm


def tensor_norm_bounds(t: Tensor, family: str, nuclear: str = "exact") -> tuple[Tensor, Tensor]:
    """(primal, dual) norms of one tensor as bounds that hold despite rounding: the primal from above,
    the dual from below. They differ from `tensor_norms` only for the Gram estimate of the spectral
    geometry, where the rounding of eigenvalues near 0 adds up to ~√u·‖G‖ per singular value: a
    lower bound on an operator's norm (`curv_dual`) built on the plain estimate could overshoot."""
    if family != "spectral" or nuclear == "exact":
        return tensor_norms(t, family, nuclear)
    g = _gram(full(t))
    sigma = _gram_singular_values(g)
    error = _gram_errors(g, sigma)
    return (sigma + error).max(), (sigma - error).clamp(min=0.0).sum()


def tensor_lmo(t: Tensor, family: str) -> Tensor:
    """argmin of ⟨t, u⟩ over the primal unit ball of one tensor, in t's dtype and shape (NaN where
    t has a non-finite entry: no direction pairs with it)."""
    check_family(family)
    if not torch.isfinite(t).all():
        return torch.full_like(t, torch.nan)
    if family == "spectral":
        u, _, vh = torch.linalg.svd(_work(matrix_view(t)), full_matrices=False)
        return (-(u @ vh)).reshape(t.shape).to(t.dtype)
    if family == "sign":
        return -torch.sign(t.detach())
    norm = torch.linalg.vector_norm(_work(t))
    if norm == 0:
        return torch.zeros_like(t)
    return (-_work(t) / norm).to(t.dtype)


def tensor_constant(t: Tensor, family: str) -> int:
    """c_i with dual ≤ c_i · primal for one tensor: min(m, n), numel or 1."""
    check_family(family)
    if family == "spectral":
        return min(matrix_view(t).shape)
    if family == "sign":
        return t.numel()
    return 1


@dataclass
class Geometry:
    """Whole-model norms of a family over the named tensors that take part (docs/design.md §1).

    Methods take the tensors in the order of `names`. `nuclear` picks exact SVDs or the
    Gram-eigenvalue estimate (see `nuclear_norm_estimate`) for spectral singular values.
    """

    family: str
    names: list[str]
    nuclear: str = "exact"

    def __post_init__(self) -> None:
        check_family(self.family)
        check_nuclear(self.nuclear)
        if not self.names:
            raise SmoothprobeError("names must list at least one tensor; got an empty list")

    def _check(self, tensors: Sequence[Tensor]) -> None:
        if len(tensors) != len(self.names):
            raise SmoothprobeError(f"expected {len(self.names)} tensors, got {len(tensors)}")
        for name, t in zip(self.names, tensors):
            if not eligible(t, self.family):
                raise SmoothprobeError(
                    f"tensor {name!r} of shape {tuple(t.shape)} cannot take part in the "
                    f"{self.family} geometry; leave it out of names"
                )

    def primal_per_tensor(self, tensors: Sequence[Tensor]) -> list[float]:
        """Per-tensor primal norms ‖x_i‖_(i)."""
        self._check(tensors)
        norms = [tensor_norms(t, self.family, self.nuclear)[0] for t in tensors]
        return torch.stack(norms).tolist()

    def dual_per_tensor(self, tensors: Sequence[Tensor]) -> list[float]:
        """Per-tensor dual norms ‖g_i‖_(i),*."""
        self._check(tensors)
        norms = [tensor_norms(t, self.family, self.nuclear)[1] for t in tensors]
        return torch.stack(norms).tolist()

    def primal_above(self, tensors: Sequence[Tensor]) -> float:
        """Whole-model primal norm, from above despite rounding (`tensor_norm_bounds`)."""
        self._check(tensors)
        return self.combine_primal(torch.stack([tensor_norm_bounds(t, self.family, self.nuclear)[0]
                                                for t in tensors]).tolist())

    def dual_below(self, tensors: Sequence[Tensor]) -> float:
        """Whole-model dual norm, from below despite rounding (`tensor_norm_bounds`)."""
        self._check(tensors)
        return self.combine_dual(torch.stack([tensor_norm_bounds(t, self.family, self.nuclear)[1]
                                              for t in tensors]).tolist())

    def combine_primal(self, per_tensor: Sequence[float]) -> float:
        """Whole-model primal norm from per-tensor ones: max, or the joint ℓ2 for euclidean."""
        per = torch.tensor(list(per_tensor), dtype=torch.float64)
        return per.norm().item() if self.family == "euclidean" else per.max().item()

    def combine_dual(self, per_tensor: Sequence[float]) -> float:
        """Whole-model dual norm from per-tensor ones: sum, or the joint ℓ2 for euclidean."""
        per = torch.tensor(list(per_tensor), dtype=torch.float64)
        return per.norm().item() if self.family == "euclidean" else per.sum().item()

    def primal(self, tensors: Sequence[Tensor]) -> float:
        """Whole-model primal norm: max_i ‖x_i‖_(i), or the joint ℓ2 norm for euclidean."""
        return self.combine_primal(self.primal_per_tensor(tensors))

    def dual(self, tensors: Sequence[Tensor]) -> float:
        """Whole-model dual norm: Σ_i ‖g_i‖_(i),*, or the joint ℓ2 norm for euclidean."""
        return self.combine_dual(self.dual_per_tensor(tensors))

    def lmo(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """Whole-model LMO, so that ⟨g, lmo(g)⟩ = −dual(g) and primal(lmo(g)) ≤ 1."""
        self._check(tensors)
        if self.family != "euclidean":
            return [tensor_lmo(t, self.family) for t in tensors]
        norm = self.dual(tensors)
        if norm == 0:
            return [torch.zeros_like(t) for t in tensors]
        return [(-_work(t) / norm).to(t.dtype) for t in tensors]

    def kappa(self, tensors: Sequence[Tensor]) -> int:
        """κ = Σ c_i, the constant with dual ≤ κ · primal for the whole model (euclidean: 1)."""
        self._check(tensors)
        if self.family == "euclidean":
            return 1
        return sum(tensor_constant(t, self.family) for t in tensors)

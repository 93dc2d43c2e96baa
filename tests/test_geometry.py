"""Geometry: dual norms against closed forms, duality, LMOs and the nuclear estimate."""

import pytest
import torch

from smoothprobe.errors import SmoothprobeError
from smoothprobe.geometry import (
    FAMILIES,
    Geometry,
    default_names,
    family_for_optimizer,
    nuclear_norm_estimate,
    singular_values,
    tensor_constant,
    tensor_lmo,
    tensor_norms,
)

SHAPES = [(5, 3), (4, 4), (3, 2, 2)]


def tensors(seed: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, dtype=dtype) for shape in SHAPES]


def inner(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum((x.double() * y.double()).sum().item() for x, y in zip(a, b))


def geometry(family: str) -> Geometry:
    return Geometry(family, [f"t{i}" for i in range(len(SHAPES))])


def test_family_for_optimizer_maps_names_and_rejects_unknown():
    assert family_for_optimizer("Muon") == "spectral"
    assert family_for_optimizer("lion") == family_for_optimizer("signSGD") == "sign"
    assert family_for_optimizer("normsgd") == "frobenius"
    assert family_for_optimizer("adamw") == family_for_optimizer("sgd") == "euclidean"
    with pytest.raises(SmoothprobeError, match="optimizer"):
        family_for_optimizer("adagrad")


def test_dual_norms_equal_closed_forms():
    g = tensors(0)
    mats = [t.reshape(t.shape[0], -1) for t in g]
    nuclear = sum(torch.linalg.svdvals(m).sum().item() for m in mats)
    spectral_max = max(torch.linalg.svdvals(m)[0].item() for m in mats)
    assert geometry("spectral").dual(g) == pytest.approx(nuclear, rel=1e-12)
    assert geometry("spectral").primal(g) == pytest.approx(spectral_max, rel=1e-12)
    l1 = sum(t.abs().sum().item() for t in g)
    assert geometry("sign").dual(g) == pytest.approx(l1, rel=1e-12)
    assert geometry("sign").primal(g) == pytest.approx(max(t.abs().max().item() for t in g))
    frob = [t.norm().item() for t in g]
    assert geometry("frobenius").dual(g) == pytest.approx(sum(frob), rel=1e-12)
    assert geometry("frobenius").primal(g) == pytest.approx(max(frob), rel=1e-12)
    whole = torch.cat([t.reshape(-1) for t in g]).norm().item()
    assert geometry("euclidean").dual(g) == pytest.approx(whole, rel=1e-12)
    assert geometry("euclidean").primal(g) == pytest.approx(whole, rel=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_duality_inequality_and_equality_at_the_lmo(family):
    geo = geometry(family)
    g = tensors(1)
    dual = geo.dual(g)
    for seed in range(20):
        u = tensors(100 + seed)
        scaled = [t / geo.primal(u) for t in u]
        assert geo.primal(scaled) == pytest.approx(1.0)
        assert abs(inner(g, scaled)) <= dual * (1 + 1e-12)
    lmo = geo.lmo(g)
    assert geo.primal(lmo) == pytest.approx(1.0, rel=1e-10)
    assert inner(g, lmo) == pytest.approx(-dual, rel=1e-10)


@pytest.mark.parametrize("family", ["spectral", "sign", "frobenius"])
def test_norm_constant_bounds_dual_by_primal_and_is_attained(family):
    geo = geometry(family)
    g = tensors(2)
    per_primal, per_dual = geo.primal_per_tensor(g), geo.dual_per_tensor(g)
    for t, p, d in zip(g, per_primal, per_dual):
        assert d <= tensor_constant(t, family) * p * (1 + 1e-12)
    expected = {"spectral": 3 + 4 + 3, "sign": 15 + 16 + 12, "frobenius": 3}[family]
    assert geo.kappa(g) == expected
    assert geometry("euclidean").kappa(g) == 1


def test_sign_norm_constant_is_attained_by_a_constant_tensor():
    t = torch.full((3, 4), -2.0)
    primal, dual = tensor_norms(t, "sign")
    assert dual.item() == tensor_constant(t, "sign") * primal.item()


def test_lmo_keeps_shape_and_dtype_in_bf16():
    t = torch.randn(6, 2, 2).to(torch.bfloat16)
    for family in ("spectral", "sign", "frobenius"):
        out = tensor_lmo(t, family)
        assert out.shape == t.shape and out.dtype == torch.bfloat16
    primal, dual = tensor_norms(t, "spectral")
    exact = torch.linalg.svdvals(t.float().reshape(6, -1))
    assert dual.dtype == torch.float32
    assert dual.item() == pytest.approx(exact.sum().item(), rel=1e-5)
    assert primal.item() == pytest.approx(exact.max().item(), rel=1e-5)


def test_spectral_geometry_refuses_vectors_and_default_names_leave_them_out():
    named = [("w", torch.randn(3, 3)), ("b", torch.randn(3))]
    assert default_names(named, "spectral") == ["w"]
    assert default_names(named, "sign") == ["w", "b"]
    with pytest.raises(SmoothprobeError, match="'b'"):
        Geometry("spectral", ["w", "b"]).dual([t for _, t in named])
    with pytest.raises(SmoothprobeError, match="family"):
        Geometry("muon", ["w"])
    with pytest.raises(SmoothprobeError, match="nuclear"):
        Geometry("spectral", ["w"], nuclear="svd")


@pytest.mark.parametrize("shape", [(300, 40), (40, 300), (64, 64)])
def test_nuclear_estimate_within_its_stated_bound(shape):
    generator = torch.Generator().manual_seed(3)
    t = torch.randn(*shape, generator=generator)
    exact = torch.linalg.svdvals(t.double()).sum().item()
    estimate, bound = nuclear_norm_estimate(t)
    assert abs(estimate.item() - exact) <= bound.item()
    assert bound.item() <= 1e-9 * exact
    estimated = Geometry("spectral", ["t"], nuclear="estimate").dual([t])
    assert estimated == pytest.approx(exact, rel=1e-9)


def test_nuclear_estimate_bound_covers_rank_deficient_matrices():
    generator = torch.Generator().manual_seed(4)
    low_rank = torch.randn(200, 3, generator=generator) @ torch.randn(3, 50, generator=generator)
    exact = torch.linalg.svdvals(low_rank.double()).sum().item()
    estimate, bound = nuclear_norm_estimate(low_rank)
    assert abs(estimate.item() - exact) <= bound.item()
    assert bound.item() <= 1e-4 * exact
    sigma = singular_values(low_rank, "estimate")
    assert sigma.shape == (50,)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("nuclear", ["exact", "estimate"])
def test_non_finite_tensor_has_nan_spectral_norms_instead_of_an_eigensolver_error(bad, nuclear):
    t = torch.randn(6, 4, dtype=torch.float64)
    t[2, 1] = bad
    primal, dual = tensor_norms(t, "spectral", nuclear)
    assert torch.isnan(primal) and torch.isnan(dual)
    assert torch.isnan(nuclear_norm_estimate(t)[0])


def test_huge_finite_tensor_keeps_its_singular_values():
    t = torch.randn(6, 4, dtype=torch.float64)
    exact = torch.linalg.svdvals(t)
    scale = 1e200  # GᵀG would overflow to inf without rescaling
    estimate = singular_values(t * scale, "estimate").sort().values / scale
    assert torch.allclose(estimate, exact.sort().values, rtol=1e-6)

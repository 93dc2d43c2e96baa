"""Optimizers: one step from zero state against closed forms, the Muon/AdamW split, exact resume."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from smoothprobe.errors import SmoothprobeError
from smoothprobe.optim import (
    ADAMW_LR_RATIO,
    MOMENTUM_STATE,
    OPTIMIZERS,
    MuonWithAdamW,
    default_lr,
    describe_split,
    make_optimizer,
    momentum_memory,
    muon_split,
    restart_momentum,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Singular values of torch.optim.Muon's Newton-Schulz output (5 steps, default coefficients) for
# Gaussian matrices with aspect ratio <= 1/2, measured over 8 shapes x 20 draws: [0.678, 1.138].
NS_BAND = (0.6, 1.2)


class TiedLM(nn.Module):
    """Embedding, a residual MLP with a bias, LayerNorm, and a head tied to the embedding."""

    def __init__(self, vocab: int = 11, d: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d, bias=False)
        self.norm = nn.LayerNorm(d)
        self.decoder = nn.Linear(d, vocab, bias=False)
        self.decoder.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        h = h + self.down(torch.relu(self.up(h)))
        return self.decoder(self.norm(h))


class UntiedHeads(nn.Module):
    """Untied heads found by name: a module ``output``, a bare parameter ``head``."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(6, 6, bias=False)
        self.output = nn.Linear(6, 4, bias=False)
        self.head = nn.Parameter(torch.randn(4, 6))
        self.gain = nn.Parameter(torch.ones(()))


def _random_grads(model: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen).to(p)


def _loss_step(model: TiedLM, optimizer: torch.optim.Optimizer, step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    device = next(model.parameters()).device
    tokens = torch.randint(0, 11, (4, 5), generator=gen).to(device)
    optimizer.zero_grad()
    logits = model(tokens[:, :-1])
    nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()).backward()
    optimizer.step()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_names_are_the_cli_choices() -> None:
    assert OPTIMIZERS == ("muon", "lion", "signum", "signsgd", "normsgd", "adamw", "sgd")
    assert default_lr("muon") == 0.02
    assert all(default_lr(name) > 0 for name in OPTIMIZERS)
    with pytest.raises(SmoothprobeError, match="unknown name 'adam'"):
        default_lr("adam")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["lion", "signum", "signsgd"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_sign_step_closed_form(name: str, wd: float, device: str) -> None:
    torch.manual_seed(0)
    model = TiedLM().to(device)
    lr = 0.01
    opt = make_optimizer(name, model, lr=lr, weight_decay=wd)
    x0 = _snapshot(model)
    _random_grads(model)
    opt.step()
    for n, p in model.named_parameters():
        decay = wd if p.ndim >= 2 else 0.0
        expected = x0[n] * (1 - lr * decay) - lr * torch.sign(p.grad)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)


def test_no_decay_1d_false_decays_gains() -> None:
    torch.manual_seed(0)
    model = TiedLM()
    lr, wd = 0.01, 0.5
    opt = make_optimizer("signsgd", model, lr=lr, weight_decay=wd, no_decay_1d=False)
    gain0 = model.norm.weight.detach().clone()
    _random_grads(model)
    opt.step()
    expected = gain0 * (1 - lr * wd) - lr * torch.sign(model.norm.weight.grad)
    torch.testing.assert_close(model.norm.weight.detach(), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_normsgd_moves_each_tensor_by_lr_along_minus_grad(momentum: float, device: str) -> None:
    torch.manual_seed(0)
    model = TiedLM().to(device)
    lr = 0.05
    opt = make_optimizer("normsgd", model, lr=lr, momentum=momentum)
    x0 = _snapshot(model)
    _random_grads(model)
    opt.step()
    for n, p in model.named_parameters():
        step = p.detach() - x0[n]
        assert math.isclose(step.norm().item(), lr, rel_tol=1e-5), n
        torch.testing.assert_close(step, -lr * p.grad / p.grad.norm(), rtol=0, atol=1e-6)


def test_normsgd_zero_gradient_gives_zero_step() -> None:
    model = TiedLM()
    opt = make_optimizer("normsgd", model, lr=0.1)
    x0 = _snapshot(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), x0[n])


def test_sgd_weight_decay_is_decoupled() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2, bias=False)
    lr, wd = 0.1, 0.3
    opt = make_optimizer("sgd", model, lr=lr, weight_decay=wd)
    x0 = model.weight.detach().clone()
    for step in range(2):
        model.weight.grad = torch.full_like(x0, 1.0)
        opt.step()
    # m1 = g, m2 = 0.9*g + g; x2 = (x0*(1-lr*wd) - lr*g)*(1-lr*wd) - lr*1.9*g
    keep = 1 - lr * wd
    expected = (x0 * keep - lr) * keep - lr * 1.9
    torch.testing.assert_close(model.weight.detach(), expected)


def test_adamw_first_step_is_lr_sign() -> None:
    # Adam's bias-corrected first step is g/(|g| + eps') = sign(g) up to eps.
    torch.manual_seed(0)
    model = TiedLM()
    opt = make_optimizer("adamw", model, lr=1e-3)
    x0 = _snapshot(model)
    _random_grads(model)
    opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), x0[n] - 1e-3 * torch.sign(p.grad),
                                   rtol=0, atol=1e-8)


class TwoMatrices(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Linear(64, 32, bias=False)
        self.tall = nn.Linear(32, 64, bias=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_muon_update_singular_values_in_newton_schulz_band(device: str,
                                                          dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = TwoMatrices().to(device=device, dtype=dtype)
    lr = 0.02
    opt = make_optimizer("muon", model, lr=lr)
    assert describe_split(opt) == {"muon": ["wide.weight", "tall.weight"]}
    x0 = _snapshot(model)
    _random_grads(model)
    opt.step()
    for n, p in model.named_parameters():
        rows, cols = p.shape
        adjusted_lr = lr * math.sqrt(max(1.0, rows / cols))
        update = (x0[n] - p.detach()).float() / adjusted_lr
        sv = torch.linalg.svdvals(update)
        low, high = NS_BAND
        assert low <= sv.min().item() and sv.max().item() <= high, (n, sv.min(), sv.max())
        u, _, vh = torch.linalg.svd(p.grad.float(), full_matrices=False)
        polar = u @ vh
        cosine = (update * polar).sum() / (update.norm() * polar.norm())
        assert cosine.item() > 0.97, n


def test_split_sends_embedding_head_and_1d_to_adamw() -> None:
    muon, adamw = muon_split(TiedLM())
    assert muon == ["up.weight", "down.weight"]
    assert adamw == ["embed.weight", "up.bias", "norm.weight", "norm.bias"]
    muon, adamw = muon_split(UntiedHeads())
    assert muon == ["hidden.weight"]
    assert adamw == ["head", "gain", "output.weight"]


def test_split_skips_frozen_parameters() -> None:
    model = TiedLM()
    model.up.weight.requires_grad_(False)
    muon, adamw = muon_split(model)
    assert "up.weight" not in muon + adamw


def test_muon_optimizer_groups_and_adamw_lr() -> None:
    model = TiedLM()
    opt = make_optimizer("muon", model, lr=0.02, weight_decay=0.1)
    assert isinstance(opt, MuonWithAdamW)
    assert describe_split(opt) == {
        "muon": ["up.weight", "down.weight"],
        "adamw": ["embed.weight", "up.bias", "norm.weight", "norm.bias"],
    }
    by_algo = {(g["algo"], g["weight_decay"]): g["lr"] for g in opt.param_groups}
    assert by_algo == {("muon", 0.1): 0.02, ("adamw", 0.1): 0.02 * ADAMW_LR_RATIO,
                       ("adamw", 0.0): 0.02 * ADAMW_LR_RATIO}
    explicit = make_optimizer("muon", model, lr=0.02, adamw_lr=3e-4)
    assert {g["lr"] for g in explicit.param_groups if g["algo"] == "adamw"} == {3e-4}


def test_muon_lr_changes_reach_inner_optimizers() -> None:
    torch.manual_seed(0)
    model = TiedLM()
    opt = make_optimizer("muon", model, lr=0.02)
    for group in opt.param_groups:
        group["lr"] = 0.0 if group["algo"] == "muon" else 1e-2
    x0 = _snapshot(model)
    _random_grads(model)
    opt.step()
    muon_names, adamw_names = muon_split(model)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n].detach(), x0[n]) for n in muon_names)
    assert all(not torch.equal(params[n].detach(), x0[n]) for n in adamw_names)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    for inner in opt.inner.values():
        for group in inner.param_groups:
            assert any(group is outer for outer in opt.param_groups)


def test_muon_without_matrices_or_without_rest() -> None:
    only_rest = nn.LayerNorm(4)
    assert set(make_optimizer("muon", only_rest, lr=0.02).inner) == {"adamw"}
    only_matrices = TwoMatrices()
    assert set(make_optimizer("muon", only_matrices, lr=0.02).inner) == {"muon"}


def _saved(opt: torch.optim.Optimizer) -> dict:
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_gives_bit_identical_steps(name: str) -> None:
    torch.manual_seed(0)
    model = TiedLM()
    opt = make_optimizer(name, model, lr=0.01, weight_decay=0.1)
    for step in range(3):
        _loss_step(model, opt, step)
    resumed = TiedLM()
    resumed.load_state_dict(model.state_dict())
    resumed_opt = make_optimizer(name, resumed, lr=0.5, weight_decay=0.0)
    resumed_opt.load_state_dict(_saved(opt))
    for group in resumed_opt.param_groups:
        group["lr"] *= 0.5
    for group in opt.param_groups:
        group["lr"] *= 0.5
    for step in range(3, 5):
        _loss_step(model, opt, step)
        _loss_step(resumed, resumed_opt, step)
    for (n, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), n
    assert describe_split(resumed_opt) == describe_split(opt)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_restart_momentum_zeroes_the_first_moments_only(name: str) -> None:
    """Every first-moment buffer is zeroed (none for signSGD, which keeps no state); Adam's second
    moments and step counts stay."""
    torch.manual_seed(0)
    model = TiedLM()
    opt = make_optimizer(name, model, lr=0.01)
    for step in range(2):
        _loss_step(model, opt, step)
    kept = {(id(p), k): v.clone() for p, s in opt.state.items() for k, v in s.items() if k not in MOMENTUM_STATE}
    zeroed = restart_momentum(opt)
    firsts = [s[k] for s in opt.state.values() for k in MOMENTUM_STATE if isinstance(s.get(k), torch.Tensor)]
    assert zeroed == len(firsts) == (0 if name == "signsgd" else len(list(model.parameters())))
    assert all(not t.any() for t in firsts)
    assert all(torch.equal(opt.state[p][k], kept[id(p), k]) for p, s in opt.state.items() for k in s
               if k not in MOMENTUM_STATE)


@pytest.mark.parametrize("name, memory", [("lion", 100), ("adamw", 10), ("muon", 20), ("normsgd", 10),
                                          ("signum", 10), ("signsgd", 1), ("sgd", 10)])
def test_momentum_memory_is_one_over_one_minus_the_first_moments_rate(name: str, memory: int) -> None:
    """Lion's buffer moves at β2 = 0.99, AdamW's at β1 = 0.9, Muon's at 0.95; signSGD keeps none."""
    assert momentum_memory(make_optimizer(name, TiedLM(), lr=0.01)) == pytest.approx(memory)


def test_lion_after_a_restart_steps_by_lr_times_the_gradients_sign() -> None:
    """With m = 0, Lion's direction sign(b1·m + (1 − b1)·g) is sign(g): x moves by exactly lr·sign(g)."""
    torch.manual_seed(0)
    model = TiedLM()
    opt = make_optimizer("lion", model, lr=0.01)
    for step in range(3):
        _loss_step(model, opt, step)
    restart_momentum(opt)
    before = _snapshot(model)
    _random_grads(model)
    opt.step()
    for n, p in model.named_parameters():
        assert torch.allclose(before[n] - p.detach(), 0.01 * p.grad.sign()), n


def test_muon_deepcopy_keeps_inner_optimizers_linked() -> None:
    torch.manual_seed(0)
    model = TiedLM()
    opt = make_optimizer("muon", model, lr=0.02)
    _loss_step(model, opt, 0)
    model2, opt2 = copy.deepcopy((model, opt))
    for step in range(1, 3):
        _loss_step(model, opt, step)
        _loss_step(model2, opt2, step)
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert opt2.inner["muon"].param_groups[0] is opt2.param_groups[0]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_bf16_parameters_stay_bf16_and_move(name: str) -> None:
    torch.manual_seed(0)
    # bf16 spacing near 1 is 2**-7: a smaller step would round away on the LayerNorm gains.
    model = TiedLM().to(torch.bfloat16)
    opt = make_optimizer(name, model, lr=0.2)
    x0 = _snapshot(model)
    _loss_step(model, opt, 0)
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all(), n
        assert not torch.equal(p.detach(), x0[n]), n


def test_step_returns_closure_loss() -> None:
    model = TiedLM()
    for name in ("lion", "muon"):
        opt = make_optimizer(name, model, lr=0.01)
        loss = opt.step(lambda: model.norm.weight.sum() * 0 + 3.0)
        assert loss.item() == 3.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "adam"}, "unknown name 'adam'; choose one of muon, lion"),
    ({"lr": -1e-3}, "lr: must be a finite number >= 0, got -0.001"),
    ({"lr": float("nan")}, "lr: must be"),
    ({"weight_decay": -0.1}, "weight_decay: must be a finite number >= 0, got -0.1"),
    ({"betas": (0.9, 0.99)}, "betas: not used by signum"),
    ({"name": "lion", "betas": (0.9, 1.0)}, "betas: need two values in"),
    ({"name": "signsgd", "momentum": 0.9}, "signsgd has none"),
    ({"momentum": 1.0}, "momentum: must be in"),
    ({"name": "lion", "momentum": 0.9}, "momentum: not used by lion"),
    ({"adamw_lr": 1e-3}, "adamw_lr: only used by muon"),
    ({"name": "muon", "adamw_lr": -1.0}, "adamw_lr: must be"),
])
def test_bad_input_raises_smoothprobe_error(kwargs: dict, match: str) -> None:
    args = {"name": "signum", "lr": 1e-3, **kwargs}
    name = args.pop("name")
    with pytest.raises(SmoothprobeError, match=match.replace("(", r"\(").replace(")", r"\)")):
        make_optimizer(name, TiedLM(), **args)


def test_model_without_trainable_parameters_is_refused() -> None:
    model = TiedLM().requires_grad_(False)
    with pytest.raises(SmoothprobeError, match="no trainable parameters"):
        make_optimizer("lion", model, lr=1e-3)


def test_describe_split_needs_factory_groups() -> None:
    with pytest.raises(ValueError, match="algo"):
        describe_split(torch.optim.SGD(TiedLM().parameters(), lr=0.1))
    model = TiedLM()
    names = [n for n, _ in model.named_parameters()]
    split = describe_split(make_optimizer("lion", model, lr=1e-3))
    assert list(split) == ["lion"] and sorted(split["lion"]) == sorted(names)

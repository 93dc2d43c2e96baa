"""AdaptiveWarmup and its math against closed forms, planted constants and dense-grid references."""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest
import torch

from smoothprobe.distributed import all_reduce_mean
from smoothprobe.errors import SmoothprobeError
from smoothprobe.schedule.adaptive import AdaptiveWarmup
from smoothprobe.smoothness import (
    Constants,
    eta,
    practical_constants,
    practical_delta_peak,
    practical_mismatch,
)


def _llama124m_kappa(family: str, vocab: int) -> float:
    """κ = Σ c_i of the paper's LLaMA-124M blocks (12 layers, d 768, ff 2048, tied head)."""
    shapes = [(768, 768)] * 4 * 12 + [(768, 2048)] * 2 * 12 + [(2048, 768)] * 12 + [(vocab, 768)]
    if family == "sign":
        return float(sum(m * n for m, n in shapes))
    return float(sum(min(m, n) for m, n in shapes))


KAPPA_MUON = _llama124m_kappa("spectral", 32000)
KAPPA_LION = _llama124m_kappa("sign", 50304)


def _optimizer(*lrs: float) -> torch.optim.SGD:
    torch.manual_seed(0)
    groups = [{"params": torch.nn.Linear(3, 2).parameters(), "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups)


def _drive(sched: AdaptiveWarmup, losses) -> list[float]:
    """Feed losses (optimizer.step first, as in training); return group-0 LR after each."""
    lrs = []
    for loss in losses:
        sched.optimizer.step()
        sched.step(loss)
        lrs.append(sched.optimizer.param_groups[0]["lr"])
    return lrs


def _dense_mismatch(p: float, div: float, delta0: float, kappa: float, n: int) -> float:
    """Brute force: trapezoid rule of the practical mismatch on a uniform n-point grid."""
    x = np.linspace(0.0, delta0, n)[1:]
    shape = 1 / (1 + (div - 1) * (delta0 / x) * ((x - p) / (delta0 - p)) ** 2)
    target = np.where(
        x < p, 0.5 * (1 - np.cos(np.pi * x / p)), 1 + (1 / div - 1) * (x - p) / (delta0 - p)
    )
    f = np.concatenate([[0.0], np.exp(-0.5e-3 * kappa * (x - p) ** 2) * (shape - target) ** 2])
    return float(np.trapezoid(f, dx=delta0 / (n - 1)) / delta0)


def test_practical_constants_meet_the_three_conditions():
    lr, div, d0, dp = 3e-3, 100.0, 7.8, 0.9
    c = practical_constants(lr, div, d0, dp)
    assert c.eta(d0) == pytest.approx(lr / div, rel=1e-12)
    assert c.eta(dp) == pytest.approx(lr, rel=1e-12)
    slope = (c.K0 - c.K_rho * dp**2) / (c.K0 + c.K1 * dp + c.K_rho * dp**2) ** 2
    assert abs(slope) * dp / lr < 1e-12
    assert c.delta_peak == pytest.approx(dp, rel=1e-12)
    assert c.eta_max == pytest.approx(lr, rel=1e-12)
    x = np.array([0.05, 0.5, 2.0, 5.0])
    closed = lr / (1 + (div - 1) * (d0 / x) * ((x - dp) / (d0 - dp)) ** 2)
    np.testing.assert_allclose(c.eta(x), closed, rtol=1e-12)


def test_synthetic_one_over_t_peaks_at_3162():
    c = Constants(1e-4, 0.0, 1000.0, 2.0)
    sched = AdaptiveWarmup(
        _optimizer(0.1), c, f_star=0.0, lr=10.0, min_lr=0.0, ema=0.0, decay="model"
    )
    lrs = _drive(sched, [1.0 / t for t in range(1, 10001)])
    # Δ' = √(K0/Kρ) = 1/3162.28: the first loss 1/t at or below it (t = 3163) runs at η_max itself
    assert int(np.argmax(lrs)) + 1 == 3163 and lrs[3161] < lrs[3162]
    assert max(lrs) == pytest.approx(1 / (2 * math.sqrt(1e-4 * 1000)), rel=1e-6)
    assert max(lrs) == pytest.approx(1.5811388, rel=1e-6)
    assert lrs[0] == pytest.approx(1 / (1e-4 + 1000), rel=1e-12)
    assert sched.phase == "decay"


def test_first_step_runs_at_lr_over_div():
    lr, div = 0.05, 20.0
    opt = _optimizer(lr)
    sched = AdaptiveWarmup.practical(opt, lr, div, 1.0, delta_peak=0.5, decay="model")
    assert opt.param_groups[0]["lr"] == pytest.approx(lr / div, rel=1e-15)
    model_w = opt.param_groups[0]["params"][0]
    before = model_w.detach().clone()
    model_w.grad = torch.ones_like(model_w)
    opt.step()
    torch.testing.assert_close(model_w.detach(), before - lr / div)
    sched.step(4.0)  # Δ0 = 3 fixes the constants, LR stays at η(Δ0) = lr/div
    assert sched.last_record()["delta0"] == 3.0
    assert opt.param_groups[0]["lr"] == pytest.approx(lr / div, rel=1e-12)
    assert sched.constants.eta_max == pytest.approx(lr, rel=1e-12)


def test_practical_chooses_delta_peak_from_kappa_at_first_loss():
    opt = _optimizer(1e-3)
    sched = AdaptiveWarmup.practical(opt, 1e-3, 100.0, 3.2, kappa=KAPPA_MUON, total_steps=9)
    _drive(sched, [11.0])
    expected = practical_delta_peak(100.0, 11.0 - 3.2, KAPPA_MUON)
    assert sched.last_record()["delta_peak"] == pytest.approx(expected, rel=1e-12)


def test_single_outlier_batch_does_not_switch():
    c = practical_constants(0.1, 10.0, 2.0, 0.5)
    sched = AdaptiveWarmup(_optimizer(0.1), c, f_star=0.0, ema=0.0, consecutive=5, total_steps=50)
    with pytest.warns(RuntimeWarning, match="at or below f_star"):
        _drive(sched, [2.0, 1.5, 1.2, -3.0, 1.1, 1.0])  # one batch far below f* + Δ' and f*
    assert sched.phase == "warmup"
    assert sched.last_record()["nonpos_count"] == 1
    _drive(sched, [0.4, 0.4, 0.4, 0.4, 0.9])  # four below, then back above: still warm-up
    assert sched.phase == "warmup"
    _drive(sched, [0.4] * 5)
    assert sched.phase == "decay"
    assert sched._switch_step == 16


def test_an_f_star_update_past_delta_peak_holds_the_peak_until_the_decay():
    # K = 1 + 2Δ + Δ²: η_max = 0.25 at Δ' = 1. A new f* that moves the gap from 3 to 0.05 is the
    # crossing: the peak, not η(0.05) = 0.0454 on the falling side, for the steps that confirm it
    sched = AdaptiveWarmup(_optimizer(1.0), Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, ema=0.0,
                           consecutive=3, decay="linear", total_steps=100, reduce=None)
    assert _drive(sched, [3.0]) == [pytest.approx(3 / 16, rel=1e-12)]
    sched.set_f_star(2.95)
    lrs = _drive(sched, [3.0] * 4)
    assert lrs[:3] == [pytest.approx(0.25, rel=1e-12)] * 3 and sched.phase == "decay"
    floor = sched.min_lr  # the linear decay runs from the peak at the switch (step 4) to the floor at step 100
    assert sched._switch_step == 4 and lrs[3] == pytest.approx(floor + (0.25 - floor) * (1 - 1 / 96), rel=1e-12)


def test_default_ema_absorbs_an_outlier():
    c = practical_constants(0.1, 10.0, 2.0, 0.5)
    sched = AdaptiveWarmup(_optimizer(0.1), c, f_star=0.0, consecutive=1, total_steps=50)
    _drive(sched, [2.0] * 10 + [0.0] + [2.0] * 5)
    assert sched.phase == "warmup"


def test_nan_loss_keeps_lr_and_leaves_the_ema_untouched():
    c = practical_constants(0.1, 10.0, 2.0, 0.5)
    losses = [2.0, 1.8, 1.5, 1.3, 1.2, 1.1]

    def run(seq):
        sched = AdaptiveWarmup(_optimizer(0.1), c, f_star=0.0, decay="model")
        return sched, _drive(sched, seq)

    with pytest.warns(RuntimeWarning, match="non-finite"):
        sched, lrs = run(losses[:3] + [float("nan"), float("inf")] + losses[3:])
    assert lrs[3] == lrs[4] == lrs[2] > 0
    assert sched.last_record()["nan_count"] == 2
    _, clean = run(losses)
    assert lrs[:3] + lrs[5:] == clean


def test_nonpositive_gap_is_counted_and_sends_lr_to_floor_once_the_crossing_is_confirmed():
    c = practical_constants(0.1, 10.0, 2.0, 0.5)
    sched = AdaptiveWarmup(
        _optimizer(0.1), c, f_star=1.0, ema=0.0, decay="model", min_lr=1e-5, consecutive=2
    )
    with pytest.warns(RuntimeWarning, match="at or below f_star") as caught:
        lrs = _drive(sched, [3.0, 0.5, 1.0])
    assert len([w for w in caught if "at or below" in str(w.message)]) == 1  # once, then counted
    rec = sched.last_record()
    assert rec["nonpos_count"] == 2 and rec["delta"] == 0.0
    # the first gap at or below f* is a crossing of Δ' in the warm-up (the peak); once confirmed, the floor
    assert lrs[1:] == [pytest.approx(0.1, rel=1e-12), 1e-5]
    assert sched.phase == "decay"


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_decay_reaches_floor_at_total_steps(decay):
    c = practical_constants(0.1, 10.0, 2.0, 0.5)
    sched = AdaptiveWarmup(
        _optimizer(0.1), c, f_star=0.0, ema=0.0, consecutive=1, total_steps=30, decay=decay
    )
    lrs = _drive(sched, [1.0, 0.6] + [0.4] * 30)
    start, floor = 0.1, 0.1 * 1e-4  # switch at step 3 from the peak η(Δ') = lr, not the LR in use
    assert lrs[1] < start  # the LR in use at the crossing (Δ̂ jumped past Δ' = 0.5 to 0.4)
    assert sched._switch_step == 3 and lrs[2] == pytest.approx(start, rel=1e-12)
    assert lrs[29] == pytest.approx(floor, rel=1e-12) and lrs[31] == pytest.approx(floor)
    progress = (16 - 3) / (30 - 3)  # lrs[15] is set at step 16
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
    assert lrs[15] == pytest.approx(floor + (start - floor) * shape, rel=1e-12)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_cooldown_decays_from_the_lr_in_use_when_the_gap_never_reaches_delta_peak(decay):
    # K = 1 + 2Δ + Δ²: Δ' = 1, η(3) = 3/16; the loss stays 3 above f* = 0, so Δ' is never crossed
    sched = AdaptiveWarmup(_optimizer(1.0), Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, ema=0.0,
                           consecutive=1, total_steps=20, decay=decay, cooldown=5, lr=0.25)
    lrs = _drive(sched, [3.0] * 20)
    assert lrs[:15] == pytest.approx([3 / 16] * 15, rel=1e-12) and sched._switch_step == 15
    progress = (18 - 15) / (20 - 15)  # lrs[17] is set at step 18
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
    floor = 0.25 * 1e-4
    assert lrs[17] == pytest.approx(floor + (3 / 16 - floor) * shape, rel=1e-12)
    assert lrs[19] == pytest.approx(floor, rel=1e-12)


def test_cooldown_leaves_a_crossing_and_decay_model_alone():
    crossed = AdaptiveWarmup(_optimizer(1.0), Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, ema=0.0,
                             consecutive=1, total_steps=20, cooldown=5, lr=0.25)
    _drive(crossed, [3.0, 0.5] + [0.5] * 18)
    assert crossed._switch_step == 2 and crossed._switch_lr == 0.25
    model = AdaptiveWarmup(_optimizer(1.0), Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, ema=0.0,
                           consecutive=1, total_steps=20, decay="model", cooldown=5, lr=0.25)
    assert _drive(model, [3.0] * 20)[-1] == pytest.approx(3 / 16) and model.phase == "warmup"
    with pytest.raises(SmoothprobeError, match="cooldown must lie in"):
        AdaptiveWarmup(_optimizer(1.0), Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, total_steps=20,
                       cooldown=20)
    none = AdaptiveWarmup(_optimizer(1.0), Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, ema=0.0,
                          total_steps=20, cooldown=0, lr=0.25)  # 0: no cooldown, not one at the end
    _drive(none, [3.0] * 20)
    assert none.cooldown is None and none.phase == "warmup"
    state = {k: v for k, v in crossed.state_dict().items() if k != "cooldown"}  # a checkpoint before cooldown
    crossed.load_state_dict(state)
    assert crossed.cooldown is None


def test_two_groups_keep_their_ratio():
    opt = _optimizer(0.02, 0.004)
    sched = AdaptiveWarmup.practical(
        opt, 0.02, 50.0, f_star=0.0, delta_peak=0.3, ema=0.0, decay="linear", total_steps=9
    )
    for loss in [2.0, 1.5, 1.0, 0.5, 0.35, 0.3]:
        opt.step()
        sched.step(loss)
        g0, g1 = (g["lr"] for g in opt.param_groups)
        assert g0 / g1 == pytest.approx(5.0, rel=1e-12)
        if loss == 0.3:
            assert g0 == pytest.approx(0.02, rel=1e-9)


def test_state_dict_resume_gives_identical_lrs():
    rng = np.random.default_rng(0)
    losses = list(3.0 * np.exp(-np.arange(80) / 20) + 1.0 + 0.05 * rng.standard_normal(80))
    losses[37] = float("nan")
    kwargs = {"kappa": KAPPA_MUON, "total_steps": 80}

    def make():
        opt = _optimizer(0.01, 0.002)
        return AdaptiveWarmup.practical(opt, 0.01, 25.0, f_star=0.9, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        full = make()
        reference = _drive(full, losses)
        first = make()
        head = _drive(first, losses[:40])
        buf = io.BytesIO()
        torch.save(first.state_dict(), buf)
        buf.seek(0)
        resumed = make()
        resumed.load_state_dict(torch.load(buf, weights_only=True))
        assert resumed.optimizer.param_groups[1]["lr"] == first.optimizer.param_groups[1]["lr"]
        tail = _drive(resumed, losses[40:])
    assert full.phase == "decay"
    assert head + tail == reference
    assert resumed.last_record() == full.last_record()


def test_from_fit_reproduces_eta_exactly(tmp_path):
    fit = {
        "constants": {"rho": 2.0, "K0": 2e-3, "K1": 0.7, "K_rho": 40.0},
        "f_star": 1.25,
        "delta_peak": math.sqrt(2e-3 / 40.0),
        "eta_max": 1 / (0.7 + 2 * math.sqrt(2e-3 * 40.0)),
        "delta_range": [0.005, 3.0],
    }
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(fit))
    c = fit["constants"]
    losses = [4.0, 3.1, 2.2, 1.6, 1.3, 1.27]
    for source in (fit, str(path)):
        opt = _optimizer(0.5)
        sched = AdaptiveWarmup.from_fit(opt, source, ema=0.0, decay="model", min_lr=0.0)
        assert opt.param_groups[0]["lr"] == eta(3.0, c["K0"], c["K1"], c["K_rho"], 2.0)
        lrs = _drive(sched, losses)
        want = [eta(x - 1.25, c["K0"], c["K1"], c["K_rho"], 2.0) for x in losses]
        assert lrs == want
    scaled = AdaptiveWarmup.from_fit(_optimizer(0.5), fit, lr=0.01, ema=0.0, decay="model")
    assert scaled.constants.eta_max == pytest.approx(0.01, rel=1e-12)
    ratio = 0.01 / fit["eta_max"]
    want = ratio * eta(0.75, c["K0"], c["K1"], c["K_rho"], 2.0)
    assert _drive(scaled, [2.0]) == [pytest.approx(want, rel=1e-12)]
    # the floor follows the peak: ratio x the rescaled peak, or x eta_max without a rescale
    floored = AdaptiveWarmup.from_fit(_optimizer(0.5), fit, lr=0.01, min_lr_ratio=0.1, decay="model")
    assert floored.min_lr == pytest.approx(1e-3, rel=1e-12)
    exact = AdaptiveWarmup.from_fit(_optimizer(0.5), fit, min_lr_ratio=0.1, decay="model")
    assert exact.min_lr == pytest.approx(0.1 * fit["eta_max"], rel=1e-12)
    # η is evaluated inside the measured gaps only: below them it stays at η(0.005), once the crossing
    # is confirmed (during the warm-up a gap below Δ' runs at the peak η(Δ'))
    clipped = AdaptiveWarmup.from_fit(_optimizer(0.5), fit, ema=0.0, decay="model", min_lr=0.0)
    lrs = _drive(clipped, [1.251] * clipped.consecutive)
    assert lrs[:-1] == [pytest.approx(fit["eta_max"], rel=1e-12)] * (clipped.consecutive - 1)
    assert lrs[-1] == eta(0.005, c["K0"], c["K1"], c["K_rho"], 2.0) and clipped.phase == "decay"


def test_from_fit_decides_at_the_largest_measured_gap(tmp_path):
    """A fit whose Δ' interval lies above every measured gap needs no warm-up: the run starts at the
    peak and decays; one whose interval falls below the data is refused (unless allowed)."""
    fit = {"constants": {"rho": 2.0, "K0": 100.0, "K1": 1.0, "K_rho": 1.0}, "f_star": 0.0, "status": "supported",
           "delta_peak": 10.0, "eta_max": 1 / 21, "delta_range": [0.5, 4.0], "intervals": {"delta_peak": [8.0, 12.0]}}
    opt = _optimizer(0.5)
    sched = AdaptiveWarmup.from_fit(opt, fit, lr=0.01, min_lr_ratio=0.1, total_steps=100, decay="cosine")
    assert sched.phase == "decay" and sched.decision["branch"] == "no-warmup"
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01, rel=1e-12)  # step 0 runs at the peak
    assert _drive(sched, [4.0] * 50)[-1] == pytest.approx(0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    below = {**fit, "constants": {"rho": 2.0, "K0": 0.01, "K1": 1.0, "K_rho": 1.0}, "delta_peak": 0.1,
             "intervals": {"delta_peak": [0.05, 0.2]}}
    with pytest.raises(SmoothprobeError, match="extrapolation"):
        AdaptiveWarmup.from_fit(_optimizer(0.5), below, lr=0.01, total_steps=100)


def test_mismatch_matches_dense_trapezoid():
    for kappa in (85.0, KAPPA_MUON, KAPPA_LION):
        for p in (0.3, 0.78, 2.5):
            dense = _dense_mismatch(p, 100.0, 7.8, kappa, 400_001)
            assert practical_mismatch(p, 100.0, 7.8, kappa)[0] == pytest.approx(dense, rel=1e-6)


@pytest.mark.parametrize("kappa", [KAPPA_MUON, KAPPA_LION])
def test_delta_peak_matches_brute_force_scan(kappa):
    div, d0 = 100.0, 7.8
    got = practical_delta_peak(div, d0, kappa)
    coarse = np.linspace(0.05, d0 - 0.05, 80)
    best = coarse[np.argmin([_dense_mismatch(p, div, d0, kappa, 200_001) for p in coarse])]
    fine = np.linspace(best - 0.1, best + 0.1, 81)
    brute = fine[np.argmin([_dense_mismatch(p, div, d0, kappa, 200_001) for p in fine])]
    assert abs(got - brute) <= 0.0025


def test_delta_peak_for_lion_is_not_the_quadrature_failure():
    # docs/design.md §3: accurate integration gives Δ' ≈ 0.78 for Lion; the research code's 0.38 is wrong.
    assert 0.7 < practical_delta_peak(100.0, 7.8, KAPPA_LION) < 0.85


@pytest.mark.parametrize("kappa", [KAPPA_MUON, KAPPA_LION])
def test_delta_peak_is_smooth_in_delta0(kappa):
    d0 = np.linspace(7.7, 7.9, 21)  # a ±0.1 change of the first loss
    peaks = np.array([practical_delta_peak(100.0, d, kappa) for d in d0])
    steps = np.diff(peaks)
    assert np.all(np.sign(steps) == np.sign(steps[0]))  # monotone
    assert np.max(np.abs(steps)) <= 1.5 * np.median(np.abs(steps))  # no jumps
    assert np.max(np.abs(steps)) < 0.01


def test_all_reduce_mean_is_identity_without_process_group():
    value = torch.tensor(2.5, dtype=torch.bfloat16)
    assert all_reduce_mean(value) is value


def test_all_reduce_mean_under_a_process_group(tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert float(all_reduce_mean(torch.tensor(3.25))) == 3.25
        c = practical_constants(0.1, 10.0, 2.0, 0.5)
        sched = AdaptiveWarmup(_optimizer(0.1), c, f_star=0.0, ema=0.0, decay="model")
        assert _drive(sched, [torch.tensor(1.5, dtype=torch.bfloat16)]) == [float(c.eta(1.5))]
    finally:
        torch.distributed.destroy_process_group()


def _two_rank_worker(rank: int, store: str, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2
    )
    try:
        losses = [3.0 - 0.1 * t + (0.37 if rank else -0.21) * math.sin(t) for t in range(20)]
        sched = AdaptiveWarmup.practical(
            _optimizer(0.01), 0.01, 10.0, 0.5, kappa=KAPPA_MUON, total_steps=20
        )
        torch.save(_drive(sched, losses), f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_with_different_losses_get_identical_lrs(tmp_path):
    out = str(tmp_path / "lrs")
    torch.multiprocessing.spawn(_two_rank_worker, args=(str(tmp_path / "store"), out), nprocs=2)
    lrs0, lrs1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert lrs0 == lrs1
    mean = [3.0 - 0.1 * t + 0.08 * math.sin(t) for t in range(20)]
    opt = _optimizer(0.01)
    single = AdaptiveWarmup.practical(opt, 0.01, 10.0, 0.5, kappa=KAPPA_MUON, total_steps=20)
    np.testing.assert_allclose(lrs0, _drive(single, mean), rtol=1e-12)


def test_reduce_hook_is_used():
    c = practical_constants(0.1, 10.0, 2.0, 0.5)
    sched = AdaptiveWarmup(
        _optimizer(0.1), c, f_star=0.0, ema=0.0, decay="model", reduce=lambda t: t * 0 + 1.0
    )
    assert _drive(sched, [1.7]) == [float(c.eta(1.0))]
    assert "_reduce" not in sched.state_dict()


def test_bad_input_raises_smoothprobe_error():
    c = practical_constants(0.1, 10.0, 2.0, 0.5)
    with pytest.raises(SmoothprobeError, match="total_steps"):
        AdaptiveWarmup(_optimizer(0.1), c, f_star=0.0)
    with pytest.raises(SmoothprobeError, match="K0 > 0"):
        AdaptiveWarmup(_optimizer(0.1), Constants(0.0, 1.0, 1.0, 2.0), 0.0, decay="model")
    with pytest.raises(SmoothprobeError, match="delta_peak or kappa"):
        AdaptiveWarmup.practical(_optimizer(0.1), 0.1, 10.0, f_star=0.0, decay="model")
    with pytest.raises(SmoothprobeError, match="constants"):
        AdaptiveWarmup.from_fit(_optimizer(0.1), {"f_star": 1.0})
    sched = AdaptiveWarmup.practical(
        _optimizer(0.1), 0.1, 10.0, f_star=5.0, delta_peak=0.5, total_steps=9
    )
    with pytest.raises(SmoothprobeError, match="f_star"):
        sched.step(4.0)
    with pytest.raises(TypeError, match="loss"):
        AdaptiveWarmup(_optimizer(0.1), c, 0.0, decay="model").step()


def test_set_constants_swaps_mid_run():
    c = practical_constants(0.1, 10.0, 2.0, 0.5)
    sched = AdaptiveWarmup(_optimizer(0.1), c, f_star=0.0, ema=0.0, decay="model", lr=1.0)
    _drive(sched, [1.5])
    new = Constants(1e-2, 1.0, 3.0, 2.0)
    sched.set_constants(new)
    assert _drive(sched, [1.2]) == [float(new.eta(1.2))]
    assert sched.last_record()["K_rho"] == 3.0


def test_set_peak_scales_eta_the_floor_and_the_lr_in_use_and_keeps_delta_peak():
    """K(Δ) = 1 + 2Δ + Δ²: η(3) = 3/16 at peak η_max = 1/4. Moving the peak to 1/2 doubles η at
    every gap, at once and on the next step, while Δ' = 1 stays."""
    opt = _optimizer(1.0, 0.5)
    sched = AdaptiveWarmup(opt, Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, min_lr=0.01, ema=0.0, consecutive=1,
                           decay="linear", total_steps=10, reduce=None)
    assert _drive(sched, [3.0]) == [pytest.approx(3 / 16)]
    sched.set_peak(0.5)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(3 / 8), pytest.approx(3 / 16)]  # groups keep ratio
    assert _drive(sched, [3.0]) == [pytest.approx(3 / 8)]
    assert sched.lr == 0.5 and sched.min_lr == pytest.approx(0.02) and sched.constants.delta_peak == pytest.approx(1.0)


def test_set_peak_on_the_practical_schedule_keeps_its_start_at_lr_over_div():
    sched = AdaptiveWarmup.practical(_optimizer(0.1), lr=0.1, div=10.0, f_star=0.0, delta_peak=0.5, ema=0.0,
                                     total_steps=100, reduce=None)
    assert _drive(sched, [3.0]) == [pytest.approx(0.01)]
    sched.set_peak(0.3)
    assert _drive(sched, [3.0]) == [pytest.approx(0.03)]
    sched.set_f_star(-1.0)  # Δ0 = 4 now: the constants are re-derived from the moved peak
    assert _drive(sched, [3.0]) == [pytest.approx(0.03)] and sched.constants.delta_peak == pytest.approx(0.5)


def test_a_fit_whose_k_falls_with_the_gap_is_refused_in_one_line():
    """K = 1 − 2Δ + 0.5Δ² falls significantly as Δ grows over the data: a fit the model cannot follow
    (read as "no warm-up", it cost more than it won on the benchmark) and whose constants are not
    physical (K dips below 0): refused, with the reason, forced or not."""
    fit = {"constants": {"rho": 2.0, "K0": 1.0, "K1": -2.0, "K_rho": 0.5}, "f_star": 0.0, "status": "not supported",
           "delta_peak": 1.4, "eta_max": 1.0, "delta_range": [0.5, 3.0], "intervals": {"delta_peak": [1.0, 2.0]},
           "spearman": -0.4, "spearman_p": 1e-4, "data": {"rows_used": 500}}
    with pytest.raises(SmoothprobeError, match="not physical.*refusing"):
        AdaptiveWarmup.from_fit(_optimizer(1.0), fit, lr=0.02, decay="linear", total_steps=10)
    with pytest.warns(RuntimeWarning), pytest.raises(SmoothprobeError, match="not physical"):
        AdaptiveWarmup.from_fit(_optimizer(1.0), fit, lr=0.02, decay="linear", total_steps=10, allow_unsupported=True)
    physical = {**fit, "constants": {"rho": 2.0, "K0": 1.0, "K1": 0.5, "K_rho": 1.0}}  # but K still fell in the data
    with pytest.raises(SmoothprobeError, match="status is 'not supported'.*refusing"):
        AdaptiveWarmup.from_fit(_optimizer(1.0), physical, lr=0.02, decay="linear", total_steps=10)


def test_model_decay_after_a_skipped_warm_up_holds_the_peak_until_the_gap_reaches_delta_peak():
    """K = 1 + 2Δ + Δ²: Δ' = 1, η_max = 0.25, η(5) = 5/36 on the rising side, η(0.5) = 0.5/2.25 on the
    falling one. A warm-up skipped at a gap of 5 ('no warm-up') stays at the peak while the gap is above
    Δ' instead of going back to η's rising side, then follows the falling side."""
    sched = AdaptiveWarmup(_optimizer(1.0), Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, ema=0.0, decay="model",
                           min_lr=0.0, reduce=None)
    assert _drive(sched, [5.0]) == [pytest.approx(5 / 36, rel=1e-12)]
    sched.skip_warmup()
    assert sched.phase == "decay" and sched.optimizer.param_groups[0]["lr"] == 0.25
    assert _drive(sched, [5.0, 2.0, 0.5]) == [0.25, 0.25, pytest.approx(0.5 / 2.25, rel=1e-12)]


@pytest.mark.parametrize("estimated, ends", [(10, 3), (2, 2), (None, 3)])
def test_a_bound_estimated_in_the_run_only_brings_the_callers_max_warmup_forward(estimated, ends):
    """With a constant loss far above Δ' the warm-up ends at the bound: the caller's max_warmup = 3
    holds against a later estimate (10) or none, and an earlier one (2) ends it sooner."""
    sched = AdaptiveWarmup(_optimizer(1.0), Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, ema=0.0,
                           decay="linear", total_steps=20, max_warmup=3, reduce=None)
    sched.bound_warmup(estimated)
    phases = []
    for _ in range(5):
        sched.optimizer.step()
        sched.step(50.0)
        phases.append(sched.phase)
    assert phases.index("decay") + 1 == ends and sched.max_warmup == 3 and sched.warmup_bound == estimated


def test_an_f_star_the_practical_rule_refuses_leaves_the_schedule_as_it_was():
    """First loss 4 with f* = 0 and Δ' = 1: f* = 3.5 leaves a gap of 0.5 below Δ', which the rule
    refuses; the schedule keeps f* = 0 and Δ0 = 4, so f* = 1 is then taken (Δ0 = 3)."""
    sched = AdaptiveWarmup.practical(_optimizer(0.1), lr=0.1, div=10, f_star=0.0, delta_peak=1.0, total_steps=50,
                                     ema=0.0, reduce=None)
    _drive(sched, [4.0])
    before = (sched.f_star, sched.constants, sched.last_record()["delta0"])
    with pytest.raises(SmoothprobeError, match="delta_peak"):
        sched.set_f_star(3.5)
    assert (sched.f_star, sched.constants) == before[:2]
    sched.set_f_star(1.0)
    assert sched.f_star == 1.0 and sched.constants.eta(3.0) == pytest.approx(0.01, rel=1e-9)


def test_a_nan_initial_lr_is_refused():
    with pytest.raises(SmoothprobeError, match="initial_lr"):
        AdaptiveWarmup(_optimizer(1.0), Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, initial_lr=float("nan"),
                       total_steps=10, reduce=None)

"""Baseline schedules hit their defining values and resume exactly from state_dict."""

import math

import pytest
import torch

from smoothprobe.schedule.baseline import WarmupDecay, warmup_steps


def lrs(scheduler: WarmupDecay, optimizer, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def make(lr=2.0, groups=1):
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * (i + 1)} for i in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def test_linear_warmup_then_cosine_hits_defining_values():
    opt = make()
    seq = lrs(WarmupDecay(opt, total_steps=110, warmup_steps=10, decay="cosine", floor=0.1), opt, 110)
    assert seq[0] == pytest.approx(0.2)  # first step is lr / warmup, never 0 and never the peak
    assert seq[9] == pytest.approx(2.0) and seq[10] == pytest.approx(2.0)
    assert seq[60] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # half-way through the decay
    assert seq[-1] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100))))


def test_cosine_warmup_linear_decay_wsd_and_constant():
    opt = make(1.0)
    seq = lrs(WarmupDecay(opt, 20, 4, decay="linear", warmup_shape="cosine", floor=0.0), opt, 20)
    assert seq[1] == pytest.approx(0.5) and seq[3] == pytest.approx(1.0)
    assert seq[12] == pytest.approx(0.5)
    opt = make(1.0)
    seq = lrs(WarmupDecay(opt, 100, 0, decay="wsd", floor=0.0, decay_fraction=0.2), opt, 100)
    assert seq[79] == 1.0 and seq[90] == pytest.approx(0.5)
    opt = make(1.0)
    assert lrs(WarmupDecay(opt, 10, 0, decay="constant"), opt, 10) == [1.0] * 10


def test_groups_keep_their_ratio_and_resume_is_exact():
    opt = make(1.0, groups=2)
    sched = WarmupDecay(opt, 50, 5)
    lrs(sched, opt, 17)
    state = sched.state_dict()
    rest = lrs(sched, opt, 33)
    opt2 = make(1.0, groups=2)
    sched2 = WarmupDecay(opt2, 50, 5)
    sched2.load_state_dict(state)
    for group in opt2.param_groups:
        group["lr"] = group["initial_lr"] * sched2.factor(17)
    assert lrs(sched2, opt2, 33) == rest
    assert opt2.param_groups[1]["lr"] == pytest.approx(2 * opt2.param_groups[0]["lr"])


def test_warmup_fraction_or_steps():
    assert warmup_steps(0.1, 200) == 20
    assert warmup_steps(30, 200) == 30
    assert warmup_steps(0, 200) == 0
    assert warmup_steps(500, 200) == 200

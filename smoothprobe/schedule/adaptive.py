"""The loss-driven scheduler: the LR follows η(Δ) = Δ / (K0 + K1·Δ + Kρ·Δ^ρ) of the current gap.

The model's math (K, η, Δ', η_max, the practical constants and the Δ' search) lives in
`smoothprobe.smoothness`; this module only schedules.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from smoothprobe.distributed import all_reduce_mean
from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit.result import SmoothnessFit
from smoothprobe.schedule.baseline import decay_shape
from smoothprobe.schedule.decision import decide
from smoothprobe.smoothness import SIGMA_F, Constants, PracticalRule

DECAYS = ("cosine", "linear", "model")


def _check_range(span: tuple[float, float] | None) -> list[float] | None:
    """A measured gap range [lo, hi] with 0 < lo <= hi (a list: plain types in state_dict)."""
    if span is None:
        return None
    lo, hi = (float(v) for v in span)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise SmoothprobeError(f"delta_range must be finite with 0 < low <= high. Got {span}.")
    return [lo, hi]


class AdaptiveWarmup(LRScheduler):
    """Loss-driven warm-up then decay: LR = η(Δ̂) with Δ̂ the smoothed loss minus f*.

    Riabinin et al., "Where Does Warm-Up Come From? Adaptive Scheduling for Norm-Constrained
    Optimizers" (arXiv 2602.05813). Call `step(loss)` after each `optimizer.step()` with that
    step's training loss; it sets the LR of the next step. η is clipped to [min_lr, lr].

    Groups: group 0 runs at the scheduled LR (so `lr` is the first group's peak); group i runs at
    that LR × base_lr_i / base_lr_0, keeping the ratio of the optimizer's LRs (e.g. Muon + AdamW).
    The loss is all-reduced by `reduce` (default `all_reduce_mean`), smoothed by a bias-corrected
    EMA (`ema` = β; 0 means raw). Non-finite losses keep the LR and are counted; Δ̂ <= 0 counts
    as "at or below f*" (LR min_lr under decay='model'). The warm-up follows η's rising side only: a
    gap at or below Δ' puts the LR at the peak `lr` = η(Δ'), and after Δ̂ <= Δ' for `consecutive`
    steps the decay starts from there for good (an f* update can move Δ̂ far past Δ' at once, which
    would otherwise drop the LR to η's falling side for those steps, then start the decay from it;
    under 'model' the LR follows η's falling side once the crossing is confirmed):
    'cosine' or 'linear' to min_lr at `total_steps`, or 'model' (keep following η, at the peak while
    Δ̂ is still above Δ', as after a warm-up ended by a bound or a decision). `max_warmup` (steps)
    bounds the warm-up for short budgets: from the first loss on, the LR is never below a linear ramp
    reaching `lr` at step `max_warmup`, and the decay starts there even without a crossing; a bound
    estimated during the run (`bound_warmup`, `adopt`) can only bring that step forward. `cooldown` (steps)
    keeps the budget's last steps for the decay: a warm-up that has not crossed Δ' by then (f* or
    Δ' out of reach) decays from the LR in use, so a run always anneals (docs/design.md §5). Before
    the first loss the LR is `initial_lr` (default lr/div for `practical`, η at the largest fitted
    gap for `from_fit`, else min_lr). `delta_range` (the gaps a fit measured) bounds the Δ at which
    η is evaluated: the model is never extrapolated. A closed loop hands the schedule to a fit with
    `adopt`, or skips the rest of the warm-up with `skip_warmup` (docs/design.md §5).

    With K(Δ) = 1 + 2Δ + Δ² the peak is η_max = 1/(K1 + 2√(K0·K2)) = 0.25 at Δ' = 1; a loss
    3 above f* = 0 gives η(3) = 3/16, and the crossing of Δ' starts the decay:

    >>> import torch
    >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    >>> sched = AdaptiveWarmup(opt, Constants(1.0, 2.0, 1.0, 2.0), f_star=0.0, ema=0.0,
    ...                        consecutive=1, decay="linear", total_steps=10, reduce=None)
    >>> sched.step(3.0); opt.param_groups[0]["lr"], sched.phase
    (0.1875, 'warmup')
    >>> sched.step(0.5); sched.phase
    'decay'
    """

    def __init__(
        self,
        optimizer: Optimizer,
        constants: Constants | PracticalRule,
        f_star: float,
        *,
        lr: float | None = None,
        min_lr: float | None = None,
        initial_lr: float | None = None,
        ema: float = 0.9,
        consecutive: int = 5,
        decay: str = "cosine",
        total_steps: int | None = None,
        max_warmup: int | None = None,
        cooldown: int | None = None,
        delta_range: tuple[float, float] | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = all_reduce_mean,
    ) -> None:
        if isinstance(constants, PracticalRule):
            self._rule: dict[str, Any] | None = dataclasses.asdict(constants)
            self._set(None)
            peak = constants.lr if lr is None else lr
            start = constants.lr / constants.div if initial_lr is None else initial_lr
        else:
            self._rule = None
            self._set(constants.checked())
            peak = constants.eta_max if lr is None else lr
            start = initial_lr
        floor = peak * 1e-4 if min_lr is None else min_lr
        if start is not None and not (math.isfinite(start) and start >= 0):
            raise SmoothprobeError(f"initial_lr must be a finite number >= 0. Got {start}.")
        if not (math.isfinite(peak) and peak > 0 and 0 <= floor <= peak):
            raise SmoothprobeError(
                f"need 0 <= min_lr <= lr and lr > 0. Got lr={peak}, min_lr={floor}."
            )
        if not math.isfinite(f_star):
            raise SmoothprobeError(f"f_star must be finite. Got {f_star}.")
        if not 0 <= ema < 1:
            raise SmoothprobeError(f"ema must lie in [0, 1). Got {ema}.")
        if consecutive < 1:
            raise SmoothprobeError(f"consecutive must be >= 1. Got {consecutive}.")
        if decay not in DECAYS:
            raise SmoothprobeError(f"decay must be one of {DECAYS}. Got {decay!r}.")
        if decay != "model" and (total_steps is None or total_steps < 1):
            raise SmoothprobeError(f"decay={decay!r} needs total_steps >= 1. Got {total_steps}.")
        if cooldown and decay != "model" and (total_steps is None or not 0 < cooldown < total_steps):
            raise SmoothprobeError(
                f"cooldown must lie in [0, total_steps). Got cooldown={cooldown}, total_steps={total_steps}."
            )
        bases = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        if not bases[0] > 0:
            raise SmoothprobeError(
                f"optimizer: the first param group's lr must be > 0. Got {bases[0]}."
            )
        self.f_star, self.lr, self.min_lr = float(f_star), float(peak), float(floor)
        self.ema, self.consecutive, self.decay = float(ema), int(consecutive), decay
        self.total_steps = total_steps
        self.max_warmup = max_warmup  # the caller's bound; `warmup_bound` is one estimated during the run
        self.warmup_bound: int | None = None
        self.cooldown = cooldown if cooldown and decay != "model" else None  # 'model' has no decay phase to start
        self.delta_range = _check_range(delta_range)
        self.decision: dict[str, Any] | None = None
        self._reduce = reduce
        self._ratios = [b / bases[0] for b in bases]
        self._lr_now = self._clip(self.min_lr if start is None else float(start))
        self._ema_sum, self._ema_n = 0.0, 0
        self._phase, self._below = "warmup", 0
        self._switch_step: int | None = None
        self._switch_lr: float | None = None
        self._delta0: float | None = None
        self._nan_count, self._nonpos_count = 0, 0
        self._record: dict[str, Any] = {}
        self._loss: float | None = None
        self._smoothed: float | None = None
        self._write(None)
        super().__init__(optimizer)

    @classmethod
    def from_fit(
        cls,
        optimizer: Optimizer,
        fit: SmoothnessFit | str | os.PathLike | Mapping[str, Any],
        lr: float | None = None,
        min_lr_ratio: float | None = None,
        allow_unsupported: bool = False,
        **kwargs: Any,
    ) -> AdaptiveWarmup:
        """Schedule from a fit (a SmoothnessFit, a fit.json path or its dict); with `lr`, all K
        are divided by lr/η_max.

        Without `lr` the LR is exactly η(Δ) of the fitted constants. `f_star` and `initial_lr`
        may be overridden; the first step runs at η at the largest fitted gap (`delta_range`).
        `min_lr_ratio` sets the floor relative to the peak (which `min_lr` would need in advance).
        The fit decides at its largest measured gap (`decision.decide`): a Δ' interval above every
        measured gap means no warm-up (the schedule starts at the peak and decays), one inside the
        measured range drives the warm-up; anything else (a verdict that is not "supported" and not
        the narrow-gap exception of `decision`, a degenerate f*, a Δ' below the data) is refused in one line unless `allow_unsupported`,
        which warns instead. η is evaluated inside the measured gaps only, and `lr` rescales the
        constants so that the largest η there is `lr`. `decision` keeps what was decided.
        """
        data = SmoothnessFit.schedule_content(fit)
        decision = decide(data, None)
        if not decision.decided:
            if not allow_unsupported:
                raise SmoothprobeError(f"fit: {decision.reason}; refusing to drive the schedule with it "
                                       "(allow_unsupported uses it anyway)", params=["fit", "allow_unsupported"])
            warnings.warn(f"fit: {decision.reason}; using it anyway (allow_unsupported)", RuntimeWarning,
                          stacklevel=2)
        raw = data["constants"]
        constants = Constants(raw["K0"], raw["K1"], raw["K_rho"], raw["rho"])
        f_star = kwargs.pop("f_star", None)
        f_star = data.get("f_star") if f_star is None else f_star
        if f_star is None:
            raise SmoothprobeError("fit: fit.json has no 'f_star'; pass f_star=...", params=["fit", "f_star"])
        constants = constants.checked()
        if data.get("eta_max") is not None and not math.isclose(data["eta_max"], constants.eta_max, rel_tol=1e-3):
            warnings.warn(f"fit.json eta_max={data['eta_max']} differs from its constants' "
                          f"{constants.eta_max}; using the constants.", stacklevel=2)
        span = decision.delta_range
        peak = constants.peak_within(span)[1] if lr is None else lr
        constants = constants.rescaled(peak, span)
        if kwargs.get("initial_lr") is None and span:
            kwargs["initial_lr"] = min(float(constants.eta(span[1])), peak)
        if min_lr_ratio is not None:
            kwargs["min_lr"] = peak * min_lr_ratio
        sched = cls(optimizer, constants, f_star, lr=peak, delta_range=span, **kwargs)
        if decision.branch == "no-warmup":
            sched.skip_warmup()
        sched.decision = decision.to_dict()
        return sched

    @classmethod
    def practical(
        cls,
        optimizer: Optimizer,
        lr: float,
        div: float,
        f_star: float,
        delta_peak: float | None = None,
        delta0: float | None = None,
        *,
        kappa: float | None = None,
        sigma_f: float = SIGMA_F,
        **kwargs: Any,
    ) -> AdaptiveWarmup:
        """The paper's schedule: η(Δ0) = lr/div, peak lr at Δ' (given, or chosen from κ).

        Without `delta0`, Δ0 is the first observed loss − f*, and the constants are finalised at
        the first `step(loss)`; the first optimizer step runs at lr/div either way.
        """
        rule = PracticalRule(lr, div, delta_peak, kappa, sigma_f)
        kwargs.setdefault("initial_lr", lr / div)
        if delta0 is None:
            return cls(optimizer, rule, f_star, lr=lr, **kwargs)
        sched = cls(optimizer, rule.constants(delta0), f_star, lr=lr, **kwargs)
        sched._delta0 = float(delta0)
        sched._record["delta0"] = sched._delta0
        return sched

    def set_constants(self, constants: Constants) -> None:
        """Swap the constants (e.g. an online refit); used from the next `step(loss)`."""
        self._set(constants.checked())
        self._rule = None

    def set_f_star(self, f_star: float) -> None:
        """Move f* (e.g. an online estimate); a practical schedule re-derives its constants from the
        same first loss, so η(Δ0) = lr/div still holds for the new Δ0."""
        if not math.isfinite(f_star):
            raise SmoothprobeError(f"f_star must be finite. Got {f_star}.")
        if self._rule is not None and self._delta0 is not None:
            first_loss = self._delta0 + self.f_star
            if not first_loss - f_star > 0:
                raise SmoothprobeError(f"f_star={f_star} is not below the first loss {first_loss}.")
            constants = PracticalRule(**self._rule).constants(first_loss - f_star)  # may refuse: change nothing then
            self._delta0 = first_loss - f_star
            self._set(constants)
        self.f_star = float(f_star)

    def adopt(self, fit: SmoothnessFit, *, bound: int | None = None) -> None:
        """Hand the schedule to a fit (a closed loop's "fit-driven" decision): its K rescaled so that
        the largest η over its measured gaps is the schedule's peak `lr`, its f* and its measured
        gaps; the warm-up bounded at step `bound` (`bound_warmup`). The optimizer's LR is set at once
        from the current smoothed gap."""
        self.set_constants(fit.constants.rescaled(self.lr, fit.delta_range))
        self.f_star = float(fit.f_star)
        self.delta_range = _check_range(fit.delta_range)
        self.warmup_bound = bound
        if self._smoothed is not None and self._phase == "warmup":
            self._lr_now = self._next_lr(self._smoothed - self.f_star, self.last_epoch)
            self._apply_lr()

    def skip_warmup(self, f_star: float | None = None) -> None:
        """End the warm-up now (a "no-warmup" decision): the next step runs at the peak `lr` and the
        decay runs from there to `total_steps`, measuring gaps from `f_star` (default: kept; the
        constants stay as they are)."""
        if f_star is not None:
            if not math.isfinite(f_star):
                raise SmoothprobeError(f"f_star must be finite. Got {f_star}.")
            self.f_star = float(f_star)
        step = max(self.last_epoch, 0)
        self._phase, self._switch_step, self._switch_lr = "decay", step, self.lr
        self._lr_now = self._next_lr(0.0, step) if self.decay != "model" else self.lr
        self._apply_lr()

    def set_peak(self, lr: float) -> None:
        """Move the peak LR to `lr` keeping the schedule's shape: η(Δ), the floor and the LR in use
        all scale by lr/peak, Δ' stays (a closed loop that measures its own peak, `Pilot(own_peak=True)`).
        The optimizer's LR is set at once."""
        factor = lr / self.lr
        self._set_peak(lr)
        if self._rule is not None:
            self._rule["lr"] *= factor
        if self._K0 is not None:  # η = Δ/K: every K divided by the factor
            self._set(Constants(self._K0 / factor, self._K1 / factor, self._K_rho / factor, self._rho))
        if self._switch_lr is not None:
            self._switch_lr *= factor
        self._lr_now = self._clip(self._lr_now * factor)
        self._apply_lr()

    def bound_warmup(self, step: int | None) -> None:
        """End the warm-up at `step` at the latest (None: no bound), e.g. where a loss curve fitted
        so far is predicted to reach f* + Δ'; it replaces the last such bound, and the caller's
        `max_warmup` still holds."""
        self.warmup_bound = step

    @property
    def delta_peak(self) -> float | None:
        """Δ' of the constants in use (None until a practical schedule has seen its first loss)."""
        return self._delta_peak

    def _bound(self) -> int | None:
        """The step the warm-up ends at the latest: the earlier of `max_warmup` and `warmup_bound`."""
        bounds = [b for b in (self.max_warmup, self.warmup_bound) if b is not None]
        return min(bounds) if bounds else None

    @property
    def phase(self) -> str:
        """'warmup' until the robust crossing of Δ', then 'decay' for good."""
        return self._phase

    @property
    def constants(self) -> Constants | None:
        """Constants in use (None until a practical schedule has seen its first loss)."""
        return None if self._K0 is None else Constants(self._K0, self._K1, self._K_rho, self._rho)

    def last_record(self) -> dict[str, Any]:
        """Per-step record: step, loss, loss_smoothed, delta, lr, phase, constants, counters."""
        return dict(self._record)

    def step_columns(self) -> dict[str, Any]:
        """The record minus step, loss and lr, which a training loop's own row already holds (its
        lr is the one the step used, not the next one set here)."""
        return {k: v for k, v in self._record.items() if k not in ("step", "loss", "lr")}

    def step(self, loss: float | torch.Tensor | None = None) -> None:  # type: ignore[override]
        """Feed the loss of the optimizer step just taken; sets the LR of the next step."""
        if loss is None and self.last_epoch >= 0:
            raise TypeError("AdaptiveWarmup.step needs the step's loss: step(loss).")
        if loss is not None:
            self._observe(self._scalar(loss), self.last_epoch + 1)
        super().step()
        self._record.update(step=self.last_epoch, lr=self._lr_now, phase=self._phase)

    def get_lr(self) -> list[float]:
        """Group LRs: the scheduled LR times each group's ratio to group 0."""
        return [self._lr_now * r for r in self._ratios]

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer and the reduce hook; plain types (torch.load-safe)."""
        return {k: v for k, v in super().state_dict().items() if k != "_reduce"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state and put the saved LRs back on the optimizer's groups."""
        # checkpoints written before the cooldown, the measured range and the estimated bound had none of them
        super().load_state_dict({"cooldown": None, "delta_range": None, "decision": None, "warmup_bound": None,
                                 **state_dict})
        self._apply_lr()

    def _set_peak(self, lr: float) -> None:
        """Move the peak LR to `lr`, the floor keeping its ratio to the peak."""
        if not (math.isfinite(lr) and lr > 0):
            raise SmoothprobeError(f"lr must be a finite number > 0. Got {lr}.")
        self.min_lr, self.lr = self.min_lr * lr / self.lr, float(lr)

    def _apply_lr(self) -> None:
        """Put the scheduled LR on the optimizer's groups now (after a restore or a decision)."""
        for group, value in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)
            else:
                group["lr"] = value
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _set(self, constants: Constants | None) -> None:
        self._K0, self._K1, self._K_rho, self._rho = (
            (None,) * 4 if constants is None else dataclasses.astuple(constants)
        )
        self._delta_peak = (
            None if constants is None else constants.delta_peak
        )

    def _scalar(self, loss: float | torch.Tensor) -> float:
        if not isinstance(loss, torch.Tensor):
            loss = torch.tensor(float(loss), dtype=torch.float64)
        value = loss.detach()
        if value.numel() != 1:
            raise SmoothprobeError(
                f"step(loss): loss must be a scalar. Got shape {tuple(value.shape)}."
            )
        value = value.reshape(()).to(torch.float64)
        return float(value if self._reduce is None else self._reduce(value))

    def _clip(self, value: float) -> float:
        return min(max(value, self.min_lr), self.lr)

    def _model_lr(self, delta: float) -> float:
        if delta <= 0:
            return self.min_lr
        if self.delta_range is not None:  # never extrapolate the model beyond the measured gaps
            delta = min(max(delta, self.delta_range[0]), self.delta_range[1])
        return self._clip(float(self.constants.eta(delta)))

    def _observe(self, loss: float, step: int) -> None:
        self._loss = loss
        if not math.isfinite(loss):
            self._nan_count += 1
            if self._nan_count == 1:  # later ones are counted in the record's nan_count
                warnings.warn(
                    f"AdaptiveWarmup: non-finite loss {loss} at step {step}; keeping lr {self._lr_now} "
                    "(further ones are counted in nan_count).",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self._write(None)
            return
        if self._rule is not None and self._K0 is None:
            delta0 = loss - self.f_star
            if not delta0 > 0:
                raise SmoothprobeError(
                    f"f_star={self.f_star} is not below the first loss {loss}; Δ0 must be > 0."
                )
            self._delta0 = delta0
            self._set(PracticalRule(**self._rule).constants(delta0))
        self._ema_n += 1
        self._ema_sum = self.ema * self._ema_sum + (1.0 - self.ema) * loss
        self._smoothed = self._ema_sum / (1.0 - self.ema**self._ema_n)
        delta = self._smoothed - self.f_star
        if delta <= 0:
            self._nonpos_count += 1
            if self._nonpos_count == 1:  # later ones are counted in the record's nonpos_count
                warnings.warn(
                    f"AdaptiveWarmup: smoothed loss {self._smoothed} is at or below "
                    f"f_star={self.f_star} at step {step} (further steps are counted in nonpos_count).",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if self._phase == "warmup":
            self._below = self._below + 1 if delta <= self._delta_peak else 0
            bound = self._bound()
            out_of_budget = bound is not None and step >= bound
            late = self.cooldown is not None and step >= self.total_steps - self.cooldown
            if self._below >= self.consecutive or out_of_budget:
                self._phase, self._switch_step, self._switch_lr = "decay", step, self.lr
            elif late:
                self._phase, self._switch_step, self._switch_lr = "decay", step, self._lr_now
        self._lr_now = self._next_lr(delta, step)
        self._write(delta)

    def _next_lr(self, delta: float, step: int) -> float:
        if self._phase == "warmup":
            # the warm-up is η's rising side: a gap at or below Δ' is the crossing, at the peak η(Δ') = lr,
            # not a point on its falling side (checked constants have a finite Δ' > 0)
            delta, bound = max(delta, self._delta_peak), self._bound()
            if bound:
                return max(self._model_lr(delta), self._clip(self.lr * min(1.0, (step + 1) / bound)))
            return self._model_lr(delta)
        if self.decay == "model":  # η's falling side only: a decay that began above Δ' (a bound, a decision) holds the peak
            return self._model_lr(min(delta, self._delta_peak))
        span = self.total_steps - self._switch_step
        progress = 1.0 if span <= 0 else min(1.0, (step - self._switch_step) / span)
        return self.min_lr + (self._switch_lr - self.min_lr) * decay_shape(self.decay, progress)

    def _write(self, delta: float | None) -> None:
        self._record = {
            "loss": self._loss,
            "loss_smoothed": self._smoothed,
            "delta": delta,
            "K0": self._K0,
            "K1": self._K1,
            "K_rho": self._K_rho,
            "rho": self._rho,
            "delta_peak": self._delta_peak,
            "delta0": self._delta0,
            "f_star": self.f_star,
            "nan_count": self._nan_count,
            "nonpos_count": self._nonpos_count,
        }

"""fit.json validation: wrong types, non-finite and overflowing values are one line naming the field,
both for `SmoothnessFit.from_json` (report) and for the schedule (`train --fit`, `from_fit`)."""

import json
import math

import pytest
import torch

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit.result import SmoothnessFit
from smoothprobe.schedule.adaptive import AdaptiveWarmup

SCHEDULE_FIT = {"constants": {"rho": 2.0, "K0": 2e-3, "K1": 0.7, "K_rho": 40.0}, "f_star": 1.25,
                "delta_peak": math.sqrt(2e-3 / 40.0), "eta_max": 1 / (0.7 + 2 * math.sqrt(2e-3 * 40.0)),
                "delta_range": [0.01, 3.0]}

BAD = [
    (lambda d: [d], "must hold a JSON object; got list"),
    (lambda d: {**d, "constants": None}, "field 'constants' must be an object"),
    (lambda d: {**d, "constants": {**d["constants"], "K0": None}}, "field 'constants.K0' must be a finite number"),
    (lambda d: {**d, "constants": {**d["constants"], "K1": "abc"}}, "field 'constants.K1' must be a finite number"),
    (lambda d: {**d, "constants": {**d["constants"], "rho": 1e300}}, "field 'constants.rho' must be a finite number"),
    (lambda d: {**d, "constants": {**d["constants"], "K_rho": 1e300}}, "field 'constants.K_rho'"),
    (lambda d: {**d, "constants": {k: v for k, v in d["constants"].items() if k != "rho"}}, "'constants.rho'"),
    (lambda d: {**d, "f_star": -1e300}, "field 'f_star' must be a finite number"),
    (lambda d: {**d, "f_star": "1.0"}, "field 'f_star' must be a finite number"),
    (lambda d: {**d, "eta_max": "big"}, "field 'eta_max' must be a finite number"),
    (lambda d: {**d, "delta_range": "0.01,3"}, "field 'delta_range' must be a list"),
    (lambda d: {**d, "delta_range": [0.01, None]}, "field 'delta_range[1]'"),
]


def optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.5)


@pytest.mark.parametrize("corrupt, message", BAD)
def test_schedule_refuses_bad_fit_files_in_one_line(tmp_path, corrupt, message):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(corrupt(SCHEDULE_FIT)))
    with pytest.raises(SmoothprobeError, match=f"{path}: field|{path} must") as info:
        AdaptiveWarmup.from_fit(optimizer(), str(path), total_steps=10)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_schedule_refuses_an_unknown_schema_version_and_takes_constants_without_one(tmp_path):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({**SCHEDULE_FIT, "schema_version": 99}))
    with pytest.raises(SmoothprobeError, match=f"{path}: field 'schema_version' must be 2 \\(or absent"):
        AdaptiveWarmup.from_fit(optimizer(), str(path), total_steps=10)
    AdaptiveWarmup.from_fit(optimizer(), {**SCHEDULE_FIT, "schema_version": 1}, total_steps=10)  # upgraded


def test_good_schedule_fit_still_loads():
    AdaptiveWarmup.from_fit(optimizer(), SCHEDULE_FIT, total_steps=10)


@pytest.fixture(scope="module")
def full_fit():
    import pandas as pd

    from smoothprobe.fit import fit_frame

    delta = [3.0 * 0.97**t for t in range(60)]
    rows = [{"step": t, "loss": 1.0 + d, "secant_K": 2.0 + 0.5 * d + 3.0 * d * d} for t, d in enumerate(delta)]
    return fit_frame(pd.DataFrame(rows), f_star=1.0, bootstrap=0).to_dict()


@pytest.mark.parametrize("corrupt, message", BAD + [
    (lambda d: {**d, "verdict": None}, "field 'verdict' must be a string"),
    (lambda d: {**d, "status_cause": "vibes"}, "field 'status_cause' must be one of degenerate f*, few rows"),
    (lambda d: {**d, "status_reason": 3}, "field 'status_reason' must be a string"),
    (lambda d: {**d, "intervals": {"K0": "x"}}, "field 'intervals.K0' must be a list"),
    (lambda d: {**d, "quantile": 7}, "field 'quantile' must be a finite number in [0, 1]"),
])
def test_from_json_refuses_bad_fit_files_in_one_line(tmp_path, full_fit, corrupt, message):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(corrupt(full_fit)))
    with pytest.raises(SmoothprobeError, match="fit.json") as info:
        SmoothnessFit.from_json(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    path.write_text(json.dumps(full_fit))
    assert SmoothnessFit.from_json(path).rho == full_fit["constants"]["rho"]


def test_schedule_reads_a_fit_its_dict_and_its_file_alike(tmp_path, full_fit):
    """SmoothnessFit reads fit.json for the schedule: the object, its dict and its file give one schedule,
    whose first step runs at η of the largest gap, 3 / K(3) with K(Δ) = 2 + 0.5·Δ + 3·Δ²."""
    fit = SmoothnessFit.from_dict(full_fit)
    fit.to_json(tmp_path / "fit.json")
    runs = []
    for source in (fit, full_fit, str(tmp_path / "fit.json")):
        sched = AdaptiveWarmup.from_fit(optimizer(), source, total_steps=10, decay="model", ema=0.0)
        lrs = [sched.optimizer.param_groups[0]["lr"]]
        for loss in (3.5, 2.5, 1.9):
            sched.optimizer.step()
            sched.step(loss)
            lrs.append(sched.optimizer.param_groups[0]["lr"])
        runs.append(lrs)
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][0] == pytest.approx(3.0 / (2.0 + 0.5 * 3.0 + 3.0 * 9.0), rel=1e-6)
    assert runs[0][3] == pytest.approx(0.9 / (2.0 + 0.5 * 0.9 + 3.0 * 0.81), rel=1e-6)

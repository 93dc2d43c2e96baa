"""`smoothprobe demo`: the whole pipeline on built-in data, checked end to end."""

import json

import pytest
from click.testing import CliRunner
from smoothprobe.cli.main import main

from smoothprobe import load_run
from smoothprobe.demo import MIN_STEPS, demo
from smoothprobe.errors import SmoothprobeError
from smoothprobe.schedule.decision import decide


@pytest.mark.slow
def test_demo_records_fits_trains_adaptively_and_reports(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--steps", "60"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(str(tmp_path / "report.html"))
    baseline, adaptive = load_run(tmp_path / "baseline"), load_run(tmp_path / "adaptive")
    assert len(baseline.steps) == len(adaptive.steps) == 60
    assert baseline.config["seed"] == adaptive.config["seed"]
    fit = json.loads((tmp_path / "baseline" / "fit.json").read_text())
    decision = decide(fit, None)
    # the schedule the fit decides: no warm-up starts at lr, a warm-up (the fit's or the practical
    # rule's) below it; the practical rule's starts at lr/div with the task's exact f*
    assert decision.branch in result.output
    lr = baseline.config["lr"]
    if decision.branch == "no-warmup":
        assert adaptive.steps.lr.iloc[0] == pytest.approx(lr)
    elif decision.branch == "not yet":
        assert adaptive.steps.lr.iloc[0] == pytest.approx(lr / 10)
        assert adaptive.steps.f_star.iloc[-1] == pytest.approx(baseline.f_star)
    else:
        assert adaptive.steps.lr.iloc[0] < lr
    assert fit["f_star"] == pytest.approx(baseline.f_star)
    html = (tmp_path / "report.html").read_text()
    for section in ("k-vs-delta", "model-comparison", "schedule"):
        assert f'id="{section}"' in html
    assert fit["verdict"].split(";")[0] in html


def test_the_python_demo_refuses_too_few_steps_before_it_trains(tmp_path):
    """demo(out, steps=50) trained 50 steps and then failed at the fit; now it refuses at once."""
    with pytest.raises(SmoothprobeError, match=f"steps must be at least {MIN_STEPS}"):
        demo(tmp_path / "d", steps=MIN_STEPS - 1, progress=False)
    assert not (tmp_path / "d").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    with pytest.raises(SmoothprobeError, match="is a run directory"):  # it wrote baseline/ and adaptive/ into it
        demo(tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["run.json"]

"""Typed configs: parsed once, validated with messages naming the parameter, round-trip through run.json,
and the two refit intervals are distinct and reachable from the CLI."""

import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from smoothprobe.cli.main import main

from smoothprobe import SmoothprobeError, TrainConfig
from smoothprobe.config import AdaptiveConfig, ProbeConfig
from smoothprobe.train import build


def test_mappings_become_dataclasses_and_round_trip():
    cfg = TrainConfig(probes={"preset": "full", "every": 3}, adaptive={"f_star": "2.5", "refit_every": 4})
    assert isinstance(cfg.probes, ProbeConfig) and isinstance(cfg.adaptive, AdaptiveConfig)
    assert cfg.adaptive.f_star == 2.5
    assert TrainConfig.from_dict(dataclasses.asdict(cfg)) == cfg


@pytest.mark.parametrize("options, message", [
    ({"adaptive": {"div": float("inf")}}, "div must be a finite number > 1"),
    ({"adaptive": {"f_star": float("nan")}}, "f_star must be a finite number"),
    ({"adaptive": {"f_star": "abc"}}, "f_star must be a number or 'auto'"),
    ({"adaptive": {"refit_constants": 3}}, "unknown option(s) refit_constants"),
    ({"adaptive": {"f_star_every": 5}}, "f_star_every needs f_star 'auto'"),
    ({"adaptive": {"own_peak": True}}, "own_peak needs a pilot"),
    ({"adaptive": {"step_test": True}}, "step_test needs a pilot"),
    ({"adaptive": {"pilot": 0.1, "own_peak": True, "step_test": True}}, "step_test tests a step at the lr"),
    ({"adaptive": {"window_test": True}}, "window_test (on or off) needs a pilot"),
    ({"adaptive": {"window_test": False}}, "window_test (on or off) needs a pilot"),
    ({"adaptive": {"pilot": 0.1, "own_peak": True, "window_test": False}}, "own_peak turns the window test off"),
    ({"adaptive": {"pilot": 0.1, "own_peak": True, "window_test": True}}, "window_test holds the lr to the best step"),
    ({"adaptive": {"progress_test": True}}, "progress_test needs a pilot"),
    ({"adaptive": {"pilot": 0.1, "own_peak": True, "progress_test": True}}, "progress_test needs the peak lr before the first step"),
    ({"probes": {"every": 0}}, "every must be an integer >= 1"),
    ({"probes": {"probes": ["magic"]}}, "unknown probe 'magic'"),
])
def test_bad_options_name_the_parameter(options, message):
    with pytest.raises(SmoothprobeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**options)


def test_pilot_must_fit_the_run():
    with pytest.raises(SmoothprobeError, match="pilot must be at least"):
        TrainConfig(steps=100, adaptive={"pilot": 0.1}).validate()


def test_cli_flags_reach_the_two_refit_intervals(tmp_path, monkeypatch):
    seen = {}

    def fake_train(config, out, **_):
        seen["config"] = config
        return out

    monkeypatch.setattr(importlib.import_module("smoothprobe.train"), "train", fake_train)
    result = CliRunner().invoke(main, ["record", "--task", "quadratic", "--adaptive", "--f-star", "auto",
                                       "--f-star-every", "7", "--refit-every", "5", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    cfg = seen["config"]
    assert (cfg.adaptive.f_star_every, cfg.adaptive.refit_every) == (7, 5)
    trainer = build(cfg, tmp_path / "r")
    assert trainer.online.every == 7 and trainer.refit.every == 5


def test_errors_name_their_parameters_and_the_cli_shows_them_as_flags(tmp_path):
    exc = SmoothprobeError("run directory x exists; pass resume (to continue it) or overwrite (to replace it)",
                           params=["resume", "overwrite"])
    assert exc.worded(lambda name: "--" + name) == \
        "run directory x exists; pass --resume (to continue it) or --overwrite (to replace it)"
    with pytest.raises(SmoothprobeError) as raised:
        TrainConfig(adaptive={"f_star_every": 5})
    assert raised.value.params == ("f_star_every", "f_star")
    runner = CliRunner()
    every = runner.invoke(main, ["train", "--adaptive", "--f-star-every", "5", "--out", str(tmp_path / "r")])
    assert every.exit_code == 2 and "Error: --f-star-every needs --f-star 'auto'" in every.output
    unsupported = runner.invoke(main, ["train", "--adaptive", "--allow-unsupported-fit", "--out", str(tmp_path / "r")])
    assert unsupported.exit_code == 2, unsupported.output
    assert "Error: --allow-unsupported-fit needs a --fit or a --pilot: it lets their fit drive" in unsupported.output


def test_adaptive_flags_without_an_adaptive_schedule_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["train", "--task", "quadratic", "--div", "5", "--own-peak",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--div, --own-peak: only for an adaptive schedule" in result.output
    assert not (tmp_path / "r").exists()


def test_cooldown_flag_reaches_the_scheduler_and_is_checked(tmp_path):
    runner = CliRunner()
    refused = runner.invoke(main, ["train", "--task", "quadratic", "--cooldown", "0.3", "--out", str(tmp_path / "r")])
    assert refused.exit_code == 2 and "--cooldown: only for an adaptive schedule" in refused.output
    bad = runner.invoke(main, ["train", "--task", "quadratic", "--adaptive", "--cooldown", "1", "--out",
                               str(tmp_path / "r")])
    assert bad.exit_code == 2 and "--cooldown" in bad.output and not (tmp_path / "r").exists()
    ok = runner.invoke(main, ["train", "--task", "quadratic", "--optimizer", "normsgd", "--steps", "20",
                              "--adaptive", "--cooldown", "0.25", "--no-progress", "--out", str(tmp_path / "r")])
    assert ok.exit_code == 0, ok.output
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["config"]["adaptive"]["cooldown"] == 0.25
    trainer = build(TrainConfig.from_dict(info["config"]), tmp_path / "s")
    assert trainer.scheduler.cooldown == 5  # of 20 steps
    trainer.writer.store.close()
    off = runner.invoke(main, ["train", "--task", "quadratic", "--optimizer", "normsgd", "--steps", "20",
                               "--adaptive", "--cooldown", "0", "--no-progress", "--out", str(tmp_path / "o")])
    assert off.exit_code == 0 and json.loads((tmp_path / "o" / "run.json").read_text())["config"]["adaptive"][
        "cooldown"] is None
    with pytest.raises(SmoothprobeError, match="cooldown must be a fraction"):
        TrainConfig(adaptive={"cooldown": 1.5})


def test_a_div_below_the_floor_is_refused_and_acts_once_the_floor_allows_it(tmp_path):
    # --div 100 with the default floor lr·0.1 used to run the whole warm-up at lr/10, silently
    with pytest.raises(SmoothprobeError, match=r"div: the first step would run at lr/div = lr/100"):
        TrainConfig(task="markov", optimizer="lion", lr=2e-3, steps=20, adaptive={"div": 100.0}).validate()
    from smoothprobe import load_run, train

    cfg = TrainConfig(task="markov", optimizer="lion", lr=2e-3, steps=3, min_lr_ratio=0.01, adaptive={"div": 100.0})
    run = load_run(train(cfg, tmp_path / "run", progress=False))
    assert run.steps.lr.iloc[0] == pytest.approx(2e-5)


def test_practical_shape_options_with_a_fit_are_refused(tmp_path):
    fit = tmp_path / "fit.json"
    fit.write_text("{}")
    for extra in ({"div": 5.0}, {"delta_peak": 0.5}):
        with pytest.raises(SmoothprobeError, match="a fit brings its own constants"):
            TrainConfig(adaptive={"fit": str(fit), **extra})


def test_adaptive_options_that_would_do_nothing_are_refused():
    with pytest.raises(SmoothprobeError, match="cooldown needs a decay phase to start"):
        TrainConfig(adaptive={"decay": "model", "cooldown": 0.3})
    assert TrainConfig(adaptive={"decay": "model"}).adaptive.cooldown is None  # the default does not apply
    with pytest.raises(SmoothprobeError, match="allow_unsupported needs a fit or a pilot"):
        TrainConfig(adaptive={"allow_unsupported": True})


def test_the_window_test_is_on_with_a_pilot_by_default_and_its_two_flags_turn_it_on_or_off(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(importlib.import_module("smoothprobe.train"), "train",
                        lambda config, out, **_: seen.append(config.adaptive) or out)
    runner = CliRunner()
    for flags, value, tested in (([], None, True), (["--window-test"], None, True), (["--no-window-test"], False, False),
                                 (["--own-peak"], None, False)):
        given = runner.invoke(main, ["train", "--steps", "1000", "--pilot", "0.1", *flags, "--out", str(tmp_path / "g")])
        assert given.exit_code == 0, given.output
        assert seen[-1].window_test is value and seen[-1].window_tested is tested  # asking for the default is None
    for flags, said in ((["--adaptive", "--no-window-test"], "Error: --window-test/--no-window-test (on or off) needs a --pilot"),
                        (["--no-window-test"], "--window-test/--no-window-test: only for an adaptive schedule")):
        refused = runner.invoke(main, ["train", *flags, "--out", str(tmp_path / "r")])
        assert refused.exit_code == 2 and said in refused.output, refused.output
    assert not (tmp_path / "r").exists()


def test_a_config_with_the_default_window_test_can_be_replaced_into_one_where_it_cannot_act():
    on = AdaptiveConfig(pilot=0.1, window_test=True)
    assert on == AdaptiveConfig(pilot=0.1) and on.window_tested
    assert not dataclasses.replace(on, own_peak=True).window_tested
    assert not dataclasses.replace(on, pilot=None).window_tested
    with pytest.raises(SmoothprobeError, match="own_peak turns the window test off already"):
        dataclasses.replace(AdaptiveConfig(pilot=0.1, window_test=False), own_peak=True)


def test_the_step_test_flag_reaches_the_config_and_is_refused_where_it_would_do_nothing(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(importlib.import_module("smoothprobe.train"), "train",
                        lambda config, out, **_: seen.append(config.adaptive) or out)
    runner = CliRunner()
    for flags, value in (([], False), (["--step-test"], True)):
        given = runner.invoke(main, ["train", "--steps", "1000", "--pilot", "0.1", *flags, "--out", str(tmp_path / "g")])
        assert given.exit_code == 0, given.output
        assert seen[-1].step_test is value and seen[-1].progress_test is False
    given = runner.invoke(main, ["train", "--steps", "1000", "--pilot", "0.1", "--progress-test", "--out",
                                 str(tmp_path / "g")])
    assert given.exit_code == 0 and seen[-1].progress_test is True, given.output
    alone = runner.invoke(main, ["train", "--adaptive", "--step-test", "--out", str(tmp_path / "r")])
    assert alone.exit_code == 2 and "Error: --step-test needs a --pilot" in alone.output
    bare = runner.invoke(main, ["train", "--step-test", "--out", str(tmp_path / "r")])
    assert bare.exit_code == 2 and "--step-test: only for an adaptive schedule" in bare.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("options, message", [
    ({"steps": 20, "warmup": 500}, "warmup of 500 steps is longer than the run's 20 steps"),
    ({"warmup": float("nan")}, "warmup must be a finite number, got nan"),
    ({"warmup": 0.1, "adaptive": {"div": 10.0}}, "warmup is the baseline schedule's"),
    ({"task": "markov", "vocab_size": 100}, "data and vocab_size are the lm task's"),
    ({"probes": {"every": 1, "overhead": 0.5}}, "every and overhead exclude each other"),
    ({"schedule": "linear", "adaptive": {"div": 10.0}}, "schedule and warmup_shape shape the baseline schedule"),
    ({"warmup_shape": "cosine", "adaptive": {"pilot": 50}}, "schedule and warmup_shape shape the baseline"),
    ({"task": "quadratic", "batch_size": 4}, "model, batch_size and seq_len set the token tasks'"),
    ({"task": "quadratic", "model": "small"}, "task quadratic has neither"),
    ({"task": "lm", "vocab_size": 100}, "vocab_size is the vocabulary of .bin token data"),
    ({"task": "lm", "vocab_size": 100, "data": str(Path(__file__).parents[1] / "README.md")}, "text and the built-in corpus have their own"),
    ({"optimizer": "adamw", "probes": {"nuclear": "exact"}}, "nuclear sets how Muon's nuclear norms are taken"),
    ({"probes": {"preset": "cheap", "heavy_every": 5}}, r"heavy_every paces the heavy probes, and none of these runs \(norms\)"),
    ({"probes": {"preset": "cheap", "hvp": "fd"}}, "hvp and hvp_chunks set how Hessian-vector products are taken"),
    ({"probes": {"probes": ("secant",), "hvp_chunks": 4}}, "none of these probes takes them \\(secant\\)"),
    ({"steps": 5, "adaptive": {"max_warmup": 100}}, "max_warmup of 100 steps is longer than the run's 5 steps"),
    ({"steps": 40, "adaptive": {"pilot": 50}}, "50 of 40 steps; give more than 50 steps"),
    ({"steps": 10**23}, re.escape("steps must be an integer in [1, 1000000000]")),  # a mistyped count
])
def test_options_that_would_do_nothing_are_refused(options, message):
    """Each of these was accepted and then had no effect (the LR never decayed, the warm-up or the data was
    ignored, the interval was the budget's): now one line says so."""
    with pytest.raises(SmoothprobeError, match=message):
        TrainConfig(**options).validate()


def test_record_refuses_a_pilot_its_probes_cannot_feed(tmp_path):
    """record's probes every 10 steps give a 50-step pilot 5 rows, and its fits need 50: refused before the
    run directory exists, naming the interval that would."""
    from smoothprobe.train import build

    cfg = TrainConfig(task="quadratic", steps=80, probes={"every": 10}, adaptive={"pilot": 50, "f_star": 0.0})
    with pytest.raises(SmoothprobeError, match=r"secant probe on 50 steps of its 50-step window, and the probes give it 5 \(every 10 steps\)"):
        build(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_fit_drives_only_the_setup_it_was_measured_on(tmp_path):
    """fit.json keeps the recorded run's task, optimizer and geometry family (`source`); a run of another task
    (another loss) or another family (K in another norm) refuses it, naming both; the same family passes."""
    from smoothprobe import fit_run, load_run, train
    from smoothprobe.fit.result import SmoothnessFit

    run = train(TrainConfig(task="quadratic", optimizer="normsgd", lr=0.05, steps=60, probes={"every": 1}),
                tmp_path / "r", progress=False)
    fit = fit_run(load_run(run), bootstrap=0)
    assert fit.source == {"task": "quadratic", "optimizer": "normsgd", "family": "frobenius"}
    fit.to_json(tmp_path / "fit.json")
    assert SmoothnessFit.from_json(tmp_path / "fit.json").source == fit.source
    given = {"fit": str(tmp_path / "fit.json"), "allow_unsupported": True}
    TrainConfig(task="quadratic", optimizer="normsgd", steps=60, adaptive=given).validate()
    for setup, differ in [({"task": "quadratic", "optimizer": "lion"}, "family frobenius (this run: sign)"),
                          ({"task": "markov", "optimizer": "normsgd"}, "task quadratic (this run: markov)")]:
        with pytest.raises(SmoothprobeError, match=re.escape(differ)):
            TrainConfig(**setup, steps=60, adaptive=given).validate()

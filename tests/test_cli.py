"""The command line: complete help, one-line errors with exit code 2, a real training run."""

import dataclasses
import importlib
import inspect
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from smoothprobe.cli.main import main

from smoothprobe import SmoothprobeError, config
from smoothprobe.config import AdaptiveConfig, ProbeConfig, TrainConfig, option


def invoke(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("command", [[], ["train"]])
def test_help_lists_every_option(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    if command == ["train"]:
        for option in ["--task", "--optimizer", "--lr", "--steps", "--schedule", "--warmup",
                       "--weight-decay", "--clip", "--seed", "--device", "--eval-every", "--out",
                       "--resume", "--overwrite", "--data", "--vocab-size", "--accum"]:
            assert option in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "nope"], "Invalid value for '--task'"),
        (["--optimizer", "adam"], "Invalid value for '--optimizer'"),
        (["--lr", "-1"], "Invalid value for '--lr'"),
        (["--data", "/no/such/path"], "does not exist"),
        (["--device", "tpu"], "--device must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = invoke("train", "--out", str(tmp_path / "r"), "--steps", "2", "--no-progress", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_train_writes_a_run_and_refuses_to_clobber_it(tmp_path):
    out = tmp_path / "r"
    args = ["train", "--task", "quadratic", "--optimizer", "lion", "--lr", "0.01", "--steps", "20",
            "--out", str(out), "--no-progress"]
    assert invoke(*args).exit_code == 0
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["optimizer"] == "lion" and info["status"] == "finished"
    assert len((out / "steps.jsonl").read_text().splitlines()) == 20
    again = invoke(*args)
    assert again.exit_code == 2 and "--resume" in again.output


def test_resume_of_missing_run_is_a_clear_error(tmp_path):
    result = invoke("train", "--out", str(tmp_path / "missing"), "--resume")
    assert result.exit_code == 2 and "run directory not found" in result.output


def record_quadratic(out, *extra):
    args = ["record", "--task", "quadratic", "--optimizer", "normsgd", "--lr", "0.05", "--steps", "80",
            "--every", "1", "--out", str(out), "--no-progress", *extra]
    result = invoke(*args)
    assert result.exit_code == 0, result.output


def test_fit_writes_fit_json_with_the_scheduler_keys(tmp_path):
    record_quadratic(tmp_path / "r")
    result = invoke("fit", str(tmp_path / "r"), "--bootstrap", "20", "--jobs", "1")
    assert result.exit_code == 0, result.output
    fit = json.loads((tmp_path / "r" / "fit.json").read_text())
    assert fit["schema_version"] == 2 and fit["f_star"] == 0.0  # the quadratic's exact f*
    assert set(fit["constants"]) == {"rho", "K0", "K1", "K_rho"}
    assert "verdict" in fit and fit["verdict"] in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--window", "5"], "START:END"),
        (["--rho", "two"], "a number or 'auto'"),
        (["--column", "nope"], "nope"),
        (["--window", "1000:2000"], "window"),
        (["--window", "-10:"], "steps count from 0"),  # not Python's "the last 10": refused, not fitted whole
        (["--window", "30:10"], "START must be below END"),
        (["--window", "1000:"], "window 1000: does not overlap"),
    ],
)
def test_fit_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    record_quadratic(tmp_path / "r", "--steps", "40")
    result = invoke("fit", str(tmp_path / "r"), "--bootstrap", "0", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_fit_refuses_runs_without_probes_and_non_runs(tmp_path):
    assert invoke("train", "--task", "quadratic", "--steps", "5", "--out", str(tmp_path / "t"),
                  "--no-progress").exit_code == 0
    no_probes = invoke("fit", str(tmp_path / "t"))
    assert no_probes.exit_code == 2 and "secant_K" in no_probes.output
    (tmp_path / "empty").mkdir()
    not_a_run = invoke("fit", str(tmp_path / "empty"))
    assert not_a_run.exit_code == 2 and "no run.json" in not_a_run.output


def test_adaptive_flags_are_validated(tmp_path):
    out = str(tmp_path / "a")
    bad = invoke("train", "--adaptive", "--f-star", "low", "--out", out)
    assert bad.exit_code == 2 and "--f-star" in bad.output
    unknown = invoke("train", "--task", "lm", "--adaptive", "--out", out, "--steps", "2", "--seq-len", "8",
                     "--no-progress")
    assert unknown.exit_code == 2 and "no known f*" in unknown.output


def test_bad_probe_option_leaves_no_run_directory(tmp_path):
    result = invoke("record", "--probes", "magic", "--steps", "2", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "unknown probe 'magic'" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "'inf' is not a finite number"),
    (["--lr", "nan"], "'nan' is not a finite number"),
    (["--adaptive", "--div", "inf"], "'inf' is not a finite number"),
    (["--min-lr-ratio", "nan"], "'nan' is not a finite number"),
    (["--adaptive", "--f-star", "inf"], "numbers must be finite"),
])
def test_non_finite_numbers_are_refused_before_anything_is_written(tmp_path, args, message):
    result = invoke("train", "--out", str(tmp_path / "r"), "--steps", "2", "--no-progress", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--rho", "inf"], "--rho: expected a number or 'auto', got 'inf' (numbers must be finite)"),
    (["--f-star", "nan"], "--f-star: expected a number or 'auto', got 'nan'"),
])
def test_fit_refuses_non_finite_numbers(tmp_path, args, message):
    record_quadratic(tmp_path / "r", "--steps", "40")
    result = invoke("fit", str(tmp_path / "r"), "--bootstrap", "0", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r" / "fit.json").exists()


@pytest.mark.parametrize("out, written", [("new/deeper/fit.json", "new/deeper/fit.json"), ("new/", "new/fit.json")])
def test_fit_creates_a_missing_out_folder_as_report_does(tmp_path, out, written):
    record_quadratic(tmp_path / "r", "--steps", "40")
    result = invoke("fit", str(tmp_path / "r"), "--bootstrap", "0", "--out", f"{tmp_path}/{out}")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / written).read_text())["constants"]["rho"] == 2.0


def test_report_out_naming_a_folder_writes_report_html_in_it(tmp_path):
    record_quadratic(tmp_path / "r", "--steps", "40")
    (tmp_path / "old").mkdir()
    for out in (f"{tmp_path}/new/", str(tmp_path / "old")):
        result = invoke("report", str(tmp_path / "r"), "--out", out)
        assert result.exit_code == 0, result.output
        assert (Path(out) / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_fit_prints_load_warnings_and_overwrite_clears_the_stale_fit(tmp_path):
    record_quadratic(tmp_path / "r", "--steps", "40")
    with open(tmp_path / "r" / "steps.jsonl", "a") as f:
        f.write('{"step": 40, "lo')  # a torn last line
    result = CliRunner().invoke(main, ["fit", str(tmp_path / "r"), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert "warning: steps.jsonl: dropped a truncated last record" in result.stderr
    assert (tmp_path / "r" / "fit.json").exists()
    record_quadratic(tmp_path / "r", "--steps", "40", "--overwrite")
    assert not (tmp_path / "r" / "fit.json").exists()


@dataclasses.dataclass
class AdaptiveWithHalflife(AdaptiveConfig):
    """AdaptiveConfig with one more schedule option, declared as a field only."""

    halflife: float = option(3.0, "Adaptive: a half-life in steps (a field added by a test).", low=0, low_open=True)


@pytest.fixture
def extended_cli(monkeypatch):
    """The CLI module rebuilt while AdaptiveConfig has the extra field `halflife`."""
    import smoothprobe.cli.main as cli

    monkeypatch.setattr(config, "AdaptiveConfig", AdaptiveWithHalflife)
    yield importlib.reload(cli)
    monkeypatch.undo()
    importlib.reload(cli)


def test_a_field_added_to_adaptive_config_is_a_flag_with_its_default_and_help(extended_cli, tmp_path, monkeypatch):
    text = " ".join(CliRunner().invoke(extended_cli.main, ["train", "--help"]).output.split())
    assert "--halflife FINITE FLOAT Adaptive: a half-life in steps (a field added by a test). [default: 3.0; x>0]" in text
    seen = {}
    monkeypatch.setattr(importlib.import_module("smoothprobe.train"), "train", lambda config, out, **_: seen.setdefault(
        "config", config) and out)
    result = CliRunner().invoke(extended_cli.main, ["train", "--adaptive", "--halflife", "7", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["config"].adaptive.halflife == 7.0
    alone = CliRunner().invoke(extended_cli.main, ["train", "--halflife", "7", "--out", str(tmp_path)])
    assert alone.exit_code == 2 and "--halflife: only for an adaptive schedule" in alone.output
    with pytest.raises(SmoothprobeError, match="halflife must be a finite number > 0, got -1.0"):
        AdaptiveWithHalflife(halflife=-1.0)  # the library holds the range the option declares


@pytest.mark.parametrize("command", ["train", "record", "sweep"])
def test_every_cli_default_is_the_dataclass_default(command):
    params = {param.name: param for param in main.commands[command].params}
    classes = (TrainConfig, AdaptiveConfig, ProbeConfig) if command == "record" else (TrainConfig, AdaptiveConfig)
    for cls in classes:
        for f, _ in config.offered(cls):
            if command == "sweep" and f.name == "warmup":  # the sweep's grid sets it
                continue
            assert params[f.name].default == f.default, (cls.__name__, f.name)
    assert "probes" not in params or command == "record"


def test_every_fit_default_is_fit_run_default():
    from smoothprobe.fit import fit_run

    library = inspect.signature(fit_run).parameters
    for param in main.commands["fit"].params:
        if param.name in library:
            assert param.default == library[param.name].default, param.name
    assert {param.name for param in main.commands["fit"].params} - {"run_dir", "out"} <= set(library)


def test_no_flags_build_the_dataclass_defaults(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(importlib.import_module("smoothprobe.train"), "train", lambda config, out, **_: seen.setdefault(
        "config", config) and out)
    assert invoke("record", "--out", str(tmp_path)).exit_code == 0
    assert seen.pop("config") == TrainConfig(probes=ProbeConfig())
    assert invoke("train", "--adaptive", "--out", str(tmp_path)).exit_code == 0
    assert seen.pop("config") == TrainConfig(adaptive=AdaptiveConfig())


def test_a_resume_with_nothing_left_to_train_says_so_and_fit_out_may_be_a_folder(tmp_path):
    """`train --resume` of a finished run printed "run written" and trained nothing; `fit --out d/` wrote a
    file named d; `record` with too few probed rows for a verdict said nothing until `fit`."""
    record = invoke("record", "--task", "quadratic", "--steps", "50", "--every", "1", "--out", str(tmp_path / "r"),
                    "--no-progress")
    assert record.exit_code == 0 and "note:" not in record.output
    short = invoke("record", "--task", "quadratic", "--steps", "40", "--every", "1", "--out", str(tmp_path / "s"),
                   "--no-progress")
    assert "give 40 rows, and a fit's verdict needs 50: give --steps 50\n" in short.output
    thin = invoke("record", "--task", "quadratic", "--steps", "20", "--out", str(tmp_path / "thin"), "--no-progress")
    assert thin.exit_code == 0 and "give 2 rows, and a fit's verdict needs 50: give --every 1 or --steps 500" in thin.output
    again = invoke("train", "--resume", "--out", str(tmp_path / "r"), "--no-progress")
    assert again.exit_code == 0 and "had already finished all 50 steps; nothing was trained" in again.output
    (tmp_path / "fits").mkdir()
    for out in (str(tmp_path / "fits"), str(tmp_path / "new") + "/"):
        (tmp_path / "new").mkdir(exist_ok=True)
        result = invoke("fit", str(tmp_path / "r"), "--bootstrap", "0", "--out", out)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "fits" / "fit.json").is_file() and (tmp_path / "new" / "fit.json").is_file()


def test_the_command_catches_ctrl_c_while_torch_imports():
    """`smoothprobe` (cli.run) is reached before torch is imported, and a SIGINT delivered while the
    command line imports ends with one line and exit code 130, not a traceback."""
    import subprocess
    import sys

    probe = "import sys, smoothprobe, smoothprobe.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True,
                          text=True).stdout.strip() == "False"
    interrupted = ("import importlib, os, signal, smoothprobe.cli\n"
                   "real = importlib.import_module\n"
                   "def interrupted(name):\n"
                   "    os.kill(os.getpid(), signal.SIGINT)\n"
                   "    return real(name)\n"
                   "importlib.import_module = interrupted\n"
                   "smoothprobe.cli.run()\n")
    done = subprocess.run([sys.executable, "-c", interrupted], check=False, capture_output=True, text=True)
    assert done.returncode == 130 and done.stderr == "Error: interrupted (Ctrl-C)\n", done.stderr


def test_the_package_imports_its_public_names_on_first_use():
    """`import smoothprobe` is lazy, yet every public name resolves, and `smoothprobe.train` stays the
    function even after its module was imported by name."""
    import smoothprobe
    import smoothprobe.train as module_or_function
    from smoothprobe.train import train

    assert smoothprobe.train is train and module_or_function is train
    assert sorted(smoothprobe.__all__) == sorted(smoothprobe._HOME)
    for name in smoothprobe.__all__:
        assert getattr(smoothprobe, name).__name__ == name
    assert smoothprobe.fit.fit_frame.__module__ == "smoothprobe.fit"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        smoothprobe.nope  # noqa: B018


def test_fit_and_report_never_overwrite_what_they_did_not_write(tmp_path):
    """A mistyped --out must not turn a run's rows or another file into a fit or a report, nor put a fit
    into another run's folder (it would be read as that run's fit); their own earlier output is replaced."""
    record_quadratic(tmp_path / "r", "--steps", "40")
    record_quadratic(tmp_path / "other", "--steps", "40")
    rows = (tmp_path / "other" / "steps.jsonl").read_bytes()
    script = tmp_path / "t.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    for command, inside in ((["fit", str(tmp_path / "r"), "--bootstrap", "0"], "is another run's folder"),
                            (["report", str(tmp_path / "r")], "exists and is not a report")):
        for target, message in ((tmp_path / "other" / "steps.jsonl", inside), (script, "exists and is not a")):
            result = invoke(*command, "--out", str(target))
            assert result.exit_code == 2 and message in result.output, result.output
    result = invoke("fit", str(tmp_path / "r"), "--bootstrap", "0", "--out", str(tmp_path / "other"))
    assert result.exit_code == 2 and "is another run's folder" in result.output, result.output
    assert (tmp_path / "other" / "steps.jsonl").read_bytes() == rows and script.read_text().startswith("#!")
    assert not (tmp_path / "other" / "fit.json").exists()
    for command, out in ((["fit", str(tmp_path / "r"), "--bootstrap", "0"], "f.json"),
                         (["report", str(tmp_path / "r")], "r.html")):
        for _ in range(2):  # the second time replaces the first's own output
            assert invoke(*command, "--out", str(tmp_path / out)).exit_code == 0


def test_outputs_inside_a_run_empty_outputs_and_empty_probe_lists_are_refused(tmp_path):
    """From a fuzz review: each was accepted and did something other than asked (a run nested in a run, a sweep
    written into one, the current folder for an empty --out, the standard preset for --probes "")."""
    record_quadratic(tmp_path / "r", "--steps", "40")
    quick = ["--task", "quadratic", "--steps", "5", "--no-progress"]
    for args, message in [
        (["train", *quick, "--out", str(tmp_path / "r" / "sub")], "lies inside run directory"),
        (["sweep", *quick, "--seeds", "1", "--warmups", "0", "--out", str(tmp_path / "r")], "lies inside run directory"),
        (["train", *quick, "--out", ""], "--out': is empty"),
        (["demo", "--out", " "], "--out': is empty"),
        (["fit", str(tmp_path / "r"), "--out", ""], "--out': is empty"),
        (["record", *quick, "--probes", "", "--out", str(tmp_path / "p")], "probes must name at least one probe"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "r" / "sub").exists() and not (tmp_path / "r" / "summary.csv").exists()
    sibling = tmp_path / "r" / ".." / "sibling"  # a path that passes through a run is not inside it
    assert invoke("train", *quick, "--out", str(sibling)).exit_code == 0 and (tmp_path / "sibling" / "run.json").exists()


def test_record_does_not_resume_a_run_trained_without_probes(tmp_path):
    result = invoke("train", "--task", "quadratic", "--steps", "5", "--no-progress", "--out", str(tmp_path / "t"))
    assert result.exit_code == 0, result.output
    result = invoke("record", "--task", "quadratic", "--steps", "10", "--no-progress", "--out", str(tmp_path / "t"),
                    "--resume")
    assert result.exit_code == 2 and "was trained without probes (by train)" in result.output, result.output


@pytest.mark.parametrize("word", ["AUTO", "Auto", " auto"])
def test_auto_is_read_in_any_case(tmp_path, word):
    record_quadratic(tmp_path / "r", "--steps", "40")
    result = invoke("fit", str(tmp_path / "r"), "--bootstrap", "0", "--rho", word)
    assert result.exit_code == 0, result.output

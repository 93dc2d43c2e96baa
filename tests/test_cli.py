"""The command line: complete help, one-line errors with exit code 2, a real training run."""

import json

import pytest
from click.testing import CliRunner
from smoothprobe.cli.main import main


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
        (["--lr", "-1"], "--lr must be > 0"),
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

"""Seeded random corruptions of every file of a run directory (truncation, type swaps, extreme values,
junk lines, broken checkpoints) fed to `fit`, `report`, `train --resume` and `train --fit`: each
exits 0 (a harmless corruption, e.g. a torn last line) or 2 with one line, never a traceback, and a
refused command leaves the files as they were."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from smoothprobe.cli.main import main

SWAPS = ["abc", [1, 2], {"a": 1}, None, True, 1e308, -1e308, 1e-308, 0, -1, 1e300]
JUNK = ["[1, 2]", "null", "{}", '{"step": "abc"}', '"text"', "1", "{", '{"step": 1.5}', '{"step": 3, "loss": "x"}']
CASES = 8  # per (file, command)
pytestmark = pytest.mark.adversarial("traceback")


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    run = root / "run"
    result = invoke("record", "--task", "quadratic", "--optimizer", "normsgd", "--lr", "0.05", "--steps", "40",
                    "--every", "1", "--checkpoint-every", "20", "--no-progress", "--out", run)
    assert result.exit_code == 0, result.output
    assert invoke("fit", run, "--bootstrap", "0", "--jobs", "1").exit_code == 0
    return run


def leaves(data, path=()):
    """Paths of every leaf of a JSON value."""
    if isinstance(data, dict) and data:
        return [p for k, v in data.items() for p in leaves(v, (*path, k))]
    if isinstance(data, list) and data:
        return [p for i, v in enumerate(data) for p in leaves(v, (*path, i))]
    return [path]


def swap_leaf(data, rng: random.Random):
    """`data` with one random leaf replaced by a value of another type or an extreme number."""
    path = rng.choice(leaves(data))
    if not path:
        return rng.choice(SWAPS)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = rng.choice(SWAPS)
    return data


def corrupt_lines(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    kind = rng.choice(["truncate", "swap", "junk", "drop", "repeat"])
    if kind == "truncate" or len(lines) < 2:
        return text[: rng.randrange(len(text) + 1)]
    i = rng.randrange(len(lines))
    if kind == "swap":
        lines[i] = json.dumps(swap_leaf(json.loads(lines[i]), rng))
    elif kind == "junk":
        lines[i] = rng.choice(JUNK)
    elif kind == "drop":
        del lines[i]
    else:
        lines.insert(i, lines[rng.randrange(len(lines))])
    return "\n".join(lines) + "\n"


def corrupt_json(text: str, rng: random.Random) -> str:
    kind = rng.choice(["truncate", "swap", "swap", "top"])
    if kind == "truncate":
        return text[: rng.randrange(len(text))]
    if kind == "top":
        return json.dumps(rng.choice(SWAPS))
    return json.dumps(swap_leaf(json.loads(text), rng))


def corrupt_checkpoint(path: Path, rng: random.Random) -> None:
    kind = rng.choice(["truncate", "flip", "drop", "shape", "type"])
    if kind in ("truncate", "flip"):
        data = bytearray(path.read_bytes())
        if kind == "truncate":
            del data[rng.randrange(len(data)):]
        else:
            for _ in range(8):
                data[rng.randrange(len(data))] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    state = torch.load(path, weights_only=True)
    key = rng.choice(sorted(state))
    if kind == "drop":
        del state[key]
    elif kind == "shape":
        state["model"] = {k: torch.zeros(3, 3, 3) for k in state["model"]}
    else:
        state[key] = rng.choice(["abc", 7, None, [1]])
    torch.save(state, path)


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def check(result, run: Path, before: dict[str, bytes]) -> None:
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = [line for line in result.output.strip().splitlines() if not line.startswith("warning: ")]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert snapshot(run) == before  # a refused command changes nothing


COMMANDS = {
    "fit": lambda run, tmp: invoke("fit", run, "--bootstrap", "0", "--jobs", "1", "--out", tmp / "other-fit.json"),
    "report": lambda run, tmp: invoke("report", run, "--out", tmp / "report.html"),
    "resume": lambda run, tmp: invoke("train", "--out", run, "--resume", "--no-progress"),
    "train --fit": lambda run, tmp: invoke("train", "--task", "quadratic", "--steps", "3", "--no-progress",
                                           "--allow-unsupported-fit", "--fit", run / "fit.json", "--out", tmp / "new"),
}
TARGETS = [
    ("steps.jsonl", ["fit", "resume", "report"]),
    ("evals.jsonl", ["fit", "resume"]),
    ("tensors.jsonl", ["fit", "resume"]),
    ("run.json", ["fit", "resume", "report"]),
    ("checkpoints/last.pt", ["resume"]),
    ("fit.json", ["train --fit", "report"]),
]


@pytest.mark.parametrize("target, commands", TARGETS, ids=[t for t, _ in TARGETS])
def test_corrupted_files_give_exit_0_or_one_line_exit_2(source, tmp_path, target, commands):
    rng = random.Random(f"smoothprobe-{target}")
    for command in commands:
        for case in range(CASES if command != "report" else 3):
            run = tmp_path / f"{command.replace(' ', '')}-{case}" / "run"
            shutil.copytree(source, run)
            path = run / target
            if target.endswith(".pt"):
                corrupt_checkpoint(path, rng)
            elif target.endswith(".jsonl"):
                path.write_text(corrupt_lines(path.read_text(), rng))
            else:
                path.write_text(corrupt_json(path.read_text(), rng))
            before = snapshot(run)
            result = COMMANDS[command](run, run.parent)
            check(result, run, before)


@pytest.mark.parametrize("target, text", [
    ("steps.jsonl", '{"step": 0, "loss": 1.0}\n{"step": "abc"}\n{"step": 2, "loss": 1.0}\n'),
    ("steps.jsonl", "[1, 2]\n"),
    ("run.json", '{"schema_version": 1, "config": null}'),
    ("run.json", "[]"),
    ("fit.json", '{"schema_version": 1, "constants": {"rho": 2, "K0": null, "K1": 0, "K_rho": 1}}'),
])
def test_harmful_corruptions_exit_2(source, tmp_path, target, text):
    run = tmp_path / "run"
    shutil.copytree(source, run)
    (run / target).write_text(text)
    before = snapshot(run)
    command = "train --fit" if target == "fit.json" else "resume"
    result = COMMANDS[command](run, tmp_path)
    assert result.exit_code == 2, result.output
    check(result, run, before)
    if target != "fit.json":
        assert invoke("fit", run, "--bootstrap", "0").exit_code == 2


def test_torn_last_line_is_harmless(source, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(source, run)
    with open(run / "steps.jsonl", "a") as f:
        f.write('{"step": 40, "lo')
    assert invoke("fit", run, "--bootstrap", "0", "--jobs", "1", "--out", tmp_path / "f.json").exit_code == 0
    assert invoke("train", "--out", run, "--resume", "--no-progress").exit_code == 0

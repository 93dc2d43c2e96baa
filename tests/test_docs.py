"""Every code block in README.md and docs/*.md runs as written.

A ```python block runs in a fresh namespace from a set-up named by an HTML comment on the line
before its fence, which the rendered page hides::

    <!-- test: setup=classifier -->

Set-ups (the `SETUPS` below) fill a snippet's placeholders with a tiny model; every block runs in
a temporary working directory. Other words in the comment: `continue` (run in the previous
block's namespace, same page), `slow` (marks the block slow), `check=NAME` (then run
`CHECKS[NAME]` on the namespace: what the recipe promises), `xfail="reason"` (strict: the
library lacks what the block documents). ```bash blocks are parsed: `smoothprobe` commands must
use existing options with valid values, `pip install` extras must exist in pyproject.toml.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from smoothprobe.cli.main import main as cli
from torch import nn

import smoothprobe

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*test:(.*)-->\s*$")
OTHER_PROGRAMS = {"pytest", "tensorboard", "mlflow", "wandb"}


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page with the options of the test comment just above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening or not opening.group(1):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        directive = DIRECTIVE.match(lines[i - 1]) if i else None
        options = {}
        for word in shlex.split(directive.group(1)) if directive else []:
            key, _, value = word.partition("=")
            options[key] = value
        found.append(Block(page, i + 1, opening.group(1), "\n".join(lines[i + 1:end]), options))
        i = end + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]
PYTHON = [b for b in ALL if b.language == "python"]
BASH = [b for b in ALL if b.language == "bash"]


# ------------------------------------------------------------------ set-ups


def loss_of(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def classifier(scale: float = 1.0) -> dict:
    """A 16-32-4 MLP, AdamW and 100 batches of 32 (16 distinct ones, cycled)."""
    torch.manual_seed(0)
    x = scale * torch.randn(512, 16)
    y = (x @ torch.randn(16, 4)).argmax(1)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 512, 32)]
    return {"model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=1e-2),
            "loader": [batches[i % 16] for i in range(100)], "loss_of": loss_of,
            "dataset": torch.utils.data.TensorDataset(x, y), "device": "cpu"}


def loud_classifier() -> dict:
    """`classifier` on inputs large enough that fp16 gradients overflow at GradScaler's default
    scale: the scaler skips steps until its scale has come down."""
    return classifier(scale=300.0)


def plain_loop(model, optimizer, run_dir: str, loader, **options) -> None:
    """The README's loop: a Recorder around a plain training loop over `loader`."""
    with smoothprobe.Recorder(model, optimizer, run_dir, loss_fn=loss_of, **options) as rec:
        for step, batch in enumerate(loader):
            loss = loss_of(model, batch)
            loss.backward()
            rec.before_step(step, batch, loss=loss.item())
            optimizer.step()
            optimizer.zero_grad()
            rec.after_step()


def recorded() -> dict:
    """`classifier` after the README's loop wrote runs/mine (100 steps, every 2nd probed)."""
    setup = classifier()
    plain_loop(setup["model"], setup["optimizer"], "runs/mine", setup["loader"], every=2)
    return setup


def hf() -> dict:
    """A one-layer GPT-2 and 64 sequences of counting tokens (learnable: the loss falls fast)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32)
    starts = torch.randint(0, 64, (64, 1), generator=torch.Generator().manual_seed(1))
    ids = (starts + torch.arange(16)) % 64
    return {"model": transformers.GPT2LMHeadModel(config), "MyExistingTrainer": transformers.Trainer,
            "ds": [{"input_ids": row, "labels": row.clone()} for row in ids]}


def lightning() -> dict:
    """A DataLoader of 64 batches of (x, y) for a 4-class problem."""
    pytest.importorskip("lightning")
    setup = classifier()
    return {"loader": torch.utils.data.DataLoader(setup["dataset"], batch_size=8)}


SETUPS = {"classifier": classifier, "loud_classifier": loud_classifier, "recorded": recorded,
          "hf": hf, "lightning": lightning}


# ------------------------------------------------------------------ checks


def check_readme_loop(ns: dict) -> None:
    """Enough probed rows for the fit; the `if` that builds the schedule runs on a supported fit."""
    assert ns["fit"].data["rows_used"] >= 30
    from planted import planted_steps

    supported = smoothprobe.fit.fit_frame(planted_steps(300), f_star=2.0, bootstrap=0)
    assert supported.status == "supported"
    last = ast.parse(PYTHON_BY_CHECK["readme_loop"].code).body[-1]
    assert isinstance(last, ast.If)
    exec(compile(ast.Module([last], []), "README if-branch", "exec"), {**ns, "fit": supported})  # noqa: S102


def check_accumulation(ns: dict) -> None:
    """The accumulated step's secant equals the one-big-batch secant along the same trajectory."""
    setup = classifier()
    model, optimizer = setup["model"], setup["optimizer"]
    batches = iter(setup["loader"])
    with smoothprobe.Recorder(model, optimizer, "runs/big", loss_fn=loss_of, every=1) as rec:
        for step in range(ns["steps"]):
            micro = [next(batches) for _ in range(ns["accumulate"])]
            big = (torch.cat([x for x, _ in micro]), torch.cat([y for _, y in micro]))
            loss = loss_of(model, big)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            rec.before_step(step, big, loss=loss.item(), grad_norm=norm.item())
            optimizer.step()
            optimizer.zero_grad()
            rec.after_step()
    accumulated = smoothprobe.load_run("runs/accum").steps
    reference = smoothprobe.load_run("runs/big").steps
    assert accumulated.secant_K.notna().sum() >= 10
    for column in ("loss", "secant_K", "secant_K_euclid", "loss_after"):
        np.testing.assert_allclose(accumulated[column], reference[column], rtol=1e-4, err_msg=column)


def check_amp(ns: dict) -> None:
    """Skipped steps are marked and carry no curvature; every other probed step does."""
    steps = smoothprobe.load_run("runs/amp").steps
    skipped = steps.skipped.fillna(False).astype(bool)
    assert skipped.sum() >= 1 and skipped.iloc[0]
    assert steps.secant_K[skipped].isna().all()
    probed = steps[~skipped & steps.secant_K.notna()]
    assert len(probed) >= 10 and np.isfinite(probed.secant_K).all()


def check_exports(ns: dict) -> None:
    """Exporting twice more adds nothing: one point per step in TensorBoard, MLflow and W&B."""
    import json

    import mlflow
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    block = PYTHON_BY_CHECK["exports"]
    for _ in range(2):
        exec(compile(block.code, block.id, "exec"), ns)  # noqa: S102
    steps = smoothprobe.load_run("runs/mine").steps.step.tolist()
    files = list(Path("runs/mine/tb").glob("events.out.tfevents.*"))
    assert len(files) == 1
    tb = [e.step for e in EventFileLoader(str(files[0])).Load()
          for v in e.summary.value if v.tag == "smoothprobe/loss"]
    assert sorted(tb) == steps
    run_id = json.loads(Path("runs/mine/mlflow.json").read_text())["run_id"]
    client = mlflow.tracking.MlflowClient(tracking_uri="sqlite:///mlflow.db")
    assert sorted(m.step for m in client.get_metric_history(run_id, "smoothprobe/loss")) == steps
    assert json.loads(Path("runs/mine/wandb.json").read_text())["last_step"] == steps[-1]
    assert len(list(Path("wandb").glob("offline-run-*"))) == 1
    import wandb

    wandb.teardown()  # W&B keeps its settings (this directory) per process


def check_probed(run_dir: str):
    def check(ns: dict) -> None:
        steps = smoothprobe.load_run(run_dir).steps
        probed = steps.dropna(subset=["secant_K"])
        assert len(probed) >= 5 and (probed.secant_K > 0).all()
    return check


def check_warmup_rises(run_dir: str, lr: float):
    """The adaptive LR starts at lr/div and climbs to the peak within the run."""
    def check(ns: dict) -> None:
        lrs = smoothprobe.load_run(run_dir).steps.lr
        assert lrs.iloc[0] == pytest.approx(lr / 10)
        assert lrs.max() == pytest.approx(lr, rel=0.05)
    return check


CHECKS = {"readme_loop": check_readme_loop, "accumulation": check_accumulation, "amp": check_amp,
          "exports": check_exports,
          "accelerate": check_probed("runs/accelerate"), "compile": check_probed("runs/compiled"),
          "hf_adaptive": check_warmup_rises("runs/hf-adaptive", 3e-3),
          "lightning": check_warmup_rises("runs/pl", 1e-2)}
PYTHON_BY_CHECK = {b.options["check"]: b for b in PYTHON if "check" in b.options}


# ------------------------------------------------------------------ tests


def param(block: Block):
    marks = []
    if "slow" in block.options:
        marks.append(pytest.mark.slow)
    if "xfail" in block.options:
        marks.append(pytest.mark.xfail(strict=True, reason=block.options["xfail"]))
    return pytest.param(block, id=block.id, marks=marks)


def test_every_python_block_declares_a_known_setup():
    for block in PYTHON:
        assert ("setup" in block.options) != ("continue" in block.options), block.id
        assert block.options.get("setup", "classifier") in SETUPS, block.id
        assert block.options.get("check", "readme_loop") in CHECKS, block.id
    assert set(PYTHON_BY_CHECK) == set(CHECKS)


@pytest.mark.parametrize("block", [param(b) for b in PYTHON])
def test_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = [b for b in PYTHON if b.page == block.page]
    start = page.index(block)
    while "continue" in page[start].options:
        start -= 1
    ns: dict = {}
    for earlier in page[start:page.index(block) + 1]:
        if "setup" in earlier.options:
            ns = SETUPS[earlier.options["setup"]]()
        exec(compile(earlier.code, earlier.id, "exec"), ns)  # noqa: S102
    if "check" in block.options:
        CHECKS[block.options["check"]](ns)
    fit_and_report_every_run(tmp_path)


def fit_and_report_every_run(root: Path) -> None:
    """`smoothprobe fit RUN` and `smoothprobe report RUN`, no flags, accept every run a block wrote."""
    from click.testing import CliRunner

    for run in sorted(p.parent for p in root.rglob("run.json")):
        fitted = CliRunner().invoke(cli, ["fit", str(run)])
        assert fitted.exit_code == 0, f"fit {run.relative_to(root)}: {fitted.output}"
        rows = smoothprobe.fit.SmoothnessFit.from_json(run / "fit.json").data["rows_used"]
        assert rows >= 30, f"{run.relative_to(root)}: {rows} rows"
        reported = CliRunner().invoke(cli, ["report", str(run)])
        assert reported.exit_code == 0, f"report {run.relative_to(root)}: {reported.output}"
        *notes, last = reported.output.splitlines()
        assert last == f"report written to {run / 'report.html'}" and (run / "report.html").is_file()
        assert all(n.startswith("note: ") for n in notes), reported.output  # nothing but its own words


def commands(code: str) -> list[list[str]]:
    """The shell commands of a block: continuation lines joined, split at `&&`."""
    text = code.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words:
                out.append(words)
    return out


def check_cli(args: list[str]) -> None:
    """`smoothprobe ARGS`: a known command, known options, values its option types accept."""
    command = cli.commands.get(args[0])
    assert command is not None, f"unknown command {args[0]!r}"
    options = {name: p for p in command.params for name in (*p.opts, *p.secondary_opts)}
    i = 1
    while i < len(args):
        word = args[i]
        if word.startswith("-"):
            name, _, value = word.partition("=")
            assert name in options, f"{args[0]}: unknown option {name}"
            param = options[name]
            if not param.is_flag and not value:
                i += 1
                value = args[i]
            if value and not isinstance(param.type, click.Path):
                param.type.convert(value, param, None)
        i += 1


def check_pip(args: list[str]) -> None:
    """`pip install` of the project or its extras: every extra named exists."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = re.findall(r"^([\w-]+) = ", section, flags=re.MULTILINE)
    for word in args[2:]:
        for named in re.findall(r"\[([\w,-]+)\]", word):
            assert set(named.split(",")) <= set(extras), word


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BASH])
def test_bash_block_is_valid(block):
    for words in commands(block.code):
        if words[0] == "smoothprobe":
            check_cli(words[1:])
        elif words[0] == "torchrun":
            check_cli(words[words.index("smoothprobe.cli.main") + 1:])
        elif words[:2] == ["pip", "install"]:
            check_pip(words)
        else:
            assert words[0] in OTHER_PROGRAMS, f"{block.id}: unknown program {words[0]}"


@pytest.mark.slow
def test_compiled_model_takes_the_full_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup = classifier()
    plain_loop(torch.compile(setup["model"]), setup["optimizer"], "runs/full", setup["loader"][:4],
               preset="full", every=2, heavy_every=1)
    probed = smoothprobe.load_run("runs/full").steps.dropna(subset=["curv_hvp"])
    assert len(probed) == 2 and np.isfinite(probed[["curv_hvp", "top_eig", "trace"]]).all().all()

"""The `smoothprobe` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from smoothprobe.errors import SmoothprobeError


class UsageFailure(click.ClickException):
    """A library error shown as one line, exit code 2 (like click's own usage errors)."""

    exit_code = 2


def library_errors(func: Callable) -> Callable:
    """Turn SmoothprobeError into one line on stderr and exit code 2, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SmoothprobeError as exc:
            raise UsageFailure(str(exc)) from None

    return wrapper


def training_options(func: Callable) -> Callable:
    """Options shared by `train` and `record` (the fields of TrainConfig)."""
    from smoothprobe.optim import OPTIMIZERS
    from smoothprobe.schedule.baseline import DECAYS, WARMUP_SHAPES
    from smoothprobe.tasks import TASKS

    options = [
        click.option("--task", type=click.Choice(TASKS), default="markov", show_default=True,
                     help="Built-in task: quadratic (known Hessian, f*=0), markov (f* = entropy rate), lm (bytes or --data)."),
        click.option("--model", type=click.Choice(["tiny", "small", "124m"]), default="tiny", show_default=True,
                     help="LLaMA preset for the markov and lm tasks."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True),
        click.option("--lr", type=float, default=None, help="Peak learning rate [default: per optimizer]."),
        click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True),
        click.option("--seq-len", type=click.IntRange(min=2), default=64, show_default=True),
        click.option("--accum", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Gradient-accumulation micro-batches per step."),
        click.option("--schedule", type=click.Choice(DECAYS), default="cosine", show_default=True),
        click.option("--warmup", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Warm-up: a fraction of --steps if below 1, else a number of steps."),
        click.option("--warmup-shape", type=click.Choice(WARMUP_SHAPES), default="linear", show_default=True),
        click.option("--min-lr-ratio", type=click.FloatRange(0, 1), default=0.1, show_default=True,
                     help="Final lr as a fraction of the peak."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True),
        click.option("--clip", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="Gradient-norm clipping threshold (0 disables)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N]."),
        click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True),
        click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True),
        click.option("--flush-every", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Steps between appends to disk (a crash loses at most this many)."),
        click.option("--data", type=click.Path(exists=True), default=None,
                     help="lm task: a text file or folder, a uint16 .bin token file, or a folder with train.bin/val.bin."),
        click.option("--vocab-size", type=click.IntRange(min=2), default=None, help="Vocabulary of .bin token data."),
        click.option("--markov-vocab", type=click.IntRange(min=2), default=None, help="markov: vocabulary size [16]."),
        click.option("--markov-order", type=click.IntRange(min=1), default=None, help="markov: chain order [2]."),
        click.option("--noise", type=click.FloatRange(min=0), default=None, help="quadratic: mini-batch noise scale [0]."),
        click.option("--cond", type=click.FloatRange(min=1), default=None, help="quadratic: condition number [100]."),
        click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory to write."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
        click.option("--overwrite", is_flag=True, help="Replace an existing run in --out."),
        click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def config_from_options(kw: dict):
    """Pop TrainConfig fields (and task options) out of click's keyword arguments."""
    from smoothprobe.train import TrainConfig

    renames = {"markov_vocab": "vocab", "markov_order": "order", "noise": "noise", "cond": "cond"}
    task_options = {new: kw.pop(old) for old, new in renames.items() if kw.get(old) is not None}
    for old in renames:
        kw.pop(old, None)
    fields = {k: kw.pop(k) for k in list(kw) if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**fields, task_options=task_options)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smoothprobe")
def main() -> None:
    """smoothprobe: measure loss smoothness along training, fit (rho, K0, K1, K_rho), derive warm-up.

    Typical flow: `record` a run with curvature probes, `fit` the smoothness model, `train
    --adaptive` with the fitted schedule, `report` the result. `demo` does all of it on built-in data.
    """


@main.command()
@training_options
@library_errors
def train(**kw) -> None:
    """Train on a built-in task and stream loss, lr and norms into a run directory."""
    from smoothprobe.train import train as run_training

    out, resume, overwrite, quiet = kw.pop("out"), kw.pop("resume"), kw.pop("overwrite"), kw.pop("no_progress")
    config = config_from_options(kw)
    path = run_training(config, out, resume=resume, overwrite=overwrite, progress=not quiet)
    click.echo(f"run written to {Path(path)}")


@main.command()
@training_options
@click.option("--preset", type=click.Choice(["cheap", "standard", "full"]), default="standard", show_default=True,
              help="cheap: norms only; standard: + secant K; full: + FD/HVP curvature, top eigenvalue, trace.")
@click.option("--probes", default=None,
              help="Comma-separated probe list overriding --preset (norms,secant,curv_fd,curv_hvp,top_eig,trace).")
@click.option("--every", type=click.IntRange(min=1), default=10, show_default=True, help="Probe every N steps.")
@click.option("--overhead", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Instead of --every: adapt the interval so probes cost this fraction of training time.")
@click.option("--heavy-every", type=click.IntRange(min=1), default=10, show_default=True,
              help="Top eigenvalue and trace run on every N-th probed step.")
@click.option("--nuclear", type=click.Choice(["estimate", "exact"]), default="estimate", show_default=True,
              help="Nuclear norms (Muon's dual) by Gram eigenvalues or exact SVD.")
@library_errors
def record(**kw) -> None:
    """Train like `train` and record curvature probes (secant K in the optimizer's geometry, ...)."""
    from smoothprobe.train import train as run_training

    probes = {
        "preset": kw.pop("preset"),
        "probes": kw.pop("probes").split(",") if kw.get("probes") else None,
        "every": kw.pop("every"),
        "overhead": kw.pop("overhead"),
        "heavy_every": kw.pop("heavy_every"),
        "nuclear": kw.pop("nuclear"),
    }
    kw.pop("probes", None)
    out, resume, overwrite, quiet = kw.pop("out"), kw.pop("resume"), kw.pop("overwrite"), kw.pop("no_progress")
    config = config_from_options(kw)
    config.probes = probes
    path = run_training(config, out, resume=resume, overwrite=overwrite, progress=not quiet)
    click.echo(f"run written to {Path(path)}")


if __name__ == "__main__":
    main()

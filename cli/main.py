"""The `smoothprobe` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from smoothprobe import distributed
from smoothprobe.errors import SmoothprobeError, Terminated, one_line
from smoothprobe.store import OWN_FILES, disk_full


class UsageFailure(click.ClickException):
    """A failure shown as one line on stderr: exit code 2 for a library error (like click's own
    usage errors), 130 for Ctrl-C, 143 for SIGTERM, 1 for anything else."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Finite(click.FloatRange):
    """A float option (optionally within a range) that refuses nan and inf."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


PARAMETER_FLAGS = {
    "lr": "--lr", "steps": "--steps", "batch_size": "--batch-size", "accum": "--accum", "warmup": "--warmup",
    "min_lr_ratio": "--min-lr-ratio", "weight_decay": "--weight-decay", "clip": "--clip", "device": "--device",
    "data": "--data", "every": "--every", "overhead": "--overhead", "heavy_every": "--heavy-every",
    "probes": "--probes", "preset": "--preset", "hvp": "--hvp", "f_star": "--f-star", "div": "--div", "delta_peak": "--delta-peak",
    "max_warmup": "--max-warmup", "cooldown": "--cooldown", "pilot": "--pilot", "refit_every": "--refit-every",
    "f_star_every": "--f-star-every", "allow_unsupported": "--allow-unsupported-fit", "fit": "--fit",
    "own_peak": "--own-peak",
    "fsdp": "--fsdp", "rho": "--rho", "quantile": "--quantile", "bootstrap": "--bootstrap", "window": "--window",
    "column": "--column", "delta_from": "--delta-from", "eval_every": "--eval-every",
    "flush_every": "--flush-every", "checkpoint_every": "--checkpoint-every", "resume": "--resume",
    "overwrite": "--overwrite", "vocab_size": "--vocab-size",
}
"""Library parameter names and the flags that set them, for error messages."""


def as_flags(message: str) -> str:
    """A library message with parameter names replaced by their CLI flags ("lr must be" → "--lr must be")."""
    return re.sub(r"(?<![\w.'-])(" + "|".join(sorted(PARAMETER_FLAGS, key=len, reverse=True)) + r")(?= must| and | or | is | needs| \(|:|,|$)",
                  lambda m: PARAMETER_FLAGS[m.group(1)], message)


SEED = click.IntRange(0, 2**32 - 1)
"""Seeds: what numpy and torch both accept."""
PACKAGE_DIRS = tuple(str(Path(p).resolve().parent) + "/" for p in (distributed.__file__, __file__))
"""Where smoothprobe's own code lives: warnings raised from there are the tool's own words."""


def ignore_further_signals() -> None:
    """After the first Ctrl-C or SIGTERM the command is closing: a second one is ignored instead of
    interrupting the close (or an exit handler) with a traceback."""
    with contextlib.suppress(ValueError):  # signal handlers live in the main thread only
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def own_warnings() -> Iterator[list[str]]:
    """Collect the warnings raised inside the block; yields the list that receives, once each, the
    messages smoothprobe itself raised (as flags). Warnings of other libraries (numpy's "invalid
    value", torch's, matplotlib's missing glyphs) are not shown."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield notes
        finally:
            own = [w for w in caught if str(Path(w.filename).resolve()).startswith(PACKAGE_DIRS)]
            notes.extend(dict.fromkeys(as_flags(" ".join(str(w.message).split())) for w in own))


def library_errors(func: Callable) -> Callable:
    """One line on stderr instead of a traceback: SmoothprobeError exits 2 (so does an OSError about a
    path, e.g. a symlink loop, a name too long or a full disk), Ctrl-C 130, SIGTERM 143, any other
    exception 1 (a run has written its status and reason to run.json by then). Warnings smoothprobe
    raised are printed once each as `note:` lines after a command that succeeded; others not at all."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with own_warnings() as notes:
                result = func(*args, **kwargs)
            for note in notes:
                click.echo(f"note: {note}", err=True)
            return result
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except SmoothprobeError as exc:
            raise UsageFailure(as_flags(one_line(exc))) from None
        except KeyboardInterrupt:
            ignore_further_signals()
            raise UsageFailure("interrupted (Ctrl-C)", exit_code=130) from None
        except Terminated:
            ignore_further_signals()
            raise UsageFailure("terminated (SIGTERM)", exit_code=143) from None
        except RecursionError:
            raise UsageFailure("input nests too deeply to read (not a file smoothprobe wrote)") from None
        except OSError as exc:
            if disk_full(exc):
                where = f" writing {exc.filename}" if exc.filename else ""
                raise UsageFailure(f"disk full{where}: free some space (a run being written is closed as "
                                   "crashed, reason 'disk full')") from None
            if exc.filename is not None:
                raise UsageFailure(f"cannot use {exc.filename}: {exc.strerror or one_line(exc)}") from None
            raise UsageFailure(f"{type(exc).__name__}: {one_line(exc)}", exit_code=1) from None
        except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into one line
            raise UsageFailure(f"{type(exc).__name__}: {one_line(exc)}", exit_code=1) from None

    return wrapper


def training_options(func: Callable | None = None, *, single_run: bool = True) -> Callable:
    """Options shared by `train`, `record` and `sweep` (the fields of TrainConfig); `single_run`
    adds --warmup, --resume and --overwrite, which a sweep sets itself."""
    if func is None:
        return functools.partial(training_options, single_run=single_run)
    from smoothprobe.optim import OPTIMIZERS
    from smoothprobe.schedule.baseline import DECAYS, WARMUP_SHAPES
    from smoothprobe.tasks import TASKS

    options = [
        click.option("--task", type=click.Choice(TASKS), default="markov", show_default=True,
                     help="Built-in task: quadratic (known Hessian, f*=0), markov (f* = entropy rate), lm (bytes or --data)."),
        click.option("--model", type=click.Choice(["tiny", "small", "124m"]), default="tiny", show_default=True,
                     help="LLaMA preset for the markov and lm tasks."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True),
        click.option("--lr", type=Finite(min=0, min_open=True), default=None,
                     help="Peak learning rate [default: per optimizer]."),
        click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True),
        click.option("--seq-len", type=click.IntRange(min=2), default=64, show_default=True),
        click.option("--accum", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Gradient-accumulation micro-batches per step."),
        click.option("--schedule", type=click.Choice(DECAYS), default="cosine", show_default=True),
        click.option("--warmup-shape", type=click.Choice(WARMUP_SHAPES), default="linear", show_default=True),
        click.option("--min-lr-ratio", type=Finite(0, 1), default=0.1, show_default=True,
                     help="Final lr as a fraction of the peak."),
        click.option("--weight-decay", type=Finite(min=0), default=0.0, show_default=True),
        click.option("--clip", type=Finite(min=0), default=1.0, show_default=True,
                     help="Gradient-norm clipping threshold (0 disables)."),
        click.option("--seed", type=SEED, default=0, show_default=True),
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
        click.option("--noise", type=Finite(min=0), default=None, help="quadratic: mini-batch noise scale [0]."),
        click.option("--cond", type=Finite(min=1), default=None, help="quadratic: condition number [100]."),
        click.option("--adaptive", is_flag=True,
                     help="Schedule the lr by eta(Delta) = Delta / K(Delta) instead of --schedule/--warmup."),
        click.option("--fit", "fit_path", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Adaptive: constants from this fit.json (implies --adaptive; --lr rescales the peak)."),
        click.option("--f-star", default=None,
                     help="Adaptive without --fit: f* as a number, or 'auto' (re-estimated from the loss "
                          "curve during training) [default: the task's exact f*]."),
        click.option("--div", type=Finite(min=1, min_open=True), default=10.0, show_default=True,
                     help="Adaptive: the first step runs at lr/div."),
        click.option("--delta-peak", type=Finite(min=0, min_open=True), default=None,
                     help="Adaptive: gap Delta' where the lr peaks [default: chosen from the geometry]."),
        click.option("--adaptive-decay", type=click.Choice(["cosine", "linear", "model"]), default="cosine",
                     show_default=True, help="Adaptive: decay after the peak."),
        click.option("--max-warmup", type=Finite(min=0, min_open=True), default=None,
                     help="Adaptive: an explicit bound on the warm-up (fraction of --steps if below 1, else "
                          "steps) [default: none; the warm-up ends when the loss crosses f* + Delta']."),
        click.option("--cooldown", type=Finite(min=0, max=1, max_open=True), default=0.2, show_default=True,
                     help="Adaptive: the fraction of --steps kept at the end for the decay, from the lr in use, "
                          "when the loss has not crossed f* + Delta' by then (0: none)."),
        click.option("--pilot", type=Finite(min=0, min_open=True), default=None,
                     help="Adaptive closed loop: record probes for this fraction (below 1) or number of steps "
                          "under the practical schedule, fit K(Delta), and let the fit drive the rest."),
        click.option("--own-peak", is_flag=True,
                     help="Adaptive with --pilot: once the fit decides, run at its own peak (the largest eta over "
                          "the measured gaps) instead of rescaling it to --lr; without --lr the pilot itself runs "
                          "from the optimizer's default LR."),
        click.option("--refit-every", type=click.IntRange(min=1), default=None,
                     help="Adaptive, with `record`: refit the constants K(Delta) to the secant probes every N "
                          "steps and adopt them once the data supports the model."),
        click.option("--f-star-every", type=click.IntRange(min=1), default=None,
                     help="Adaptive with --f-star auto: re-estimate f* from the loss curve every N steps "
                          "[default: steps/20, at least 10]."),
        click.option("--allow-unsupported-fit", is_flag=True,
                     help="Adaptive: let a fit whose verdict is not 'supported' drive the schedule (warns)."),
        click.option("--fsdp", is_flag=True,
                     help="Under torchrun: shard the model with FSDP2 instead of replicating it with DDP "
                          "(probes: norms, secant, curv_fd; the others with --hvp fd)."),
        click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory to write."),
        click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
    ]
    if single_run:
        options += [
            click.option("--warmup", type=Finite(min=0), default=0.0, show_default=True,
                         help="Warm-up: a fraction of --steps if below 1, else a number of steps."),
            click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
            click.option("--overwrite", is_flag=True,
                         help="Replace an existing run in --out: deletes only the files smoothprobe writes there "
                              f"({', '.join(OWN_FILES)}); your own files stay."),
        ]
    for option in reversed(options):
        func = option(func)
    return func


def config_from_options(kw: dict):
    """Pop TrainConfig fields (and task options) out of click's keyword arguments."""
    from smoothprobe.train import TrainConfig

    renames = {"markov_vocab": "vocab", "markov_order": "order", "noise": "noise", "cond": "cond"}
    owners = {"markov_vocab": "markov", "markov_order": "markov", "noise": "quadratic", "cond": "quadratic"}
    wrong = ["--" + k.replace("_", "-") for k, task in owners.items() if kw.get(k) is not None and kw["task"] != task]
    if wrong:
        raise click.UsageError(f"{', '.join(wrong)}: not an option of --task {kw['task']} "
                               f"(--markov-vocab/--markov-order are for markov, --noise/--cond for quadratic)")
    task_options = {new: kw.pop(old) for old, new in renames.items() if kw.get(old) is not None}
    for old in renames:
        kw.pop(old, None)
    adaptive_keys = ("adaptive", "fit_path", "f_star", "div", "delta_peak", "adaptive_decay", "max_warmup",
                     "cooldown", "pilot", "own_peak", "refit_every", "f_star_every", "allow_unsupported_fit")
    adaptive = {k: kw.pop(k) for k in adaptive_keys}
    fields = {k: kw.pop(k) for k in list(kw) if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**fields, task_options=task_options, adaptive=adaptive_options(adaptive))


def adaptive_options(opts: dict):
    """The AdaptiveConfig from the CLI flags (None: baseline schedule)."""
    from smoothprobe.config import AdaptiveConfig

    if not opts["adaptive"] and opts["fit_path"] is None and opts["pilot"] is None:
        defaults = {"div": 10.0, "adaptive_decay": "cosine", "own_peak": False, "allow_unsupported_fit": False,
                    "cooldown": 0.2}
        given = [k for k in ("f_star", "delta_peak", "max_warmup", "cooldown", "refit_every", "f_star_every", "div",
                             "adaptive_decay", "own_peak", "allow_unsupported_fit") if opts[k] != defaults.get(k)]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise click.UsageError(f"{flags}: only for an adaptive schedule; add --adaptive, --fit or --pilot")
        return None
    f_star = parse_number_or_auto(opts["f_star"], "--f-star")
    return AdaptiveConfig(fit=opts["fit_path"], pilot=opts["pilot"], f_star=f_star, div=opts["div"],
                          delta_peak=opts["delta_peak"], decay=opts["adaptive_decay"],
                          max_warmup=opts["max_warmup"], cooldown=opts["cooldown"],
                          refit_every=opts["refit_every"],
                          f_star_every=opts["f_star_every"], allow_unsupported=opts["allow_unsupported_fit"],
                          own_peak=opts["own_peak"])


RESUME_KEEPS = ("out", "resume", "overwrite", "no_progress", "steps")
"""Flags `--resume` accepts besides the stored config (overwrite is refused by the library)."""

CONFIG_PATHS = {
    "markov_vocab": "task_options.vocab", "markov_order": "task_options.order", "noise": "task_options.noise",
    "cond": "task_options.cond", "adaptive": "adaptive", "fit_path": "adaptive.fit", "f_star": "adaptive.f_star",
    "div": "adaptive.div", "delta_peak": "adaptive.delta_peak", "adaptive_decay": "adaptive.decay",
    "max_warmup": "adaptive.max_warmup", "cooldown": "adaptive.cooldown", "pilot": "adaptive.pilot", "refit_every": "adaptive.refit_every",
    "f_star_every": "adaptive.f_star_every", "allow_unsupported_fit": "adaptive.allow_unsupported",
    "preset": "probes.preset", "probes": "probes.probes", "every": "probes.every", "overhead": "probes.overhead",
    "heavy_every": "probes.heavy_every", "nuclear": "probes.nuclear",
}
"""Where a flag's value lives in TrainConfig, for flags whose parameter is not a TrainConfig field."""


def setting(config: Any, path: str) -> Any:
    """The value at a dotted `path` of a TrainConfig (a nested config that is set reads as True)."""
    value = config
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return True if dataclasses.is_dataclass(value) else value


def resume_config(requested, out: str):
    """For `--resume`: the stored config, with --steps when given. Flags passed explicitly that
    differ from the stored config are refused in one line naming them."""
    from smoothprobe.train import stored_config

    ctx = click.get_current_context()
    stored = stored_config(out)
    explicit = [name for name in ctx.params if name not in RESUME_KEEPS
                and ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]
    changed = [name for name in explicit
               if setting(requested, CONFIG_PATHS.get(name, name)) != setting(stored, CONFIG_PATHS.get(name, name))]
    if changed:
        flags = ", ".join("--" + name.replace("_", "-").replace("fit-path", "fit") for name in changed)
        raise SmoothprobeError(f"--resume continues the run in {out} with its stored settings; {flags} differ "
                               "from them (only --steps may change; start a new run with --overwrite instead)")
    steps = ctx.get_parameter_source("steps") in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return dataclasses.replace(stored, steps=requested.steps) if steps else stored


def run_training(config, out: str, resume: bool, overwrite: bool, quiet: bool) -> None:
    """Train (or resume) the run in --out and say where it is."""
    from smoothprobe.train import train

    if resume and not overwrite:
        config = resume_config(config, out)
    path = train(config, out, resume=resume, overwrite=overwrite, progress=not quiet)
    if distributed.is_main():
        click.echo(f"run written to {Path(path)}")


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
    """Train on a built-in task and stream loss, lr and norms into a run directory.

    Exit codes: 0 done, 2 bad input or data (or a diverged run), 130 Ctrl-C, 143 SIGTERM (the run is closed with its
    status and rows either way), 1 any other failure."""
    out, resume, overwrite, quiet = (kw.pop(k) for k in ("out", "resume", "overwrite", "no_progress"))
    run_training(config_from_options(kw), out, resume, overwrite, quiet)


def heavy_probes() -> list[str]:
    """Names of the probes `--heavy-every` governs, from the probe registry (`Probe.heavy`)."""
    from smoothprobe.probes import PROBES

    return [name for name, probe in PROBES.items() if probe.heavy]


@main.command()
@training_options
@click.option("--preset", type=click.Choice(["cheap", "standard", "full"]), default="standard", show_default=True,
              help="cheap: norms only; standard: + secant K; full: + FD/HVP curvature, curvature in the optimizer's "
                   "norm (curv_dual), both Hessian spectrum ends, trace.")
@click.option("--probes", default=None,
              help="Comma-separated probe list overriding --preset (norms,secant,curv_fd,curv_hvp,curv_dual,top_eig,"
                   "trace).")
@click.option("--every", type=click.IntRange(min=1), default=10, show_default=True, help="Probe every N steps.")
@click.option("--overhead", type=Finite(0, 1, min_open=True, max_open=True), default=None,
              help="Instead of --every: adapt the interval so probes cost this fraction of training time.")
@click.option("--heavy-every", type=click.IntRange(min=1), default=10, show_default=True,
              help=f"The heavy probes ({', '.join(heavy_probes())}) run on every N-th probed step.")
@click.option("--hvp", type=click.Choice(["exact", "fd", "forward"]), default="exact", show_default=True,
              help="Hessian-vector products of the heavy probes: exact (double backward), fd (a central "
                   "difference of gradients: the memory of one gradient, also under --fsdp; fp32 only) or "
                   "forward (forward-over-reverse: no kept graph, slower on CPU).")
@click.option("--nuclear", type=click.Choice(["estimate", "exact"]), default="estimate", show_default=True,
              help="Nuclear norms (Muon's dual) by Gram eigenvalues or exact SVD.")
@library_errors
def record(**kw) -> None:
    """Train like `train` and record curvature probes (secant K in the optimizer's geometry, ...)."""
    from smoothprobe.config import ProbeConfig

    listed = kw.pop("probes")
    probes = ProbeConfig(preset=kw.pop("preset"), probes=listed.split(",") if listed else None,
                         every=kw.pop("every"), overhead=kw.pop("overhead"), heavy_every=kw.pop("heavy_every"),
                         nuclear=kw.pop("nuclear"), hvp=kw.pop("hvp"))
    out, resume, overwrite, quiet = (kw.pop(k) for k in ("out", "resume", "overwrite", "no_progress"))
    config = config_from_options(kw)
    config.probes = probes
    run_training(config, out, resume, overwrite, quiet)


@main.command()
@training_options(single_run=False)
@click.option("--warmups", "warmup_grid", default="0,0.01,0.02,0.05,0.1,0.2", show_default=True,
              help="Comma-separated warm-up grid (fractions of --steps if below 1, else steps).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Seeds per configuration.")
@click.option("--overwrite", is_flag=True, help="Rerun runs in --out whose stored config differs from this sweep's "
                                                "(deleting only the files smoothprobe wrote in them).")
@library_errors
def sweep(**kw) -> None:
    """Run a warm-up grid (and with --adaptive the adaptive schedule) over seeds; write summary.csv.

    Finished runs already in --out with the same config are reused, so an interrupted sweep
    continues where it stopped; a run with another config is refused unless --overwrite."""
    from smoothprobe.sweep import sweep as run_sweep

    try:
        grid = [float(w) for w in kw.pop("warmup_grid").split(",")]
    except ValueError:
        raise click.BadParameter("expected comma-separated numbers", param_hint="--warmups") from None
    out, seeds, quiet, overwrite = kw.pop("out"), kw.pop("seeds"), kw.pop("no_progress"), kw.pop("overwrite")
    config = config_from_options(kw)
    summary = run_sweep(config, out, grid, seeds, adaptive=config.adaptive, progress=not quiet, overwrite=overwrite)
    click.echo(summary.to_string(index=False))
    click.echo(f"summary written to {Path(out) / 'summary.csv'}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default="smoothprobe-demo", show_default=True,
              help="Folder for the runs, fit.json and report.html (replaced if it exists).")
@click.option("--steps", type=click.IntRange(min=50), default=300, show_default=True, help="Steps per run.")
@library_errors
def demo(out, steps) -> None:
    """Record, fit, train adaptively and report on built-in data (a few minutes on 2 CPU cores)."""
    from smoothprobe.demo import demo as run_demo

    report = run_demo(out, steps=steps)
    click.echo(f"report: {report}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--fit", "fits", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="fit.json of the i-th RUN_DIR (repeatable, in order) [default: RUN_DIR/fit.json, "
                   "else fitted on the fly].")
@click.option("--label", "labels", multiple=True, help="Name of the i-th run (repeatable) [default: its folder].")
@click.option("--title", default=None, help="Report title.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write [default: RUN_DIR/report.html for one run; for N runs "
                   "report-N-runs.html in the folder that holds them all, else in the current folder].")
@library_errors
def report(run_dirs, fits, labels, title, out) -> None:
    """Write one self-contained HTML curvature report (no network needed) for one or several runs,
    and print the path written."""
    from smoothprobe.report import write_report

    if len(fits) > len(run_dirs):
        raise click.BadParameter(f"{len(fits)} fits for {len(run_dirs)} runs", param_hint="--fit")
    chosen = [
        fits[i] if i < len(fits) else (str(Path(d) / "fit.json") if (Path(d) / "fit.json").is_file() else None)
        for i, d in enumerate(run_dirs)
    ]
    path = write_report(list(run_dirs), out, fits=chosen, title=title, labels=list(labels) or None)
    click.echo(f"report written to {path}")


def parse_window(value: str | None) -> tuple[int | None, int | None] | None:
    """START:END (either side may be empty) into a step window."""
    if value is None:
        return None
    try:
        start, end = value.split(":")
        return (int(start) if start else None, int(end) if end else None)
    except ValueError:
        raise click.BadParameter(f"expected START:END with integer steps, got {value!r}", param_hint="--window") from None


def parse_number_or_auto(value: str | None, name: str) -> float | str | None:
    """A finite float, the word 'auto', or None."""
    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise click.BadParameter(f"expected a number or 'auto', got {value!r} (numbers must be finite)", param_hint=name)
    return number


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--f-star", default=None, help="f* as a number or 'auto' (fitted to the loss curve) [default: the task's exact f*].")
@click.option("--rho", default="2", show_default=True, help="Exponent rho > 1, or 'auto' (chosen by held-out pinball loss).")
@click.option("--window", default=None, help="Steps START:END to fit (END exclusive; either side may be empty).")
@click.option("--quantile", type=Finite(0, 1, min_open=True, max_open=True), default=0.9, show_default=True,
              help="Upper-envelope quantile (K is an upper bound).")
@click.option("--bootstrap", type=click.IntRange(0, 10_000), default=200, show_default=True,
              help="Block-bootstrap resamples for the intervals (0 disables; at most 10000).")
@click.option("--column", default="secant_K", show_default=True, help="Probe column to model (e.g. secant_K_euclid, curv_hvp).")
@click.option("--delta-from", type=click.Choice(["loss", "loss_after"]), default="loss", show_default=True,
              help="Delta from the pre-step loss or the post-step loss on the same batch.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Processes for the bootstrap.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="fit.json to write [default: RUN_DIR/fit.json].")
@library_errors
def fit(run_dir, f_star, rho, window, quantile, bootstrap, column, delta_from, seed, jobs, out) -> None:
    """Fit K(Delta) = K0 + K1 Delta + K_rho Delta^rho to a recorded run and say whether the data supports it."""
    from smoothprobe.fit import fit_run
    from smoothprobe.store import load_run

    f_star, rho, window = parse_number_or_auto(f_star, "--f-star"), parse_number_or_auto(rho, "--rho"), parse_window(window)
    path = Path(out) if out else Path(run_dir) / "fit.json"
    if out and not path.parent.is_dir():
        raise click.BadParameter(f"directory {path.parent} does not exist", param_hint="--out")
    run = load_run(run_dir)
    for warning in run.warnings:
        click.echo(f"warning: {warning}", err=True)
    result = fit_run(run, column=column, f_star=f_star, rho=rho, window=window, quantile=quantile,
                     bootstrap=bootstrap, seed=seed, delta_from=delta_from, n_jobs=jobs)
    result.to_json(path)
    click.echo(result.summary_table())
    click.echo(f"fit written to {path}")


if __name__ == "__main__":
    main()

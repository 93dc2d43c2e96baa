"""The `smoothprobe` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from smoothprobe import distributed
from smoothprobe.config import (
    SEED_MAX,
    AdaptiveConfig,
    Option,
    ProbeConfig,
    TrainConfig,
    defaults,
    offered,
    task_parameters,
    type_names,
)
from smoothprobe.demo import MIN_STEPS
from smoothprobe.errors import SmoothprobeError, Terminated, one_line
from smoothprobe.fit.data import LOSS_COLUMNS
from smoothprobe.fit.pipeline import MAX_BOOTSTRAP
from smoothprobe.store import OWN_FILES, disk_full, refuse_replacing


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


class NumberOrAuto(click.ParamType):
    """A finite number or the word 'auto' (f*, rho): the one place these options are parsed."""

    name = "number|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | str:
        if isinstance(value, float):
            return value
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise click.BadParameter(f"expected a number or 'auto', got {value!r} (numbers must be finite)", ctx,
                                     param, param_hint=param.opts[0] if param else None)
        return number


def named_path(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An --out that names something: an empty one would mean the current folder, which no one types on purpose."""
    if value is not None and not value.strip():
        raise click.BadParameter("is empty: give the path to write", ctx, param)
    return value


def comma_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """A comma-separated option's items (None when it is not given; an empty one gives none, which the
    option's check refuses)."""
    return None if value is None else [item.strip() for item in value.split(",") if item.strip()]


def option_type(f: dataclasses.Field, how: Option) -> click.ParamType | None:
    """The click type of config field `f`'s option: its choices, an existing path, or a number in its range."""
    if how.choices is not None:
        return click.Choice(how.choices() if callable(how.choices) else how.choices)
    if how.kind in ("path", "file"):
        return click.Path(exists=True, dir_okay=how.kind == "path")
    if how.kind == "number_or_auto":
        return NumberOrAuto()
    kinds = type_names(f)
    bounds = {"min": how.low, "max": how.high, "min_open": how.low_open, "max_open": how.high_open}
    if "int" in kinds:
        return click.IntRange(**bounds)
    return Finite(**bounds) if "float" in kinds else None


def field_option(f: dataclasses.Field, how: Option) -> Callable:
    """The click option of config field `f` (named after it), with the default, help, range and
    choices its Option declares."""
    flag = how.flag or "--" + f.name.replace("_", "-")
    text = how.help() if callable(how.help) else how.help
    if how.default_text is not None:
        text += f" [default: {how.default_text}]"
    if type_names(f) == {"bool"}:
        return click.option(flag, f.name, is_flag=True, default=f.default, help=text or None)
    if type_names(f) == {"bool", "None"}:  # on, off, or the config's own default (None)
        return click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=text or None)
    return click.option(flag, f.name, type=option_type(f, how), default=f.default, help=text or None,
                        show_default=True, callback=comma_list if how.kind == "list" else None)


def config_options(cls: type, skip: tuple[str, ...] = ()) -> list[Callable]:
    """The click options of the fields config class `cls` offers (but `skip`), in declaration order."""
    return [field_option(f, how) for f, how in offered(cls) if f.name not in skip]


def options(*decorators: Callable) -> Callable:
    """One decorator applying click option `decorators`, the first listed first in --help."""
    def apply(func: Callable) -> Callable:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def flag_of(name: str) -> str:
    """The flag of the current command that sets library parameter `name` (options are named after the
    parameter they set); `name` itself when the command has none."""
    params = {param.name: "/".join([param.opts[0], *param.secondary_opts[:1]])  # on/off pairs: both
              for param in click.get_current_context().command.params if param.opts}
    return params.get(name, name)


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
    messages smoothprobe itself raised. Warnings of other libraries (numpy's "invalid
    value", torch's, matplotlib's missing glyphs) are not shown."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield notes
        finally:
            own = [w for w in caught if str(Path(w.filename).resolve()).startswith(PACKAGE_DIRS)]
            notes.extend(dict.fromkeys(" ".join(str(w.message).split()) for w in own))


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
            raise UsageFailure(one_line(exc.worded(flag_of))) from None
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


TASK_OPTIONS = {
    "markov_vocab": ("markov", "vocab", click.IntRange(min=2), "markov: vocabulary size."),
    "markov_order": ("markov", "order", click.IntRange(min=1), "markov: chain order."),
    "noise": ("quadratic", "noise", Finite(min=0), "quadratic: mini-batch noise scale."),
    "cond": ("quadratic", "cond", Finite(min=1), "quadratic: condition number."),
}
"""Task options offered as flags: the task, its parameter, the flag's type and help (the default
shown is the task's own)."""


def task_option(name: str) -> Callable:
    """The flag `--name` for a task parameter of TASK_OPTIONS; unset, the task's default applies."""
    task, parameter, kind, text = TASK_OPTIONS[name]
    default = task_parameters(task)[parameter].default
    return click.option("--" + name.replace("_", "-"), name, type=kind, default=None, help=f"{text} [default: {default}]")


def training_options(func: Callable | None = None, *, single_run: bool = True) -> Callable:
    """Options shared by `train`, `record` and `sweep`: the fields of TrainConfig and AdaptiveConfig,
    the task options, and the run's own; `single_run` adds --warmup, --resume and --overwrite, which a
    sweep sets itself."""
    if func is None:
        return functools.partial(training_options, single_run=single_run)
    shared = [
        *config_options(TrainConfig, skip=() if single_run else ("warmup",)),
        *(task_option(name) for name in TASK_OPTIONS),
        click.option("--adaptive", is_flag=True,
                     help="Schedule the lr by eta(Delta) = Delta / K(Delta) instead of --schedule/--warmup."),
        *config_options(AdaptiveConfig),
        click.option("--out", callback=named_path, type=click.Path(file_okay=False), required=True, help="Run directory to write."),
        click.option("--no-progress", is_flag=True, help="Hide the progress bar."),
    ]
    if single_run:
        shared += [
            click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
            click.option("--overwrite", is_flag=True,
                         help="Replace an existing run in --out: deletes only the files smoothprobe writes there "
                              f"({', '.join(OWN_FILES)}); your own files stay."),
        ]
    return options(*shared)(func)


def pop_fields(kw: dict, cls: type) -> dict:
    """Pop the fields of config class `cls` that the CLI offers out of click's keyword arguments."""
    return {f.name: kw.pop(f.name) for f, _ in offered(cls) if f.name in kw}


def config_from_options(kw: dict) -> TrainConfig:
    """Pop TrainConfig's fields, its task options and its adaptive config out of click's keyword arguments."""
    by_task: dict[str, list[str]] = {}
    for name, (task, *_) in TASK_OPTIONS.items():
        by_task.setdefault(task, []).append(flag_of(name))
    wrong = [flag_of(name) for name, (task, *_) in TASK_OPTIONS.items() if kw.get(name) is not None and kw["task"] != task]
    if wrong:
        owners = "; ".join(f"{'/'.join(flags)} for {task}" for task, flags in by_task.items())
        raise click.UsageError(f"{', '.join(wrong)}: not an option of --task {kw['task']} ({owners})")
    task_options = {TASK_OPTIONS[name][1]: kw.pop(name) for name in TASK_OPTIONS if kw.get(name) is not None}
    for name in TASK_OPTIONS:
        kw.pop(name, None)
    adaptive = adaptive_options(kw.pop("adaptive"), pop_fields(kw, AdaptiveConfig))
    return TrainConfig(**pop_fields(kw, TrainConfig), task_options=task_options, adaptive=adaptive)


def adaptive_options(on: bool, given: dict) -> AdaptiveConfig | None:
    """The AdaptiveConfig of the adaptive flags (None: the baseline schedule, unless --adaptive, --fit or
    --pilot asks for one; then any other adaptive flag away from its default is refused)."""
    if not on and given["fit"] is None and given["pilot"] is None:
        changed = [flag_of(name) for name, default in defaults(AdaptiveConfig).items() if given[name] != default]
        if changed:
            raise click.UsageError(f"{', '.join(changed)}: only for an adaptive schedule; add --adaptive, --fit or "
                                   "--pilot")
        return None
    return AdaptiveConfig(**given)


def config_path(name: str) -> str | None:
    """Where the value of the option named `name` lives in a TrainConfig (a dotted path); None for the
    command's own options (--out, --resume, --overwrite, --no-progress)."""
    if name in TASK_OPTIONS:
        return f"task_options.{TASK_OPTIONS[name][1]}"
    if name == "probe_options":  # --probe-option fills ProbeConfig.options
        return "probes.options"
    nested = {"adaptive": AdaptiveConfig, "probes": ProbeConfig}
    path = next((f"{section}.{name}" for section, cls in nested.items() if name in defaults(cls)), name)
    return path if path.split(".")[0] in {f.name for f in dataclasses.fields(TrainConfig)} else None


def resume_config(requested, out: str):
    """For `--resume`: the stored config, with --steps when given. Options passed explicitly that
    differ from the stored config are refused by the library in one line naming them."""
    from smoothprobe.train import resumed_config

    ctx = click.get_current_context()
    given = {path: name for name in ctx.params if (path := config_path(name)) is not None
             and ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    return resumed_config(out, requested, given)


def finished_at(out: str, steps: int) -> bool:
    """Whether the run in `out` finished and ran `steps` steps already (a resume trains nothing)."""
    from smoothprobe.store import read_run_info

    info = read_run_info(Path(out))
    return info.get("status") == "finished" and (info.get("config") or {}).get("steps") == steps


def warn_thin_record(config) -> None:
    """One line when a record's probes every N steps will give a fit fewer rows than its verdict needs."""
    from smoothprobe.fit.data import VERDICT_ROWS, verdict_every

    probes = config.probes
    rows = probes.rows_over(config.steps)
    if rows is not None and rows < VERDICT_ROWS and distributed.is_main():
        denser = f"--every {verdict_every(config.steps)} or " if probes.every > 1 else ""
        click.echo(f"note: {config.steps} steps probed every {probes.every} give {rows} rows, and a fit's verdict "
                   f"needs {VERDICT_ROWS}: give {denser}--steps {VERDICT_ROWS * probes.every}", err=True)


def run_training(config, out: str, resume: bool, overwrite: bool, quiet: bool) -> None:
    """Train (or resume) the run in --out and say where it is."""
    from smoothprobe.train import train

    done = False
    if resume and not overwrite:
        config = resume_config(config, out)
        done = finished_at(out, config.steps)
    path = train(config, out, resume=resume, overwrite=overwrite, progress=not quiet)  # checks the run either way
    if distributed.is_main():
        click.echo(f"{out} had already finished all {config.steps} steps; nothing was trained (pass --steps N above "
                   f"{config.steps} to extend it)" if done else f"run written to {Path(path)}")


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


def probe_options(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict:
    """--probe-option's PROBE.OPTION=VALUE settings as ProbeConfig.options."""
    from smoothprobe.probes import parse_options

    try:
        return parse_options(value)
    except SmoothprobeError as exc:
        raise click.BadParameter(str(exc)) from None


def probe_options_help() -> str:
    from smoothprobe.probes import options_summary

    return (f"A probe's option as PROBE.OPTION=VALUE (repeatable), e.g. top_eig.steps=40. Options and defaults: "
            f"{options_summary()}.")


@main.command()
@training_options
@options(*config_options(ProbeConfig))
@click.option("--probe-option", "probe_options", multiple=True, callback=probe_options,
              metavar="PROBE.OPTION=VALUE", help=probe_options_help())
@library_errors
def record(**kw) -> None:
    """Train like `train` and record curvature probes (secant K in the optimizer's geometry, ...)."""
    probes = ProbeConfig(**pop_fields(kw, ProbeConfig), options=kw.pop("probe_options"))
    out, resume, overwrite, quiet = (kw.pop(k) for k in ("out", "resume", "overwrite", "no_progress"))
    config = config_from_options(kw)
    config.probes = probes
    if not resume:
        config.validate()  # a bad setting is refused before the note on thin rows, in one line
        warn_thin_record(config)
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
@click.option("--out", callback=named_path, type=click.Path(file_okay=False), default="smoothprobe-demo", show_default=True,
              help="Folder for the runs, fit.json and report.html (replaced if it exists).")
@click.option("--steps", type=click.IntRange(min=MIN_STEPS), default=300, show_default=True,
              help="Steps per run (at least the probed rows a fit's verdict needs: every 2nd step is probed).")
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
@click.option("--out", callback=named_path, type=click.Path(), default=None,
              help="HTML file to write, or a folder to write report.html in [default: RUN_DIR/report.html for one run; for N runs "
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
    if out and (out.endswith(("/", "\\")) or Path(out).is_dir()):  # a folder: its report.html, as fit --out does
        out = str(Path(out) / "report.html")
    path = write_report(list(run_dirs), out, fits=chosen, title=title, labels=list(labels) or None)
    click.echo(f"report written to {path}")


def parse_window(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int | None, int | None] | None:
    """START:END (either side may be empty) into a step window."""
    if value is None:
        return None
    try:
        start, end = value.split(":")
        window = (int(start) if start else None, int(end) if end else None)
    except ValueError:
        raise click.BadParameter(f"expected START:END with integer steps, got {value!r}", param_hint="--window") from None
    if any(side is not None and side < 0 for side in window):
        raise click.BadParameter(f"steps count from 0, got {value!r}: give the steps themselves (e.g. 500: for the "
                                 "steps from 500 on)", param_hint="--window")
    if None not in window and window[0] >= window[1]:
        raise click.BadParameter(f"START must be below END, got {value!r}", param_hint="--window")
    return window


def fit_option(flag: str, name: str, **how: Any) -> Callable:
    """The `fit` option `flag` for fit_run's parameter `name`, with fit_run's default."""
    from smoothprobe.fit import fit_run

    default = inspect.signature(fit_run).parameters[name].default
    return click.option(flag, name, **{"default": default, "show_default": default is not None, **how})


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@fit_option("--f-star", "f_star", type=NumberOrAuto(),
            help="f* as a number or 'auto' (fitted to the loss curve) [default: the task's exact f*].")
@fit_option("--rho", "rho", type=NumberOrAuto(), help="Exponent rho > 1, or 'auto' (chosen by held-out pinball loss).")
@fit_option("--window", "window", callback=parse_window,
            help="Steps START:END to fit (END exclusive; either side may be empty).")
@fit_option("--quantile", "quantile", type=Finite(0, 1, min_open=True, max_open=True),
            help="Upper-envelope quantile (K is an upper bound).")
@fit_option("--bootstrap", "bootstrap", type=click.IntRange(0, MAX_BOOTSTRAP),
            help=f"Block-bootstrap resamples for the intervals (0 disables; at most {MAX_BOOTSTRAP}).")
@fit_option("--column", "column", help="Probe column to model (e.g. secant_K_euclid, curv_hvp).")
@fit_option("--delta-from", "delta_from", type=click.Choice(LOSS_COLUMNS),
            help="Delta from the pre-step loss or the post-step loss on the same batch.")
@fit_option("--seed", "seed", type=click.IntRange(0, SEED_MAX))
@fit_option("--jobs", "n_jobs", type=click.IntRange(min=1),
            help="Processes for the bootstrap (the result does not depend on them).")
@click.option("--out", callback=named_path, type=click.Path(), default=None,
              help="fit.json to write, or a folder to write it in, created if missing [default: RUN_DIR/fit.json].")
@library_errors
def fit(run_dir, out, **params) -> None:
    """Fit K(Delta) = K0 + K1 Delta + K_rho Delta^rho to a recorded run and say whether the data supports it."""
    from smoothprobe.fit import fit_run
    from smoothprobe.store import load_run

    path = Path(out) if out else Path(run_dir) / "fit.json"
    if out and (out.endswith(("/", "\\")) or path.is_dir()):  # a folder: its fit.json
        path = path / "fit.json"
    if (path.parent / "run.json").is_file() and os.path.realpath(path.parent) != os.path.realpath(run_dir):
        raise click.BadParameter(f"{path.parent} is another run's folder: its fit.json would be read as that run's "
                                 "fit; give a path outside it", param_hint="--out")
    refuse_replacing(path, b'"constants"', "fit.json")  # before the fit's work, not after it
    run = load_run(run_dir)
    for warning in run.warnings:
        click.echo(f"warning: {warning}", err=True)
    result = fit_run(run, **params)
    path.parent.mkdir(parents=True, exist_ok=True)  # as `report --out` does
    result.to_json(path)
    click.echo(result.summary_table())
    click.echo(f"fit written to {path}")


if __name__ == "__main__":
    main()

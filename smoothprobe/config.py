"""Typed configuration of a run: what to train (`TrainConfig`), what to probe (`ProbeConfig`) and how
to schedule adaptively (`AdaptiveConfig`). Each is parsed and validated once, here; run.json stores
`dataclasses.asdict(config)` and `TrainConfig.from_dict` reads it back. A field the command line
offers declares its help, flag, range and choices with `option()`; `cli/main.py` builds its options
from them, so a new option is one field here plus the code that uses it.

>>> cfg = TrainConfig(optimizer="lion", probes={"preset": "standard", "every": 2},
...                   adaptive={"f_star": "auto"})
>>> cfg.probes.every, cfg.adaptive.f_star, cfg.adaptive.div
(2, 'auto', 10.0)
>>> TrainConfig.from_dict(dataclasses.asdict(cfg)) == cfg
True
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from smoothprobe.errors import SmoothprobeError
from smoothprobe.smoothness import FStar

MIN_PILOT = 50
"""Shortest pilot window: enough probed rows (one per step) for a fit with five rows above a τ = 0.9
envelope."""
COOLDOWN = 0.2
"""Default share of the steps kept for the decay (Hägele et al., 2024; docs/design.md §5)."""
LR_MAX = 1e6
"""Largest peak learning rate accepted (larger ones overflow the schedules' arithmetic)."""
SEED_MAX = 2**32 - 1
STEPS_MAX = 10**9
"""Most training steps accepted: far beyond any run, short of a mistyped count that would start and never end."""
TOKEN_BYTES = 2
"""Bytes per token of `.bin` token data (uint16, nanoGPT's format)."""
NUCLEAR = ("estimate", "exact")


@dataclass(frozen=True)
class Option:
    """How a config field is offered on the command line, declared next to its default so that the
    CLI's flag, default, help, range and choices come from one place (`cli/main.py` builds them).

    `help` and `choices` may be callables, read when the CLI is built (registries such as the
    optimizers are imported then, not here). `flag` defaults to --field-name; `low`/`high` bound a
    number (open ends excluded); `kind` is "path" or "file" (must exist), "list" (comma-separated)
    or "number_or_auto"; `default_text` says what a None default means.
    """

    help: str | Callable[[], str] = ""
    flag: str | None = None
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    kind: str | None = None
    default_text: str | None = None


def option(default: Any, help: str | Callable[[], str] = "", **how: Any) -> Any:
    """A dataclass field with `default` that the CLI offers as described by `Option(help, **how)`."""
    return field(default=default, metadata={"option": Option(help, **how)})


def offered(cls: type) -> list[tuple[dataclasses.Field, Option]]:
    """The fields of config class `cls` that the CLI offers, with their Option, in declaration order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def defaults(cls: type) -> dict[str, Any]:
    """The default of each field of config class `cls` that has one."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def type_names(f: dataclasses.Field) -> set[str]:
    """The names of the types field `f` is annotated with ("float | None": float and None)."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return {part.strip() for part in annotation.split("|")}


def _wanted(value: Any, how: Option, integer: bool) -> str | None:
    """What a value outside the choices or range `how` declares should be (None when it is inside)."""
    if how.choices is not None:
        choices = how.choices() if callable(how.choices) else how.choices
        return None if value in choices else f"one of {', '.join(choices)}"
    kind = "an integer" if integer else "a finite number"
    low, high = (bound if isinstance(bound, int) else f"{bound:g}" if bound is not None else None
                 for bound in (how.low, how.high))
    if low is not None and high is not None:
        interval = f"{'(' if how.low_open else '['}{low}, {high}{')' if how.high_open else ']'}"
        wanted = f"{'a fraction' if 0 <= how.low and how.high <= 1 and not integer else kind} in {interval}"
    elif low is not None or high is not None:
        wanted = (f"{kind} {'>' if how.low_open else '>='} {low}" if low is not None
                  else f"{kind} {'<' if how.high_open else '<='} {high}")
    else:
        return None
    number = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    inside = number and math.isfinite(value) and (
        how.low is None or (value > how.low if how.low_open else value >= how.low)) and (
        how.high is None or (value < how.high if how.high_open else value <= how.high))
    return None if inside else wanted


def _check_options(config: Any) -> None:
    """Raise SmoothprobeError naming the first field of `config` whose value lies outside the range or
    choices its Option declares (the CLI's limits, so the library holds the same ones)."""
    for f, how in offered(type(config)):
        value, kinds = getattr(config, f.name), type_names(f)
        if how.kind is not None or kinds == {"bool"} or (value is None and "None" in kinds):
            continue
        wanted = _wanted(value, how, "int" in kinds)
        if wanted is not None:
            raise SmoothprobeError(f"{f.name} must be {wanted}, got {value!r:.40}", params=[f.name])


def _require(checks: list[tuple]) -> None:
    """Raise SmoothprobeError with the message of the first failed check `(ok, message, *params)`;
    `params` are the parameters the message names."""
    for ok, message, *params in checks:
        if not ok:
            raise SmoothprobeError(message, params=params)


def _fit_readable(path: str) -> bool:
    """True when the fit.json at `path` parses (otherwise its one-line SmoothprobeError is raised)."""
    from smoothprobe.fit.schema import read_fit_json

    read_fit_json(path)
    return True


def task_parameters(task: str) -> dict[str, inspect.Parameter] | None:
    """The task-specific options (task_options keys) a built-in task takes, with their defaults; None
    for an unknown task."""
    classes = {"quadratic": "quadratic.QuadraticTask", "markov": "markov.MarkovTask", "lm": "lm.LanguageModelTask"}
    if task not in classes:
        return None
    module, name = classes[task].split(".")
    cls = getattr(importlib.import_module(f"smoothprobe.tasks.{module}"), name)
    return {key: parameter for key, parameter in inspect.signature(cls).parameters.items()
            if key not in {"model", "batch_size", "seq_len", "seed", "data", "vocab_size", "shapes", "dtype"}}


def _family(optimizer: str) -> str | None:
    """The optimizer's geometry family (None for an unknown optimizer, which validation names itself)."""
    from smoothprobe.geometry import family_for_optimizer

    try:
        return family_for_optimizer(optimizer)
    except SmoothprobeError:
        return None


def _fit_source_problem(config: TrainConfig) -> str | None:
    """Why the fit given to `config` (`adaptive.fit`) was measured on another setup: another task (another
    loss) or another geometry family (K in another norm); None when it names none, or the same."""
    from smoothprobe.fit.schema import read_fit_json

    content = read_fit_json(config.adaptive.fit)
    origin = content.get("source") if isinstance(content, dict) else None
    if not isinstance(origin, dict):
        return None
    family = (config.probes.family if config.probes is not None else None) or _family(config.optimizer)
    differ = [f"{key} {origin[key]} (this run: {value})" for key, value in (("task", config.task), ("family", family))
              if isinstance(origin.get(key), str) and value is not None and origin[key] != value]
    if not differ:
        return None
    return (f"fit {config.adaptive.fit} was measured on another setup, {', '.join(differ)}: its K is of another "
            "loss or in another norm. Fit a run of this setup (record, then fit), or delete the fit's 'source' "
            "entry to drive this run with it anyway")


def _token_files(data: str) -> list[Path]:
    """The `.bin` token files `data` names (itself, or those in its folder); none for text data."""
    path = Path(data)
    return [path] if path.suffix == ".bin" else sorted(path.glob("*.bin")) if path.is_dir() else []


def _token_file_problem(data: str) -> str | None:
    """Why `.bin` token data at `data` cannot be read as uint16 tokens (None when it can)."""
    for item in _token_files(data):
        try:
            size = item.stat().st_size
        except OSError as exc:
            return f"cannot read {item}: {exc.strerror}"
        if size == 0 or size % TOKEN_BYTES:
            return (f"token file {item} holds {size} bytes, not a whole number of {TOKEN_BYTES}-byte (uint16) tokens"
                    if size else f"token file {item} is empty")
    return None


def _names(module: str, registry: str) -> Callable[[], tuple[str, ...]]:
    """A deferred read of a registry's names: imported when the CLI is built, not with the config."""
    def names() -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(module), registry))

    return names


def _preset_help() -> str:
    from smoothprobe.probes import PRESETS

    return "; ".join(f"{name}: {', '.join(probes)}" for name, probes in PRESETS.items()) + "."


def _probes_help() -> str:
    from smoothprobe.probes import PROBES

    return f"Comma-separated probe list overriding --preset ({','.join(PROBES)})."


def _heavy_every_help() -> str:
    from smoothprobe.probes import heavy

    return f"The heavy probes ({', '.join(heavy())}) run on every N-th probed step."


def _finite(value: float | None) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value))


_JSON_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
               "dict": (dict,), "ProbeConfig": (dict,), "AdaptiveConfig": (dict,)}
"""The JSON values a field of each annotated type accepts (a nested config is a mapping)."""


def _check_types(cls: type, value: dict, name: str) -> None:
    """Raise SmoothprobeError naming the first field whose JSON value has the wrong type."""
    for f in dataclasses.fields(cls):
        if f.name not in value:
            continue
        parts = [part.strip() for part in str(f.type).split("|")]
        allowed = tuple(t for part in parts for t in ((list, tuple) if part.startswith("tuple") else _JSON_TYPES[part]))
        item = value[f.name]
        if not isinstance(item, allowed) or (isinstance(item, bool) and "bool" not in parts):
            raise SmoothprobeError(f"{name}.{f.name} must be {f.type}; got {item!r:.40}")


def _build(cls: type, value: Any, name: str) -> Any:
    """`value` as a `cls` instance: None stays None, a mapping gives its fields by name (unknown
    fields and values of the wrong type are refused, naming them)."""
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise SmoothprobeError(f"{name} must be a {cls.__name__} or a mapping; got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise SmoothprobeError(f"{name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    _check_types(cls, value, name)
    return cls(**value)


@dataclass
class ProbeConfig:
    """Which curvature probes run, and when (the Recorder's options).

    `probes` overrides `preset`; `every` is the probing interval in steps, or `overhead` (a fraction
    of training time) adapts it; heavy probes (Lanczos, trace) run on every `heavy_every`-th probed
    step. `family`/`tensors` override the optimizer's geometry; `nuclear` picks how Muon's dual
    norm is computed; `hvp` = "fd" takes Hessian-vector products by differences of gradients
    (memory of one gradient, works under FSDP2) instead of double backward ("exact"); `hvp_chunks`
    takes exact HVPs over that many row pieces of the batch (less memory). `options`
    gives the probes that run their options by name, as each declares them
    (`smoothprobe.probes.PROBES[name].options()`), e.g. {"top_eig": {"steps": 40}}.
    """

    preset: str = option("standard", _preset_help, choices=_names("smoothprobe.probes", "PRESETS"))
    probes: tuple[str, ...] | None = option(None, _probes_help, kind="list")
    every: int = option(10, "Probe every N steps.", low=1)
    overhead: float | None = option(None, "Instead of --every: adapt the interval so probes cost this fraction of "
                                          "training time.", low=0, high=1, low_open=True, high_open=True)
    heavy_every: int = option(10, _heavy_every_help, low=1)
    family: str | None = None
    tensors: tuple[str, ...] | None = None
    nuclear: str = option("estimate", "Nuclear norms (Muon's dual) by Gram eigenvalues or exact SVD.", choices=NUCLEAR)
    hvp: str = option("exact", "Hessian-vector products of the heavy probes: exact (double backward), fd (a central "
                               "difference of gradients: the memory of one gradient, also under --fsdp; fp32 only) or "
                               "forward (forward-over-reverse: no kept graph, slower on CPU).",
                      choices=_names("smoothprobe.probes.oracle", "HVP_MODES"))
    hvp_chunks: int = option(1, "Take exact HVPs over this many row pieces of the batch, one piece's graph alive at "
                                "a time: about 1/N of the memory; curv_hvp about 0.3 gradients slower with 4, "
                                "Lanczos and trace 1.6-1.8x slower (no graph kept between their HVPs).", low=1)
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from smoothprobe.probes import PRESETS, PROBES, build
        from smoothprobe.probes.oracle import HVP_MODES

        if self.probes is not None:
            self.probes = tuple(self.probes)
            unknown = [p for p in self.probes if p not in PROBES]
            _require([(not unknown, f"unknown probe {unknown[0]!r}; choose from {', '.join(PROBES)}"
                       if unknown else "", "probes")])
        if self.tensors is not None:
            self.tensors = tuple(self.tensors)
        _require([
            (self.preset in PRESETS, f"unknown probe preset {self.preset!r}; choose from {', '.join(PRESETS)}"),
            (self.probes is None or len(self.probes) > 0, "probes must name at least one probe", "probes"),
            (isinstance(self.every, int) and self.every >= 1, f"every must be an integer >= 1, got {self.every!r}",
             "every"),
            (self.overhead is None or (_finite(self.overhead) and 0 < self.overhead < 1),
             f"overhead must lie in (0, 1), got {self.overhead}", "overhead"),
            (self.overhead is None or self.every == defaults(ProbeConfig)["every"],
             "every and overhead exclude each other (overhead sets the interval itself): drop one", "every",
             "overhead"),
            (isinstance(self.heavy_every, int) and self.heavy_every >= 1,
             f"heavy_every must be an integer >= 1, got {self.heavy_every!r}", "heavy_every"),
            (self.nuclear in NUCLEAR, f"nuclear must be one of {', '.join(NUCLEAR)}, got {self.nuclear!r}", "nuclear"),
            (self.hvp in HVP_MODES, f"hvp must be one of {', '.join(HVP_MODES)}, got {self.hvp!r}", "hvp"),
            (isinstance(self.hvp_chunks, int) and not isinstance(self.hvp_chunks, bool) and self.hvp_chunks >= 1,
             f"hvp_chunks must be an integer >= 1, got {self.hvp_chunks!r}", "hvp_chunks"),
            (isinstance(self.options, dict), f"options must be a mapping, got {self.options!r:.40}", "options"),
        ])
        selected = self.probes or PRESETS[self.preset]
        build(selected, self.options)  # each probe checks its options
        running = [PROBES[name] for name in selected]
        base = defaults(ProbeConfig)
        names = ", ".join(probe.name for probe in running)
        _require([
            (self.heavy_every == base["heavy_every"] or any(probe.heavy for probe in running),
             f"heavy_every paces the heavy probes, and none of these runs ({names}): drop it, or add one",
             "heavy_every"),
            ((self.hvp, self.hvp_chunks) == (base["hvp"], base["hvp_chunks"]) or any(p.needs_hvp for p in running),
             (f"hvp and hvp_chunks set how Hessian-vector products are taken, and none of these probes takes them "
              f"({names}): drop them, or add a probe that does"), "hvp", "hvp_chunks"),
        ])

    def rows_over(self, steps: int) -> int | None:
        """Probed rows over `steps` steps at the fixed interval `every` (None under an `overhead` budget,
        whose interval is set as the run goes)."""
        return steps // self.every if self.overhead is None else None



def _progress_help() -> str:
    """--progress-test's help, with the test's own constants."""
    from smoothprobe.schedule.decision import PROGRESS_DROP, PROGRESS_STEPS

    return (f"Adaptive with --pilot: before the first step (after --step-test, unless it said no warm-up), take "
            f"{PROGRESS_STEPS} steps of the practical start (from lr/div) and undo them; if the loss fell by less than "
            f"{PROGRESS_DROP:.1%} over them, start at --lr with no warm-up, if not, the fits and the window test decide its length. The "
            f"threshold was set on the lm benchmark and failed a second task, markov, where it skipped the warm-up that "
            f"AdamW and normalised SGD need (docs/design.md).")


@dataclass
class AdaptiveConfig:
    """How `AdaptiveWarmup` is built for a run: from a fit, from a pilot, or the practical rule.

    fit: a fit.json path (constants from a recorded run). pilot: a fraction (< 1) or number of the
    run's steps to record probes with the practical schedule, then fit and let the fit (or the
    window test, `window_test`) decide the rest (a closed loop in one run). Without either, the paper's practical parametrisation with
    `div` and `delta_peak`. f_star: a number, "auto" (estimated from the loss curve during training,
    every `f_star_every` steps), or None (the task's exact f*, or the fit's). refit_every: refit the
    constants to the secant probes every N steps. max_warmup: an explicit bound on the warm-up
    (fraction of steps if < 1, else steps); None means the warm-up ends when the loss says so.
    cooldown: the fraction of the steps kept at the end for the decay even if the loss never
    crosses Δ' (None or 0: none); 0.2 is the cool-down length at which warm-up-stable-decay runs match a
    cosine (Hägele et al., 2024).
    allow_unsupported: let a fit whose verdict is not "supported" drive the schedule (warns).
    own_peak: the pilot measures the peak LR (the median best step along the update over its window)
    instead of taking the lr; the lr, or the optimizer's default, only sets the first steps (lr/div).
    step_test: with a pilot, test once before the first step, on trial steps at lr/div that are undone,
    whether a step at the lr is within the stability limit along the update (`decision.step_test`): if
    so, no warm-up at all, without waiting for a fit. Off by default: on normalised SGD it passed and
    the run lost against a warm-up (docs/design.md §5).
    progress_test: with a pilot, before the first step (after the step test, unless that said "no
    warm-up"), take PROGRESS_STEPS steps of the practical start and undo them: a loss that fell by less
    than PROGRESS_DROP over them means no warm-up (`decision.progress_test`). Off by default: its
    threshold was set on one benchmark, and on a second task (markov) it skipped warm-ups that were needed
    (docs/design.md §5).
    window_test: with a pilot, at each refit inside its window where the fit says "not yet", no further
    warm-up once a step at the lr is within the best step along the update on three quarters of the
    window's probed steps and the step size has settled (`decision.window_test`). None (the default): on
    with a pilot that is given its peak (not `own_peak`, which measures the peak from the same best steps;
    `window_tested`). True asks for it, and is stored as None where that is the default, so that asking for
    the default is no change; False turns it off (the fits alone); either is refused without a pilot. On by
    default since it passed a check registered before its runs, on seeds no arm had run
    (benchmarks/step_limit.py, docs/design.md §5).
    """

    fit: str | None = option(None, "Adaptive: constants from this fit.json (implies --adaptive; --lr rescales the peak).",
                             kind="file")
    pilot: float | None = option(None, "Adaptive closed loop: record probes for this fraction (below 1) or number of "
                                       "steps under the practical schedule, fit K(Delta), and let the fit (or the "
                                       "window test) decide the rest.", low=0, low_open=True)
    f_star: float | str | None = option(None, "Adaptive: f* as a number (with --fit, in place of the fit's), or 'auto' "
                                              "(re-estimated from the loss curve during training; not with --fit).",
                                        kind="number_or_auto", default_text="the task's exact f*, or the fit's")
    div: float = option(10.0, "Adaptive: the first step runs at lr/div.", low=1, low_open=True)
    delta_peak: float | None = option(None, "Adaptive: gap Delta' where the lr peaks.", low=0, low_open=True,
                                      default_text="chosen from the geometry")
    decay: str = option("cosine", "Adaptive: decay after the peak.", flag="--adaptive-decay",
                        choices=_names("smoothprobe.schedule.adaptive", "DECAYS"))
    max_warmup: float | None = option(None, "Adaptive: an explicit bound on the warm-up (fraction of --steps if below 1, "
                                            "else steps).", low=0, low_open=True,
                                      default_text="none; the warm-up ends when the loss crosses f* + Delta'")
    cooldown: float | None = option(COOLDOWN, "Adaptive: the fraction of --steps kept at the end for the decay, from "
                                              "the lr in use, when the loss has not crossed f* + Delta' by then "
                                              "(0: none).", low=0, high=1, high_open=True)
    refit_every: int | None = option(None, "Adaptive, with `record`: refit the constants K(Delta) to the secant probes "
                                           "every N steps and adopt them once the data supports the model.", low=1)
    f_star_every: int | None = option(None, "Adaptive with --f-star auto: re-estimate f* from the loss curve every N "
                                            "steps.", low=1, default_text="steps/20, at least 10")
    allow_unsupported: bool = option(False, "Adaptive: let a fit whose verdict is not 'supported' drive the schedule "
                                            "(warns).", flag="--allow-unsupported-fit")
    own_peak: bool = option(False, "Adaptive with --pilot: measure the peak LR instead of taking --lr: at every step "
                                   "of the pilot's window the peak moves to the median best LR along the update over "
                                   "the probed steps so far (secant slope and curvature); --lr, or the optimizer's "
                                   "default, only sets the first steps (the practical start at lr/div).")
    step_test: bool = option(False, "Adaptive with --pilot: before the first step, take 3 trial steps at lr/div and "
                                    "undo them, and test whether a step at --lr stays within the stability limit "
                                    "along the update direction (twice the best step, from the secant probe's slope "
                                    "and curvature); if so, start at --lr with no warm-up, if not, the fits and the "
                                    "window test decide its length.")
    progress_test: bool = option(False, _progress_help)
    window_test: bool | None = option(None, "Adaptive with --pilot: at each refit in the pilot's window where the fit says "
                                      "'not yet' (every 10 steps from 50 probed rows, so from step 49 of a window of "
                                      "50 or more), end the warm-up when a step at --lr is within the best step "
                                      "along the update on three quarters of the window's probed steps (their lower "
                                      "quartile; the last 3 each curving upward) and the optimizer's step per unit "
                                      "LR has settled. --no-window-test leaves the decision to the fits alone.",
                                      default_text="on with --pilot, off with --own-peak")

    def __post_init__(self) -> None:
        f_star = FStar.parse(self.f_star)  # the one reader of f*; stored as the user writes it
        self.f_star = None if f_star is None else f_star.to_json()
        auto = f_star is not None and f_star.auto
        if self.cooldown == 0:  # no cooldown, stored the one way
            self.cooldown = None
        if self.decay == "model" and self.cooldown == COOLDOWN:  # the default: 'model' has no decay phase
            self.cooldown = None
        if self.window_test is True and self.pilot is not None and not self.own_peak:  # asks for the default
            self.window_test = None
        _check_options(self)
        _require([
            (self.fit is None or Path(self.fit).is_file(), f"fit file not found: {self.fit}"),
            (self.fit is None or _fit_readable(self.fit), ""),
            (self.fit is None or self.pilot is None, "fit and pilot exclude each other: a pilot makes its own fit",
             "fit", "pilot"),
            (not auto or self.fit is None,
             "f_star 'auto' re-estimates f* without a fit; drop the fit or give a number", "f_star", "fit"),
            (self.f_star_every is None or auto, "f_star_every needs f_star 'auto'",
             "f_star_every", "f_star"),
            (not self.own_peak or self.pilot is not None, "own_peak needs a pilot", "own_peak", "pilot"),
            (not self.step_test or self.pilot is not None, "step_test needs a pilot", "step_test", "pilot"),
            (not self.progress_test or self.pilot is not None, "progress_test needs a pilot", "progress_test",
             "pilot"),
            (self.window_test is None or self.pilot is not None, "window_test (on or off) needs a pilot",
             "window_test", "pilot"),
            (self.window_test is not False or not self.own_peak,
             "own_peak turns the window test off already: drop window_test", "window_test", "own_peak"),
            (not (self.window_test is True and self.own_peak),
             ("window_test holds the lr to the best step along the update, and own_peak sets the lr to that best "
              "step: drop one"), "window_test", "own_peak"),
            (not (self.progress_test and self.own_peak),
             ("progress_test needs the peak lr before the first step (the start it reads runs from lr/div), and "
              "own_peak measures it only during the pilot: drop one"), "progress_test", "own_peak"),
            (not (self.step_test and self.own_peak),
             "step_test tests a step at the lr, and own_peak measures the lr from the same best steps: drop one", "step_test",
             "own_peak"),
            (self.decay != "model" or self.cooldown is None,
             ("cooldown needs a decay phase to start, which decay 'model' does not have (it follows eta to the "
              "end): drop the cooldown or choose decay cosine or linear"), "cooldown", "decay"),
            (not self.allow_unsupported or self.fit is not None or self.pilot is not None,
             ("allow_unsupported needs a fit or a pilot: it lets their fit drive the schedule, and without them "
              "there is none"), "allow_unsupported", "fit", "pilot"),
            (self.fit is None or (self.div == defaults(AdaptiveConfig)["div"] and self.delta_peak is None),
             ("div and delta_peak (the practical schedule's shape) come from the fit when one is given: a fit brings "
              "its own constants (drop them or the fit)"), "div", "delta_peak"),
        ])

    @property
    def window_tested(self) -> bool:
        """Whether a pilot runs the window test: by default (None) with a pilot given its peak.

        >>> AdaptiveConfig(pilot=0.1).window_tested, AdaptiveConfig(pilot=0.1, own_peak=True).window_tested
        (True, False)
        >>> AdaptiveConfig(pilot=0.1, window_test=False).window_tested, AdaptiveConfig().window_tested
        (False, False)
        """
        return self.window_test is None and self.pilot is not None and not self.own_peak

    def pilot_steps(self, steps: int) -> int | None:
        """The pilot's length in steps for a run of `steps` (None without a pilot)."""
        if self.pilot is None:
            return None
        return round(self.pilot * steps) if self.pilot < 1 else int(self.pilot)


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in run.json and reloaded by `resume`.

    `probes` (a ProbeConfig or its fields as a mapping) turns the curvature probes on; `adaptive`
    (an AdaptiveConfig or mapping) replaces the baseline `schedule`/`warmup` by AdaptiveWarmup.
    """

    task: str = option("markov", "Built-in task: quadratic (known Hessian, f*=0), markov (f* = entropy rate), lm "
                                 "(bytes or --data).", choices=_names("smoothprobe.tasks", "TASKS"))
    model: str = option("tiny", "LLaMA preset for the markov and lm tasks.", choices=_names("smoothprobe.model", "PRESETS"))
    optimizer: str = option("adamw", choices=_names("smoothprobe.optim", "OPTIMIZERS"))
    lr: float | None = option(None, "Peak learning rate.", low=0, low_open=True, default_text="per optimizer")
    steps: int = option(200, "Training steps.", low=1, high=STEPS_MAX)
    batch_size: int = option(16, low=1)
    seq_len: int = option(64, low=2)
    accum: int = option(1, "Gradient-accumulation micro-batches per step.", low=1)
    schedule: str = option("cosine", choices=_names("smoothprobe.schedule.baseline", "DECAYS"))
    warmup: float = option(0.0, "Warm-up: a fraction of --steps if below 1, else a number of steps.", low=0)
    warmup_shape: str = option("linear", choices=_names("smoothprobe.schedule.baseline", "WARMUP_SHAPES"))
    min_lr_ratio: float = option(0.1, "Final lr as a fraction of the peak.", low=0, high=1)
    weight_decay: float = option(0.0, low=0)
    clip: float = option(1.0, "Gradient-norm clipping threshold (0 disables).", low=0)
    seed: int = option(0, low=0, high=SEED_MAX)
    device: str = option("auto", "auto, cpu or cuda[:N].")
    eval_every: int = option(50, low=1)
    flush_every: int = option(10, "Steps between appends to disk (a crash loses at most this many).", low=1)
    checkpoint_every: int = option(50, low=1)
    data: str | None = option(None, "lm task: a text file or folder, a uint16 .bin token file, or a folder with "
                                    "train.bin/val.bin.", kind="path")
    vocab_size: int | None = option(None, "Vocabulary of .bin token data.", low=2)
    task_options: dict = field(default_factory=dict)
    probes: ProbeConfig | None = None
    adaptive: AdaptiveConfig | None = None
    fsdp: bool = option(False, "Under torchrun: shard the model with FSDP2 instead of replicating it with DDP (probes: "
                               "norms, secant, curv_fd; the others with --hvp fd).")

    def __post_init__(self) -> None:
        self.probes = _build(ProbeConfig, self.probes, "probes")
        self.adaptive = _build(AdaptiveConfig, self.adaptive, "adaptive")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The config stored in run.json; unknown keys are an error naming them."""
        if not isinstance(data, dict):
            raise SmoothprobeError(f"config must be a mapping, got {type(data).__name__}")
        adaptive = data.get("adaptive")
        if isinstance(adaptive, dict):
            adaptive = dict(adaptive)
            if "cooldown" not in adaptive:  # written before cooldown existed
                adaptive["cooldown"] = None
            if adaptive.get("window_test") is False and (adaptive.get("pilot") is None or adaptive.get("own_peak")):
                adaptive["window_test"] = None  # written when off was every run's default; it acted on nothing
            data = {**data, "adaptive": adaptive}
        return _build(cls, data, "config")

    def validate(self) -> None:
        """Raise SmoothprobeError naming the first bad field (checks that need the registries)."""
        from smoothprobe.optim import OPTIMIZERS
        from smoothprobe.schedule.baseline import DECAYS
        from smoothprobe.tasks import TASKS

        base = defaults(TrainConfig)
        _require([
            (self.task in TASKS, f"unknown task {self.task!r}; choose from {', '.join(TASKS)}"),
            (self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}"),
            (self.schedule in DECAYS, f"unknown schedule {self.schedule!r}; choose from {', '.join(DECAYS)}"),
            (self.lr is None or (_finite(self.lr) and 0 < self.lr <= LR_MAX),
             f"lr must be a finite number > 0 and at most {LR_MAX:g}, got {self.lr}", "lr"),
            (self.device in ("auto", "cpu") or self.device.startswith("cuda"),
             f"device must be auto, cpu or cuda[:N], got {self.device!r}", "device"),
            (self.adaptive is None or self.warmup == 0,
             "warmup is the baseline schedule's; the adaptive schedule finds its own warm-up: drop warmup",
             "warmup", "adaptive"),
            (self.adaptive is None or all(getattr(self, name) == base[name] for name in ("schedule", "warmup_shape")),
             ("schedule and warmup_shape shape the baseline schedule, which adaptive replaces (there, the shape "
              "of the end is set by decay): drop them"),
             "schedule", "warmup_shape", "adaptive", "decay"),
            (self.task != "quadratic" or all(getattr(self, name) == base[name] for name in ("model", "batch_size",
                                                                                         "seq_len")),
             ("model, batch_size and seq_len set the token tasks' model and batches; task quadratic has neither "
              "(its parameters are fixed matrices, its batch one noise draw): drop them"),
             "model", "batch_size", "seq_len", "task"),
            (self.task == "lm" or (self.data is None and self.vocab_size is None),
             f"data and vocab_size are the lm task's; task {self.task} builds its own data: drop them",
             "data", "vocab_size", "task"),
            (self.vocab_size is None or (self.data is not None and _token_files(self.data)),
             ("vocab_size is the vocabulary of .bin token data (data); text and the built-in corpus have their own: "
              "drop it, or give .bin data"), "vocab_size", "data"),
            (self.probes is None or self.probes.nuclear == defaults(ProbeConfig)["nuclear"]
             or (self.probes.family or _family(self.optimizer)) == "spectral",
             (f"nuclear sets how Muon's nuclear norms are taken (the spectral geometry); optimizer {self.optimizer} "
              "has another geometry: drop it"), "nuclear", "optimizer"),
            (math.isfinite(self.warmup), f"warmup must be a finite number, got {self.warmup}", "warmup"),
            (self.adaptive is None or self.adaptive.max_warmup is None or self.adaptive.max_warmup < 1
             or self.adaptive.max_warmup <= self.steps,
             (f"max_warmup of {self.adaptive and self.adaptive.max_warmup} steps is longer than the run's {self.steps} "
              "steps, so it bounds nothing: give fewer steps, or a fraction of the run below 1"), "max_warmup"),
            (self.warmup < 1 or self.warmup <= self.steps,
             (f"warmup of {self.warmup:g} steps is longer than the run's {self.steps} steps, so the LR would never "
              "decay: give fewer steps, or a fraction of the run below 1"), "warmup"),
        ])
        _check_options(self)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise SmoothprobeError(f"device {self.device} requested but CUDA is not available")
        if self.data is not None and not Path(self.data).exists():
            raise SmoothprobeError(f"data path does not exist: {self.data}")
        if self.data is not None and (problem := _token_file_problem(self.data)):
            raise SmoothprobeError(problem)
        known = task_parameters(self.task)
        unknown = sorted(set(self.task_options) - set(known)) if known is not None else []
        if unknown:
            raise SmoothprobeError(f"task {self.task} does not take option(s) {', '.join(unknown)}"
                                   f"{'; it takes ' + ', '.join(sorted(known)) if known else ''}")
        if self.adaptive is not None and self.adaptive.fit is not None and (problem := _fit_source_problem(self)):
            raise SmoothprobeError(problem, params=["fit"])
        if self.adaptive is not None and self.adaptive.fit is None and 1 / self.adaptive.div < self.min_lr_ratio:
            raise SmoothprobeError(
                f"div: the first step would run at lr/div = lr/{self.adaptive.div:g}, below the floor "
                f"lr·min_lr_ratio = lr·{self.min_lr_ratio:g}, which would hold it there; for that div, "
                f"min_lr_ratio must be <= {1 / self.adaptive.div:.3g} (or choose a smaller div)",
                params=["div"])
        if self.adaptive is not None and self.adaptive.pilot is not None:
            pilot = self.adaptive.pilot_steps(self.steps)
            fix = (f"give steps {math.ceil(MIN_PILOT / self.adaptive.pilot)} or more for pilot {self.adaptive.pilot:g}, "
                   f"or pilot {MIN_PILOT} (steps)" if pilot < MIN_PILOT and self.adaptive.pilot < 1
                   else f"give more than {MIN_PILOT} steps" if self.steps <= MIN_PILOT
                   else f"give pilot between {MIN_PILOT} and {self.steps - 1} steps, or more steps")
            message = (f"pilot must be at least {MIN_PILOT} steps and leave steps for the fitted schedule: "
                       f"{pilot} of {self.steps} steps; {fix}")
            _require([(MIN_PILOT <= pilot < self.steps, message, "pilot", "steps")])

    @property
    def peak_lr(self) -> float:
        from smoothprobe.optim import default_lr

        return self.lr if self.lr is not None else default_lr(self.optimizer)

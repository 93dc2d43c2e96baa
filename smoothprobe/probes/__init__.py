"""The probes, one class per module behind `Probe.measure(context)`, and their registry.

`PROBES` maps each probe's name to its class in the order the Recorder runs them: probes that
share the gradient at x_{t+1} and its graph first, probes that move the parameters (the FD probe;
moving them drops a kept HVP graph) last. Everything else that lists probes reads the registry:
the fit's K columns (`k_columns`), the report's curvature panels (`panels`), the options
`ProbeConfig` and the Recorder accept (`build`) and the CLI's choices. A new probe is one module:
its class passed to `register`, or named under the `smoothprobe.probes` entry-point group of an
installed package, e.g. in its pyproject.toml::

    [project.entry-points."smoothprobe.probes"]
    toy = "my_package.toy:ToyProbe"
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from smoothprobe.errors import SmoothprobeError
from smoothprobe.probes.base import Line, Probe
from smoothprobe.probes.curv_dual import CurvDualProbe
from smoothprobe.probes.curv_fd import CurvFDProbe
from smoothprobe.probes.curv_hvp import CurvHVPProbe
from smoothprobe.probes.norms import NormsProbe
from smoothprobe.probes.secant import SecantProbe
from smoothprobe.probes.top_eig import TopEigProbe
from smoothprobe.probes.trace import TraceProbe

ENTRY_POINTS = "smoothprobe.probes"
PROBES: dict[str, type[Probe]] = {}


def register(probe: type[Probe]) -> type[Probe]:
    """Add a probe class to the registry, before the probes that move the parameters unless it
    moves them too; returns the class (so it also serves as a class decorator).

    >>> class Half(Probe):
    ...     name, columns, k_columns = "half", ("half",), ("half",)
    ...     def measure(self, context): ...
    >>> register(Half) is Half, list(PROBES)[-2:], "half" in k_columns()
    (True, ['half', 'curv_fd'], True)
    >>> del PROBES["half"]
    """
    if not (isinstance(probe, type) and issubclass(probe, Probe)):
        raise SmoothprobeError(f"a probe must be a Probe subclass; got {probe!r}")
    if PROBES.get(probe.name, probe) is not probe:
        raise SmoothprobeError(f"probe name {probe.name!r} is taken by {PROBES[probe.name].__qualname__}")
    stray = sorted(set(probe.k_columns) - set(probe.columns))
    if stray:
        raise SmoothprobeError(f"probe {probe.name}: k_columns {', '.join(stray)} are not among its columns")
    others = [p for p in PROBES.values() if p is not probe]
    first = [p for p in others if not p.moves_parameters]
    last = [p for p in others if p.moves_parameters]
    order = [*first, *last, probe] if probe.moves_parameters else [*first, probe, *last]
    PROBES.clear()
    PROBES.update((p.name, p) for p in order)
    return probe


def discover() -> None:
    """Register the probes installed packages name under the `smoothprobe.probes` entry points; a
    plugin that fails to load or register is skipped with a warning that says why, so one broken
    package does not break smoothprobe."""
    for entry in entry_points(group=ENTRY_POINTS):
        try:
            register(entry.load())
        except Exception as exc:  # noqa: BLE001 - anything a third-party import raises
            warnings.warn(f"probe plugin {entry.name!r} ({entry.value}) skipped: {type(exc).__name__}: {exc}",
                          RuntimeWarning, stacklevel=2)


def k_columns() -> tuple[str, ...]:
    """The row columns the fit may take as K, in registry order."""
    return tuple(column for probe in PROBES.values() for column in probe.k_columns)


def heavy() -> tuple[str, ...]:
    """The probes `heavy_every` governs."""
    return tuple(name for name, probe in PROBES.items() if probe.heavy)


def panels() -> list[tuple[str, tuple[Line, ...]]]:
    """The report's curvature panels: (title, lines) merged from the probes' `Panel` parts by
    title, laid out by their lowest `place`, each panel's lines in the order of their parts."""
    parts = sorted((p.panel for p in PROBES.values() if p.panel is not None), key=lambda part: part.place)
    merged: dict[str, tuple[Line, ...]] = {}
    for part in parts:
        merged[part.title] = merged.get(part.title, ()) + part.lines
    return list(merged.items())


def check_options(options: Mapping[str, Mapping[str, Any]], names: tuple[str, ...]) -> None:
    """Raise SmoothprobeError naming the first option (probe → option → value) for a probe not
    among `names`, that its probe does not declare, or whose value is not like the default."""
    for name, chosen in options.items():
        if name not in PROBES:
            raise SmoothprobeError(f"options for unknown probe {name!r}; choose from {', '.join(PROBES)}")
        if name not in names:
            raise SmoothprobeError(f"options for probe {name}, which does not run (probes: {', '.join(names)})")
        declared = PROBES[name].options()
        if not isinstance(chosen, Mapping):
            raise SmoothprobeError(f"options of probe {name} must be a mapping; got {chosen!r:.40}")
        for key, value in chosen.items():
            if key not in declared:
                known = ", ".join(declared) or "none"
                raise SmoothprobeError(f"probe {name} has no option {key!r}; its options: {known}")
            if not _same_kind(value, declared[key]):
                raise SmoothprobeError(f"option {name}.{key} must be like its default {declared[key]!r}; "
                                       f"got {value!r:.40}")


def options_summary() -> str:
    """Each probe's options with their defaults, on one line (for the CLI's help)."""
    def shown(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    return "; ".join(f"{name}: " + ", ".join(f"{key}={shown(value)}" for key, value in probe.options().items())
                     for name, probe in PROBES.items() if probe.options())


def parse_options(texts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """PROBE.OPTION=VALUE settings (the CLI's --probe-option) as probe → option → value, each value
    read like the option's default (true/false for a flag, comma-separated for a sequence).

    >>> parse_options(["top_eig.steps=40", "top_eig.tol=1e-8", "curv_fd.central=true"])
    {'top_eig': {'steps': 40, 'tol': 1e-08}, 'curv_fd': {'central': True}}
    """
    parsed: dict[str, dict[str, Any]] = {}
    for text in texts:
        target, equals, value = text.partition("=")
        name, dot, key = target.partition(".")
        if not (equals and dot and name and key):
            raise SmoothprobeError(f"expected PROBE.OPTION=VALUE, got {text!r}")
        if name not in PROBES or key not in PROBES[name].options():
            check_options({name: {key: None}}, (name,))  # says which of the two is unknown
        default = PROBES[name].options()[key]
        try:
            parsed.setdefault(name, {})[key] = _read_like(value, default)
        except ValueError:
            raise SmoothprobeError(f"option {name}.{key} must be like its default {default!r}; got {value!r}") from None
    return parsed


def _read_like(value: str, default: Any) -> Any:
    """The text `value` as a value of the default's type (text for a None default)."""
    if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
            raise ValueError(value)
        return value.lower() == "true"
    if isinstance(default, (list, tuple)):
        return [item for item in value.split(",") if item]
    return value if default is None else type(default)(value)


def _same_kind(value: Any, default: Any) -> bool:
    """Whether `value` may replace `default`: a bool for a bool, a number for a float, an int for
    an int, a list or tuple for a sequence, else the default's type (anything for a None default)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def build(names: tuple[str, ...], options: Mapping[str, Mapping[str, Any]] | None = None) -> list[Probe]:
    """The named probes, built with their options (each probe checks their values), in registry
    order (the order they run in)."""
    options = options or {}
    check_options(options, names)
    built = []
    for name, probe in PROBES.items():
        if name in names:
            try:
                built.append(probe(**options.get(name, {})))
            except SmoothprobeError as exc:
                raise SmoothprobeError(f"probe {name}: {exc}") from None
    return built


for _builtin in (NormsProbe, SecantProbe, CurvHVPProbe, TopEigProbe, TraceProbe, CurvDualProbe, CurvFDProbe):
    register(_builtin)
PRESETS: dict[str, tuple[str, ...]] = {
    "cheap": ("norms",),
    "standard": ("norms", "secant"),
    "full": tuple(PROBES),
}
"""Probe lists by name; `full` is every built-in probe."""
discover()

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

from collections.abc import Mapping
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
    """Register the probes installed packages name under the `smoothprobe.probes` entry points."""
    for entry in entry_points(group=ENTRY_POINTS):
        register(entry.load())


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

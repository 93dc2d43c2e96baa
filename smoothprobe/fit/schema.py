"""What a fit.json must hold before anything uses it: types, finiteness and sensible ranges.

`check_schedule_fit` covers the keys a schedule reads (constants, f*, Δ', η_max, the Δ range);
`check_fit` also the sections `SmoothnessFit.from_dict` reads. Either raises one SmoothprobeError
line naming the source and the field, e.g. ``fit.json: field 'constants.K0' must be a finite
number; got null``. Numbers that parse but no fit produces (ρ = 1e300, K = 1e300, f* = −1e300)
are refused too: they would overflow the schedule's arithmetic.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit.compare import CAUSES
from smoothprobe.smoothness import F_STAR_LIMIT

SCHEMA_VERSION = 2
"""fit.json's layout; 2 gave the status's cause and reason fields of their own (`status_cause`, `status_reason`)."""
MAGNITUDE = (1e-30, 1e30)
"""Smallest and largest |value| of a non-zero constant, Δ or η."""
RHO_RANGE = (1.0, 100.0)
STRINGS = ("f_star_source", "column", "delta_from", "verdict", "status", "status_cause", "status_reason")
OBJECTS = ("data", "least_squares", "bootstrap", "intervals")
LISTS = ("comparison", "sensitivity", "window")


MAX_DEPTH = 64
"""Deepest nesting of arrays/objects a fit.json or run.json may have (smoothprobe writes 4)."""


def json_depth_ok(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON `text` nests at most `limit` arrays/objects deep (checked before parsing, so a
    hostile file is refused in one line instead of exhausting the parser's recursion)."""
    depth = 0
    for char in text:
        if char in "[{":
            depth += 1
            if depth > limit:
                return False
        elif char in "]}":
            depth -= 1
    return True


LEGACY_CAUSES = {"f* = ": "degenerate f*", "only ": "few rows", "the middle 90%": "narrow gaps",
                 "Δ only spans": "narrow gaps", "K falls": "K falls", "the fitted envelope": "flat envelope",
                 "it does not beat": "no gain", "the rise of K": "rise not significant",
                 "the bootstrap interval": "rise includes 0", "it beats": "beats constant L"}
"""How each reason of `fit.compare.verdict` begins, and its cause: a version-1 fit.json kept both only
in its verdict sentence."""


def upgrade_fit(data: Any) -> Any:
    """fit.json content at the current schema (SCHEMA_VERSION): a version-1 fit gets `status_cause` and
    `status_reason` from its verdict sentence ("… the (rho, …) model is STATUS: REASON."); anything
    else is returned as it is.

    >>> v1 = {"schema_version": 1, "status": "not supported",
    ...       "verdict": "On steps 0..9, K falls as Δ grows (…); the (rho, K0, K1, K_rho) model is "
    ...                  "not supported: K falls as Δ grows, which the model cannot follow."}
    >>> fit = upgrade_fit(v1)
    >>> fit["schema_version"], fit["status_cause"], fit["status_reason"]
    (2, 'K falls', 'K falls as Δ grows, which the model cannot follow')
    """
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        return data
    said = re.search(rf"model is {re.escape(str(data.get('status')))}: (.+?)\.(?:\s|$)", str(data.get("verdict")))
    reason = said[1] if said else ""
    cause = next((c for start, c in LEGACY_CAUSES.items() if reason.startswith(start)), "")
    return {**data, "schema_version": SCHEMA_VERSION, "status_cause": cause, "status_reason": reason}


def read_fit_json(path: str, source: str | None = None) -> Any:
    """A fit.json's parsed content, upgraded to the current schema (`upgrade_fit`); unreadable, invalid
    or too deeply nested is one SmoothprobeError line."""
    source = source or str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise SmoothprobeError(f"cannot read fit file {source}: {err}") from None
    if not json_depth_ok(text):
        raise SmoothprobeError(f"{source} nests deeper than {MAX_DEPTH} levels; not a fit.json smoothprobe wrote")
    try:
        return upgrade_fit(json.loads(text))
    except json.JSONDecodeError as err:
        raise SmoothprobeError(f"cannot read fit file {source}: {err}") from None


def _fail(source: str, field: str, wanted: str, value: Any) -> None:
    shown = json.dumps(value, default=str)
    raise SmoothprobeError(f"{source}: field {field!r} must be {wanted}; got {shown if len(shown) <= 40 else shown[:37] + '...'}")


def _number(value: Any, source: str, field: str, *, null: bool = False, low: float = -MAGNITUDE[1],
            high: float = MAGNITUDE[1], tiny: float = MAGNITUDE[0]) -> None:
    """A finite number in [low, high] that is 0 or at least `tiny` in magnitude (or null if allowed)."""
    if value is None and null:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high or (value != 0 and abs(value) < tiny):
        span = f"in [{low:g}, {high:g}]" + (f", 0 or at least {tiny:g} in size" if tiny else "")
        _fail(source, field, f"a finite number {span}" + (" or null" if null else ""), value)


def _pair(value: Any, source: str, field: str) -> None:
    """A list of two finite numbers."""
    if not isinstance(value, list) or len(value) != 2:
        _fail(source, field, "a list of two numbers", value)
    for i, item in enumerate(value):
        _number(item, source, f"{field}[{i}]", tiny=0.0)


def check_schedule_fit(data: Any, source: str = "fit.json") -> None:
    """The keys a schedule reads: `constants` (ρ, K0, K1, Kρ), and where present f*, Δ', η_max
    and `delta_range`."""
    if not isinstance(data, dict):
        raise SmoothprobeError(f"{source} must hold a JSON object; got {type(data).__name__}")
    constants = data.get("constants")
    if not isinstance(constants, dict):
        _fail(source, "constants", "an object with rho, K0, K1 and K_rho", constants)
    for key in ("K0", "K1", "K_rho", "rho"):
        if key not in constants:
            _fail(source, f"constants.{key}", "a finite number", None)
    _number(constants["rho"], source, "constants.rho", low=RHO_RANGE[0], high=RHO_RANGE[1], tiny=0.0)
    # no floor on a constant's size: Kρ is in units of K/Δ^ρ, far below 1e-30 at a large ρ (ρ = 20 over gaps
    # up to 46 fitted Kρ = 4.7e-36), and a tiny one only moves Δ' towards ∞, as Kρ = 0 does
    _number(constants["K0"], source, "constants.K0", low=0.0, tiny=0.0)
    _number(constants["K1"], source, "constants.K1", tiny=0.0)
    _number(constants["K_rho"], source, "constants.K_rho", low=0.0, tiny=0.0)
    if "f_star" in data:
        _number(data["f_star"], source, "f_star", null=True, low=-F_STAR_LIMIT, high=F_STAR_LIMIT, tiny=0.0)
    for key in ("delta_peak", "eta_max"):
        _number(data.get(key), source, key, null=True, low=0.0)
    if "delta_range" in data:
        _pair(data["delta_range"], source, "delta_range")


def check_fit(data: Any, source: str = "fit.json") -> None:
    """Everything `SmoothnessFit.from_dict` reads: the schedule keys plus the result's sections."""
    check_schedule_fit(data, source)
    for key in ("f_star", "delta_range"):
        if key not in data:
            _fail(source, key, "present", None)
    for keys, kind, name in ((STRINGS, str, "a string"), (OBJECTS, dict, "an object"), (LISTS, list, "a list")):
        for key in keys:
            if not isinstance(data.get(key), kind):
                _fail(source, key, name, data.get(key))
    if data["status_cause"] not in (*CAUSES, ""):  # "": a version-1 reason with no known cause
        _fail(source, "status_cause", f"one of {', '.join(CAUSES)}", data["status_cause"])
    for key in ("quantile", "level"):
        _number(data.get(key), source, key, low=0.0, high=1.0, tiny=0.0)
    for key in ("spearman", "spearman_p"):
        _number(data.get(key), source, key, null=True, low=-1.0, high=1.0, tiny=0.0)
    for key in ("rows_in_window", "rows_used", "dropped_nan", "dropped_nonpositive_delta"):
        value = data["data"].get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            _fail(source, f"data.{key}", "an integer >= 0", value)
    for key in ("delta_range", "k_range"):
        _pair(data["data"].get(key), source, f"data.{key}")
    _pair(data["window"], source, "window")
    for section in ("comparison", "sensitivity"):
        for i, entry in enumerate(data[section]):
            if not isinstance(entry, dict):
                _fail(source, f"{section}[{i}]", "an object", entry)
            for key, value in entry.items():
                if key in ("name", "skipped"):
                    if value is not None and not isinstance(value, str):
                        _fail(source, f"{section}[{i}].{key}", "a string or null", value)
                elif not isinstance(value, dict):
                    _number(value, source, f"{section}[{i}].{key}", null=True, tiny=0.0)
    for key, value in data["least_squares"].items():
        _number(value, source, f"least_squares.{key}", null=True, tiny=0.0)
    origin = data.get("source")
    if origin is not None and not (isinstance(origin, dict) and all(isinstance(v, str) for v in origin.values())):
        _fail(source, "source", "an object of strings (task, optimizer, family) or null", origin)
    for key, pair in data["intervals"].items():
        if not isinstance(pair, list) or len(pair) != 2:
            _fail(source, f"intervals.{key}", "a list [low, high]", pair)
        for i, value in enumerate(pair):
            _number(value, source, f"intervals.{key}[{i}]", null=True, tiny=0.0)
    profile = data.get("rho_profile")
    if profile is not None and not (isinstance(profile, list) and all(
            isinstance(p, list) and len(p) == 2 for p in profile)):
        _fail(source, "rho_profile", "a list of [rho, loss] pairs or null", profile)
    for i, (rho, loss) in enumerate(profile or []):
        _number(rho, source, f"rho_profile[{i}][0]", low=RHO_RANGE[0], high=RHO_RANGE[1], tiny=0.0)
        _number(loss, source, f"rho_profile[{i}][1]", null=True, tiny=0.0)
    if data.get("f_star_fit") is not None and not isinstance(data["f_star_fit"], dict):
        _fail(source, "f_star_fit", "an object or null", data["f_star_fit"])

"""HTML reports: structure, escaping, figure data that matches the run, and a real headless browser."""

import base64
import dataclasses
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smoothprobe import SmoothprobeError, TrainConfig, load_run, train
from smoothprobe.fit import fit_run
from smoothprobe.report import write_report
from smoothprobe.report.data import build_view, final_losses, probe_costs
from smoothprobe.report.figures import lr_at_gap, switch_step
from smoothprobe.schedule.decision import progress_trial
from smoothprobe.smoothness import delta_peak, eta_max, is_physical

SECTION_IDS = ("summary", "config", "loss-lr", "k-vs-delta", "residuals", "model-comparison",
               "schedule", "tensor-norms", "curvature", "probe-cost", "warnings")
DATA_SECTIONS = ("k-vs-delta", "residuals", "model-comparison", "schedule", "tensor-norms",
                 "curvature", "probe-cost")
QUADRATIC = {"task": "quadratic", "optimizer": "lion", "lr": 1e-2, "steps": 40, "eval_every": 20,
             "device": "cpu"}
PROBES = {"probes": ["norms", "secant", "curv_fd", "top_eig", "trace"], "every": 1,
          "heavy_every": 10}
HOSTILE_DIR = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(1)</script>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    """Every tag with its attributes, the enclosing section of each tag, and each section's text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict, str | None]] = []
        self.text: dict[str | None, list[str]] = {}
        self.section: str | None = None
        self.sections: dict[str, dict] = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs.get("id")
            self.sections[self.section] = attrs
        self.tags.append((tag, attrs, self.section))

    def handle_endtag(self, tag):
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        self.text.setdefault(self.section, []).append(data)

    def section_text(self, section: str) -> str:
        return " ".join(" ".join(self.text.get(section, [])).split())

    def find(self, tag: str, section: str | None = None) -> list[dict]:
        return [a for t, a, s in self.tags if t == tag and (section is None or s == section)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A probed quadratic run, an unprobed one in a hostile directory name, and a tampered copy."""
    root = tmp_path_factory.mktemp("report")
    probed = train(TrainConfig(**QUADRATIC, probes=PROBES), root / "probed", progress=False)
    plain = train(TrainConfig(**QUADRATIC, seed=1, schedule="constant"), root / HOSTILE_DIR,
                  progress=False)
    tampered = root / "tampered"
    shutil.copytree(probed, tampered)
    lines = (tampered / "steps.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for i in (3, 11, 25):  # planted: probed rows whose K is lost
        rows[i]["secant_K"] = None
    for i in (7, 30):  # planted: losses below f* = 0, so Δ <= 0
        rows[i]["loss"] = -0.5
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 40, "lo'  # torn last record
    (tampered / "steps.jsonl").write_text(text)
    return probed, plain, tampered


@pytest.fixture(scope="module")
def two_run_report(runs, tmp_path_factory):
    probed, plain, _ = runs
    out = tmp_path_factory.mktemp("out") / "report.html"
    write_report([probed, plain], out, title=SCRIPT)
    return out.read_text()


def test_report_has_every_section_and_no_external_resource(two_run_report):
    page = Page(two_run_report)
    assert set(SECTION_IDS) <= set(page.sections)
    assert not page.find("script") and not page.find("link") and not page.find("iframe")
    refs = [a[k] for a in (attrs for _, attrs, _ in page.tags) for k in ("src", "href") if k in a]
    assert refs and all(r.startswith(("#", "data:image/png;base64,")) for r in refs)
    assert all(a["href"].startswith("#") for a in page.find("a"))
    for section in ("loss-lr", "k-vs-delta", "residuals", "schedule", "tensor-norms",
                    "curvature"):
        assert len(page.find("img", section)) == 1, section  # only the probed run has data
    for img in page.find("img"):
        head, payload = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(payload)[:8] == b"\x89PNG\r\n\x1a\n"


def test_hostile_names_render_as_text(runs, two_run_report, tmp_path):
    html = two_run_report
    assert SCRIPT not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    page = Page(html)
    assert not page.find("script")
    assert all(img["src"].startswith("data:") for img in page.find("img"))
    assert SCRIPT in page.section_text(None)  # the title, shown as text
    assert HOSTILE_DIR in page.section_text("summary")
    out = write_report([runs[1]], tmp_path / "r.html", labels=["<b>bold</b> $x$"])
    labelled = Page(out.read_text())
    assert not labelled.find("b") and "<b>bold</b> $x$" in labelled.section_text("summary")


def test_scatter_points_equal_probed_rows_with_finite_k_and_positive_gap(runs, tmp_path):
    _, _, tampered = runs
    run = load_run(tampered)
    steps = run.steps
    expected = int((np.isfinite(steps["secant_K"]) & (steps["loss"] - 0.0 > 0)).sum())
    assert expected == 40 - 3 - 2
    page = Page(write_report([tampered], tmp_path / "r.html").read_text())
    assert page.sections["k-vs-delta"]["data-points"] == str(expected)
    (figure,) = page.find("figure", "k-vs-delta")
    assert figure["data-points"] == str(expected)
    model = page.section_text("model-comparison")
    assert f"{expected} of 40 rows used (3 without a finite K" in model
    assert "; 2 with Δ ≤ 0)" in model
    warnings = page.section_text("warnings")
    assert "dropped a truncated last record" in warnings
    assert "3 probed steps have a non-finite secant K" in warnings
    assert "2 fit rows have Δ ≤ 0" in warnings


def test_sections_without_data_say_so(runs, tmp_path):
    _, plain, _ = runs
    page = Page(write_report([plain], tmp_path / "r.html").read_text())
    assert page.sections["k-vs-delta"]["data-points"] == "0"
    for section in DATA_SECTIONS:
        assert not page.find("img", section), section
        notes = [a for a in page.find("p", section) if a.get("class") == "absent"]
        assert notes, f"section {section} is silent about its missing data"
    assert "no secant_K column" in page.section_text("k-vs-delta")
    assert "No curvature probes" in page.section_text("curvature")
    assert page.find("img", "loss-lr")


def test_run_without_steps_gives_a_report_that_says_so(runs, tmp_path):
    empty = tmp_path / "empty"
    shutil.copytree(runs[1], empty)
    for table in ("steps", "evals", "tensors"):
        (empty / f"{table}.jsonl").write_text("")
    page = Page(write_report([empty], tmp_path / "r.html").read_text())
    assert not page.find("img")
    assert "No steps recorded yet" in page.section_text("loss-lr")
    assert "the store holds 0 of 40 planned steps" in page.section_text("warnings")


def test_given_fit_is_shown_with_its_constants_and_band(runs, tmp_path):
    probed, _, tampered = runs
    fit = fit_run(load_run(probed), bootstrap=20, seed=3)
    fit.to_json(tmp_path / "fit.json")
    page = Page(write_report([probed], tmp_path / "r.html", fits=[tmp_path / "fit.json"])
                .read_text())
    model = page.section_text("model-comparison")
    assert fit.verdict in model
    assert f"{fit.K0:.4g}" in model and f"{fit.K1:.4g}" in model
    lo, hi = fit.intervals["K0"]
    assert f"[{lo:.4g}, {hi:.4g}]" in model
    assert "fit given" in page.section_text("k-vs-delta")
    assert "from 20 block-bootstrap refits" in page.section_text("k-vs-delta")
    # The band is the fit's own (its stored refits), whatever run it is drawn over.
    view = build_view(load_run(tampered), "t", "#000000", fit)
    grid, low, high = view.band
    np.testing.assert_array_equal(np.stack([low, high]), np.stack(fit.band(grid)))
    assert len(view.points) == 35
    # A fit without refits draws no band and says so.
    bare = fit_run(load_run(probed), bootstrap=0)
    view = build_view(load_run(probed), "p", "#000000", bare)
    assert view.band is None and "the fit has no stored bootstrap refits" in view.band_note


def test_a_fit_of_another_run_is_refused(runs, tmp_path):
    """A fit whose column the run lacks, or whose steps lie outside the run's, was made on another run:
    shown, the report would give that run's verdict as this one's."""
    probed, plain, _ = runs
    fit = fit_run(load_run(probed), bootstrap=0)
    with pytest.raises(SmoothprobeError, match="fits column secant_K, which run .* does not have"):
        build_view(load_run(plain), "p", "#000000", fit)
    later = dataclasses.replace(fit, window=(fit.window[0] + 1000, fit.window[1] + 1000))
    with pytest.raises(SmoothprobeError, match=r"saw steps \d+\.\.\d+, outside run"):
        build_view(load_run(probed), "p", "#000000", later)
    assert build_view(load_run(probed), "p", "#000000", fit).fit is fit


def test_envelope_band_brackets_the_envelope(runs):
    probed, _, _ = runs
    view = build_view(load_run(probed), "p", "#000000", None)
    grid, low, high = view.band
    envelope = view.fit.predict(grid)
    assert np.all(low <= high)
    inside = np.mean((low <= envelope * (1 + 1e-9)) & (envelope <= high * (1 + 1e-9)))
    assert inside > 0.9


def test_probe_costs_are_overheads_over_training_time_without_probes():
    steps = pd.DataFrame({"step": [0, 1, 2, 3], "step_time_s": [2.0, 1.0, 1.0, 2.0],
                          "probe_time_s": [1.0, np.nan, np.nan, 1.0],
                          "time_norms_s": [0.25, np.nan, np.nan, 0.25],
                          "time_s": [2.0, 3.0, 4.0, 6.0]})
    costs = {c["probe"]: c for c in probe_costs(steps)}
    assert set(costs) == {"norms", "all probes"}
    assert costs["all probes"]["overhead"] == pytest.approx(2.0 / 4.0)
    assert costs["norms"]["overhead"] == pytest.approx(0.5 / 4.0)
    assert costs["norms"]["per_call_s"] == pytest.approx(0.25) and costs["norms"]["calls"] == 2
    assert probe_costs(steps.drop(columns=["probe_time_s", "time_norms_s"])) == []


def test_final_losses_and_switch_step(runs):
    run = load_run(runs[0])
    view = build_view(run, "p", "#000000", None)
    summary = final_losses(view)
    assert summary["final_loss"] == pytest.approx(run.steps["loss"].iloc[-10:].mean())
    assert summary["final_val"] == pytest.approx(run.evals["val_loss"].iloc[-1])
    assert summary["steps_done"] == 40
    view.run.steps = pd.DataFrame({"step": range(6), "loss": [5.0, 4, 3, 2, 1, 0.5],
                                   "phase": ["warmup"] * 4 + ["decay"] * 2})
    assert switch_step(view, math.inf) == 4
    view.run.steps = view.run.steps.drop(columns="phase")
    assert switch_step(view, 3.5) == 3  # rolling mean of 10 (min 1): 5, 4.5, 4, 3.5
    assert switch_step(view, math.inf) is None


def test_bad_arguments_are_one_line_errors(runs, tmp_path):
    probed, plain, _ = runs
    with pytest.raises(SmoothprobeError, match="runs must be"):
        write_report(str(probed), tmp_path / "r.html")
    with pytest.raises(SmoothprobeError, match="fits has 2 entries for 1 runs"):
        write_report([probed], tmp_path / "r.html", fits=[None, None])
    with pytest.raises(SmoothprobeError, match="labels has 1 entries for 2 runs"):
        write_report([probed, plain], tmp_path / "r.html", labels=["a"])
    with pytest.raises(SmoothprobeError, match="not a directory|no run.json"):
        write_report([tmp_path], tmp_path / "r.html")


BROWSER_CHECK = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) console.error("broken image: " + img.alt);
  }
  for (const entry of performance.getEntriesByType("resource")) {
    console.error("fetched " + entry.name);
  }
  console.log("checked " + document.images.length + " images");
});
</script>"""


def chromium(page: Path, shot: Path, tmp_path: Path) -> list[str]:
    """Load `page` in headless chromium, screenshot it, and return its console lines."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, text=True, timeout=120)
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_browser_console_capture_sees_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<p>x</p><img alt="bad" src="data:image/png;base64,AAAA">' + BROWSER_CHECK)
    console = chromium(page, tmp_path / "bad.png", tmp_path)
    assert any("broken image: bad" in line for line in console)
    assert any('"checked 1 images"' in line for line in console)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_browser_loads_report_without_errors(two_run_report, tmp_path):
    from PIL import Image

    images = len(Page(two_run_report).find("img"))
    page = tmp_path / "report.html"
    page.write_text(two_run_report.replace("</body>", BROWSER_CHECK + "</body>"))
    shot = tmp_path / "shot.png"
    console = chromium(page, shot, tmp_path)
    assert len(console) == 1 and f'"checked {images} images"' in console[0], console
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1280)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50 and pixels.std() > 5


# degenerate fits and runs: a sentence in place of a figure, never a traceback -----------------

def variant(source: Path, target: Path, edit) -> Path:
    """A copy of the run at `source` whose step rows are passed through `edit`."""
    shutil.copytree(source, target)
    rows = [json.loads(line) for line in (target / "steps.jsonl").read_text().splitlines()]
    (target / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))
    return target


def with_constants(fit, k0: float, k1: float, k_rho: float):
    """The fit with other constants (and their Δ', η_max), as a hand-edited fit.json would be."""
    return dataclasses.replace(fit, K0=k0, K1=k1, K_rho=k_rho,
                               delta_peak=float(delta_peak(k0, k_rho, fit.rho)),
                               eta_max=float(eta_max(k0, k1, k_rho, fit.rho)))


@pytest.fixture(scope="module")
def probed_fit(runs):
    return fit_run(load_run(runs[0]), bootstrap=10)


def test_a_fit_with_k_negative_near_zero_gets_a_sentence_not_a_schedule(runs, probed_fit,
                                                                          tmp_path):
    lion = with_constants(probed_fit, 0.0, -1.1e6, 2.4e6)  # what `smoothprobe fit` once gave
    assert lion.delta_peak == 0 and lion.eta_max == math.inf
    page = Page(write_report([runs[0]], tmp_path / "r.html", fits=[lion]).read_text())
    assert not page.find("img", "schedule")
    reason = (f"K0 = 0, K1 = -1.1e+06, K_rho = 2.4e+06 are not physical: min over Δ ≥ 0 of K(Δ) "
              f"is {-1.1e6**2 / (4 * 2.4e6):.4g}")
    assert f"No implied schedule: {reason}" in page.section_text("schedule")
    assert f"this fit must not drive a learning-rate schedule: {reason}" in \
        page.section_text("warnings")
    assert page.find("img", "k-vs-delta") and page.find("img", "residuals")


def test_a_falling_k_fit_is_flagged_as_one_that_must_not_drive(runs, probed_fit, tmp_path):
    why = "K falls as Δ grows, which the model cannot follow"
    falling = dataclasses.replace(probed_fit, status="not supported", status_cause="K falls", status_reason=why,
                                  spearman=-0.6, spearman_p=1e-6,
                                  data={**probed_fit.data, "rows_used": 100})  # 10 rows above a 0.9 envelope
    assert falling.schedule_problem() == f"the fit's status is 'not supported', not 'supported': {why}"
    page = Page(write_report([runs[0]], tmp_path / "r.html", fits=[falling]).read_text())
    assert (f"this fit must not drive a learning-rate schedule: the fit's status is 'not supported', not "
            f"'supported': {why}" in page.section_text("warnings"))


def test_a_narrow_gap_fit_that_drives_through_a_significant_rise_is_flagged(runs, probed_fit, tmp_path):
    narrow = dataclasses.replace(probed_fit, status="not identifiable", spearman=0.6, spearman_p=1e-6,
                                 status_cause="narrow gaps",
                                 status_reason="the middle 90% of Δ = loss − f* spans only 2.1..2.4",
                                 intervals={**probed_fit.intervals, "growth": [0.1, 0.5]},
                                 data={**probed_fit.data, "rows_used": 100})  # 10 rows above a 0.9 envelope
    assert narrow.schedule_problem() is None  # `decision._rises`: it may drive
    page = Page(write_report([runs[0]], tmp_path / "r.html", fits=[narrow]).read_text())
    assert ("the model is not identifiable on this run: `train --fit` drives a schedule from it only because "
            "K's rise with Δ is significant" in page.section_text("warnings"))


def test_a_physical_fit_with_k1_negative_draws_its_schedule_with_the_peak(runs, probed_fit,
                                                                          tmp_path):
    dip = with_constants(probed_fit, 1.0, -1.0, 1.0)  # K = 1 − Δ + Δ², least K 0.75 at Δ = 0.5
    assert dip.delta_peak == 1.0 and dip.eta_max == pytest.approx(1.0)
    page = Page(write_report([runs[0]], tmp_path / "r.html", fits=[dip]).read_text())
    assert len(page.find("img", "schedule")) == 1
    assert "Δ' = 1, η_max = 1," in page.section_text("schedule")


def test_a_five_step_run_renders_its_points_and_says_why_there_is_no_fit(tmp_path):
    five = train(TrainConfig(**{**QUADRATIC, "steps": 5}, probes={"probes": ["secant"],
                                                                 "every": 1}),
                 tmp_path / "five", progress=False)
    page = Page(write_report([five], tmp_path / "r.html").read_text())
    assert page.sections["k-vs-delta"]["data-points"] == "5"
    assert "too few points to fit: 5 rows" in page.section_text("schedule")
    assert not page.find("img", "residuals") and not page.find("img", "schedule")


def test_a_run_whose_secant_k_are_all_null_says_so(runs, probed_fit, tmp_path):
    nulls = variant(runs[0], tmp_path / "nulls",
                    lambda rows: [{**r, "secant_K": None} if "secant_K" in r else r for r in rows])
    page = Page(write_report([nulls], tmp_path / "r.html").read_text())
    assert "no probed row has a finite secant_K" in page.section_text("k-vs-delta")
    assert "column 'secant_K' is all NaN" in page.section_text("schedule")
    assert "40 probed steps have a non-finite secant K" in page.section_text("warnings")
    given = Page(write_report([nulls], tmp_path / "g.html", fits=[probed_fit]).read_text())
    assert len(given.find("img", "schedule")) == 1 and not given.find("img", "k-vs-delta")


def test_a_run_without_losses_renders_with_a_given_fit(runs, probed_fit, tmp_path):
    lossless = variant(runs[0], tmp_path / "lossless",
                       lambda rows: [{k: v for k, v in r.items() if k != "loss"} for r in rows])
    page = Page(write_report([lossless], tmp_path / "r.html", fits=[probed_fit]).read_text())
    assert "no loss column: Δ = loss − f* cannot be computed" in page.section_text("k-vs-delta")
    assert len(page.find("img", "schedule")) == 1   # η(Δ) of the fit; no LR-at-Δ points
    assert "no fit" not in page.section_text("schedule")


def test_the_recorded_runs_auto_fit_is_physical_and_its_schedule_drawn(runs):
    view = build_view(load_run(runs[0]), "p", "#000000", None)
    fit = view.fit
    assert is_physical(fit.K0, fit.K1, fit.K_rho, fit.rho)
    assert 0 < fit.delta_peak < math.inf and 0 < fit.eta_max < math.inf
    assert fit.status == "not identifiable" and "only 40 rows" in fit.verdict
    assert fit.schedule_problem() == ("the fit's status is 'not identifiable', not 'supported': only 40 rows, of "
                                      "which about 4 lie above a τ = 0.9 envelope (placing it needs 5)")


# ---------------------------------------------------------------- where users look


@pytest.fixture
def figure_of(monkeypatch):
    """Figure functions return their matplotlib Figure instead of a PNG, to read axes numbers."""
    from smoothprobe.report import figures

    monkeypatch.setattr(figures, "data_uri", lambda fig: fig)
    return figures


def test_f_star_line_sits_inside_the_loss_axis_not_on_its_edge(runs, figure_of):
    view = build_view(load_run(runs[0]), "p", "#000000", None)
    ax = figure_of.loss_lr([view]).axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("f*")]
    assert line.get_ydata()[0] == 0.0 == view.f_star
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "linear"  # f* = 0 cannot be drawn on a log axis
    assert (0.0 - low) >= 0.06 * (high - low) * (1 - 1e-9)


def test_show_level_lifts_a_line_off_the_bottom_of_a_log_axis(figure_of):
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    ax.plot([0, 1], [1.0, 100.0])
    ax.set_yscale("log")
    ax.axhline(1.0)
    figure_of.show_level(ax, 1.0)
    low, high = np.log10(ax.get_ylim())
    assert (0.0 - low) == pytest.approx(0.06 * (high - low), rel=1e-9)


def test_least_squares_is_drawn_over_the_data_range_and_does_not_move_the_axes(runs, probed_fit,
                                                                               figure_of):
    view = build_view(load_run(runs[0]), "p", "#000000", probed_fit)
    wild = dataclasses.replace(probed_fit, least_squares={**probed_fit.least_squares,
                                                          "K0": -50.0, "K_rho": 1e9})
    wild_view = build_view(load_run(runs[0]), "p", "#000000", wild)
    limits = []
    for v in (view, wild_view):
        ax = figure_of.k_vs_delta(v).axes[0]
        (ls,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("least squares")]
        x = ls.get_xdata()
        assert x.min() == pytest.approx(v.points["delta"].min(), rel=1e-12)
        assert x.max() == pytest.approx(v.points["delta"].max(), rel=1e-12)
        limits.append(ax.get_ylim())
    np.testing.assert_allclose(limits[0], limits[1], rtol=1e-12)  # the wild curve is clipped


def test_report_command_writes_into_the_run_and_prints_only_its_path(runs, tmp_path):
    from click.testing import CliRunner
    from smoothprobe.cli.main import main

    one = tmp_path / "one"
    shutil.copytree(runs[0], one)
    result = CliRunner().invoke(main, ["report", str(one)])
    assert result.exit_code == 0, result.output
    assert result.output == f"report written to {one / 'report.html'}\n"
    assert (one / "report.html").read_text().startswith("<!DOCTYPE html>")

    other = tmp_path / "other"
    shutil.copytree(runs[0], other)
    result = CliRunner().invoke(main, ["report", str(one), str(other)])
    assert result.output == f"report written to {tmp_path.resolve() / 'report-2-runs.html'}\n"
    assert (tmp_path / "report-2-runs.html").is_file()


def test_a_run_without_a_fit_says_why_in_the_warnings(tmp_path):
    few = train(TrainConfig(**{**QUADRATIC, "steps": 5}, probes={"probes": ["secant"], "every": 1}),
                tmp_path / "few", progress=False)
    page = Page(write_report([few], tmp_path / "r.html").read_text())
    warnings = page.section_text("warnings")
    assert "no fit: too few points to fit: 5 rows" in warnings and "No warnings" not in warnings


def test_report_says_when_a_spectrum_end_has_not_converged(tmp_path):
    run = train(TrainConfig(**{**QUADRATIC, "steps": 3},
                            probes={"probes": ["top_eig"], "every": 1, "heavy_every": 1}),
                tmp_path / "q", progress=False)
    page = Page(write_report([run], tmp_path / "r.html").read_text())
    warnings = page.section_text("warnings")
    assert ("bottom_eig did not converge on 3 of 3 heavy probe steps (Ritz residual above 1% of |θ|): "
            "there it is only an upper bound on λ_min") in warnings


def test_curvature_figure_rings_the_unconverged_spectrum_ends(tmp_path, figure_of):
    run = train(TrainConfig(**{**QUADRATIC, "steps": 3},
                            probes={"probes": ["top_eig"], "every": 1, "heavy_every": 1}),
                tmp_path / "q", progress=False)
    view = build_view(load_run(run), "q", "#000000", None)
    ax = figure_of.curvature([view]).axes[0]
    rings = [ln for ln in ax.get_lines() if ln.get_marker() == "o" and ln.get_linestyle() == "None"]
    bottom = view.steps.bottom_eig.astype(float).tolist()
    assert any(ln.get_ydata().tolist() == bottom for ln in rings)  # all 3 bottom ends are bounds
    assert sum(ln.get_label() == "not converged (a bound)" for ln in rings) == 1


def test_the_closed_loops_decision_is_in_the_runs_section(runs, tmp_path):
    decided = tmp_path / "decided"
    shutil.copytree(runs[1], decided)
    info = json.loads((decided / "run.json").read_text())
    info["decision"] = {"branch": "no-warmup", "step": 60, "reason": "<i>past</i> its rise", "delta": 3.3,
                        "interval": [3.5491, 3.8487], "delta_range": [3.1012, 5.2023], "refits": 2,
                        "momentum_restarted": 12}
    info["pilot"] = {"steps": 100, "status": "no-warmup", "history": [
        {"step": 49, "branch": "not yet", "by": "fit", "held": "no-warmup"},
        {"step": 55, "branch": "not yet", "by": "fit", "held": "fit-driven", "held_by": "the falling step size"},
        {"step": 60, "branch": "no-warmup", "by": "fit"}]}
    (decided / "run.json").write_text(json.dumps(info))
    page = Page(write_report([decided], tmp_path / "r.html").read_text())
    text = page.section_text("summary")
    assert ("the fit decided no-warmup at step 60 (<i>past</i> its rise); Δ' interval [3.549, 3.849], "
            "measured gaps [3.101, 5.202], after 2 refit(s); the LR jumped, so the optimizer's momentum restarted "
            "(12 buffers zeroed). Each decision, by step: 49 not yet (the stability limit "
            "held back no-warmup); 55 not yet (the falling step size held back fit-driven); 60 no-warmup.") in text
    assert not page.find("i", "summary")  # the reason is text, not markup
    info["decision"] = {"branch": "no-warmup", "step": 0, "reason": "within the stability limit", "by": "step test",
                        "trial": [{"step": s} for s in range(3)]}
    info["pilot"]["history"] = [info["decision"]]
    (decided / "run.json").write_text(json.dumps(info))
    text = Page(write_report([decided], tmp_path / "r.html").read_text()).section_text("summary")
    assert ("the step test decided no-warmup before step 0, from 3 trial steps it undid (within the stability "
            "limit). Each decision, by step: 0 no-warmup (step test).") in text
    info["decision"] = {"branch": "no-warmup", "step": 0, "reason": "a slow start", "by": "progress test",
                        "trial": progress_trial([{"loss": 5.0 - s / 100} for s in range(50)])}
    info["pilot"]["history"] = [info["decision"]]
    (decided / "run.json").write_text(json.dumps(info))
    text = Page(write_report([decided], tmp_path / "r.html").read_text()).section_text("summary")
    assert ("the progress test decided no-warmup before step 0, from 50 trial steps it undid (a slow start). "
            "Each decision, by step: 0 no-warmup (progress test).") in text


def test_the_scatter_shows_the_rows_the_fit_saw(runs, tmp_path):
    """A fit on steps 0-34 of 40: the K-vs-Δ figure and its residuals hold those rows only, not the ones
    after the fit's window."""
    run = load_run(runs[0])
    fit = fit_run(run, window=(0, 35), bootstrap=0)
    steps = run.steps
    late = steps[(steps["step"] < 35) & np.isfinite(steps["secant_K"]) & (steps["loss"] > 0)]
    page = Page(write_report([runs[0]], tmp_path / "r.html", fits=[fit]).read_text())
    assert page.sections["k-vs-delta"]["data-points"] == str(len(late)) and 0 < len(late) < len(steps)


def test_the_lr_used_is_placed_at_the_gap_the_fit_measured(probed_fit):
    """A fit on loss_after drew the LR at loss − f* under an axis labelled loss_after − f*; now Δ comes
    from the fit's column, and rows without it (unprobed) are left out, not drawn at the wrong gap."""
    steps = pd.DataFrame({"step": [0, 1, 2, 3], "lr": [0.1, 0.2, 0.3, 0.4], "loss": [5.0, 4.0, 3.0, 2.0],
                          "loss_after": [4.5, np.nan, 2.5, np.nan]})
    after = dataclasses.replace(probed_fit, delta_from="loss_after", f_star=1.0)
    delta, lr, step = lr_at_gap(steps, after)
    assert delta.tolist() == [3.5, 1.5] and lr.tolist() == [0.1, 0.3] and step.tolist() == [0, 2]
    delta, lr, _ = lr_at_gap(steps, dataclasses.replace(after, delta_from="loss", f_star=3.0))
    assert delta.tolist() == [2.0, 1.0] and lr.tolist() == [0.1, 0.2]  # Δ ≤ 0 has no place on a log axis
    assert [len(a) for a in lr_at_gap(steps.drop(columns="lr"), after)] == [0, 0, 0]

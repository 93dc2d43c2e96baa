"""Regenerate the example reports in reports/ from runs recorded by the current code.

    python reports/make_reports.py [--runs DIR] [--steps N]

Records the tiny LLaMA on the Markov task (f* known exactly: the chain's entropy rate) with Lion
and curvature probes, fits it, trains the adaptive schedule from that fit and a linear warm-up
baseline, and writes reports/markov-lion.html (the probed run) and
reports/markov-lion-schedules.html (the three runs overlaid); then runs `smoothprobe demo` for
reports/demo.html and, where Debian's chromium is installed, the README's reports/screenshot.png.
About 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from smoothprobe import SmoothprobeError, TrainConfig, load_run, train
from smoothprobe.demo import adaptive_schedule, demo
from smoothprobe.fit import fit_run
from smoothprobe.report import write_report

HERE = Path(__file__).resolve().parent
COMMON = {"task": "markov", "optimizer": "lion", "lr": 1e-3, "eval_every": 50, "seed": 0}
PROBED = {"probes": ["norms", "secant", "curv_fd", "top_eig", "trace"], "every": 4,
          "heavy_every": 30}
SECANT = {"preset": "standard", "every": 5}


LABELS = {"fit-driven": "adaptive η(Δ) from the fit", "no-warmup": "the fit's decision: no warm-up",
          "not yet": "adaptive η(Δ), practical parametrisation"}
"""The adaptive run's label in the report, by the branch its fit took (`demo.adaptive_schedule`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None, help="where to keep the run directories")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    runs = args.runs or Path(tempfile.mkdtemp(prefix="smoothprobe-reports-"))
    steps = {**COMMON, "steps": args.steps}

    print(f"recording the probed run into {runs / 'probed'}")
    probed = train(TrainConfig(**steps, probes=PROBED), runs / "probed", overwrite=True)
    fit = fit_run(load_run(probed), bootstrap=200)
    fit_path = runs / "fit.json"
    fit.to_json(fit_path)
    print(fit.verdict)

    options, decision = adaptive_schedule(fit, fit_path)
    if not decision.decided:
        print(f"the fit cannot drive a schedule ({decision.reason}); using the practical parametrisation "
              "(div 10) instead")
    adaptive_label = LABELS[decision.branch]
    print("training the adaptive schedule and a 10% linear warm-up baseline")
    try:
        adaptive = train(TrainConfig(**steps, adaptive=options, probes=SECANT), runs / "adaptive",
                         overwrite=True)
    except SmoothprobeError as err:
        raise SystemExit(f"adaptive run failed: {err}") from None
    warmup = train(TrainConfig(**steps, warmup=0.1, probes=SECANT), runs / "warmup",
                   overwrite=True)

    single = write_report([probed], HERE / "markov-lion.html", fits=[fit],
                          title="Tiny LLaMA on the Markov task, Lion: curvature along training")
    sweep = write_report(
        [probed, adaptive, warmup], HERE / "markov-lion-schedules.html", fits=[fit],
        labels=["cosine, no warm-up", adaptive_label, "cosine, 10% linear warm-up"],
        title="Tiny LLaMA on the Markov task, Lion: adaptive warm-up against fixed schedules")
    print("running `smoothprobe demo` for reports/demo.html")
    demo_report = demo(runs / "demo", progress=False)
    shutil.copyfile(demo_report, HERE / "demo.html")
    for path in (single, sweep, HERE / "demo.html"):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    screenshot(HERE / "demo.html", HERE / "screenshot.png")


def screenshot(page: Path, png: Path) -> None:
    """The README's picture: the top of a report in headless Debian chromium (skipped without it)."""
    browser = shutil.which("chromium")
    if browser is None:
        print("chromium not found: screenshot not updated")
        return
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={profile}", "--window-size=1100,1500",
                        "--hide-scrollbars", f"--screenshot={png}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()

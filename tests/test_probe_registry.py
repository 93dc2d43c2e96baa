"""The probe registry (smoothprobe/probes/__init__.py): what probes declare about themselves, and a
probe from another package reaching the CLI, steps.jsonl, the fit and the report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from smoothprobe.cli.main import main

from smoothprobe import probes
from smoothprobe.config import ProbeConfig
from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit import fit_run
from smoothprobe.geometry import Geometry
from smoothprobe.probes import PROBES, build, k_columns, panels, register
from smoothprobe.probes.base import ProbeContext
from smoothprobe.probes.oracle import GradOracle
from smoothprobe.report import write_report
from smoothprobe.store import load_run

TOY = '''
"""A toy probe in its own package: twice the batch loss at x_{t+1}."""

from smoothprobe.probes.base import Line, Panel, Probe
from smoothprobe.probes.result import ProbeResult


class ToyProbe(Probe):
    name = "toy"
    columns = ("toy_K",)
    k_columns = ("toy_K",)
    panel = Panel("toy: scaled loss", (Line("toy_K"),))

    def __init__(self, scale: float = 2.0) -> None:
        self.scale = scale

    def measure(self, context):
        return ProbeResult({"toy_K": self.scale * context.gradient()[0]})
'''


@pytest.fixture
def registry():
    """The registry as it was, put back after the test."""
    saved = dict(PROBES)
    yield PROBES
    PROBES.clear()
    PROBES.update(saved)


@pytest.fixture
def toy_package(tmp_path, monkeypatch, registry):
    """A directory holding toy_probe.py and an installed distribution naming it as an entry point."""
    root = tmp_path / "plugin"
    (root / "toy_probe-0.1.dist-info").mkdir(parents=True)
    (root / "toy_probe.py").write_text(textwrap.dedent(TOY))
    (root / "toy_probe-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-probe\nVersion: 0.1\n")
    (root / "toy_probe-0.1.dist-info" / "entry_points.txt").write_text("[smoothprobe.probes]\ntoy = toy_probe:ToyProbe\n")
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.modules.pop("toy_probe", None)


def test_a_probe_in_one_new_file_reaches_the_cli_the_steps_the_fit_and_the_report(toy_package, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(toy_package), os.environ.get("PYTHONPATH", "")])}
    help_text = subprocess.run([sys.executable, "-m", "smoothprobe.cli.main", "record", "--help"], env=env,
                               capture_output=True, text=True, check=True).stdout
    assert "curv_dual,toy,curv_fd)" in "".join(help_text.split())  # a fresh process finds it by its entry point

    probes.discover()
    assert list(PROBES)[-2:] == ["toy", "curv_fd"]  # the FD probe still runs last
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["record", "--task", "quadratic", "--optimizer", "normsgd", "--lr", "0.05",
                                       "--steps", "40", "--every", "1", "--probes", "norms,secant,toy", "--out",
                                       str(run_dir), "--no-progress"])
    assert result.exit_code == 0, result.output
    steps = load_run(run_dir).steps
    assert steps["toy_K"].notna().all()
    assert torch.allclose(torch.tensor(steps["toy_K"].to_numpy()), 2 * torch.tensor(steps["loss_after"].to_numpy()))

    assert "toy_K" in k_columns()
    fit = fit_run(load_run(run_dir), column="toy_K", f_star=0.0, bootstrap=0)
    assert fit.column == "toy_K"

    assert ("toy: scaled loss", PROBES["toy"].panel.lines) == panels()[-1]
    html = write_report([run_dir], tmp_path / "report.html").read_text()
    assert "No curvature probes in these runs" not in html  # only the toy's panel can earn the figure


def test_options_reach_the_probe_and_are_checked_against_its_declaration(registry):
    [lanczos] = build(("top_eig",), {"top_eig": {"steps": 7, "tol": 1e-9}})
    assert (lanczos.steps, lanczos.tol, lanczos.k) == (7, 1e-9, 1)
    assert PROBES["curv_dual"].options() == {"iterations": 6, "restarts": 2, "tol": 1e-4}
    assert ProbeConfig(preset="full", options={"trace": {"hvps": 12}}).options == {"trace": {"hvps": 12}}
    for preset, options, message in [
        ("full", {"top_eig": {"stepz": 7}}, "probe top_eig has no option 'stepz'; its options: k, steps, tol"),
        ("full", {"top_eig": {"steps": "7"}}, "option top_eig.steps must be like its default 20"),
        ("full", {"top_eig": {"steps": 1}}, "probe top_eig: steps must be at least 2k=2; got 1"),
        ("full", {"top_eig": {"tol": float("nan")}}, "probe top_eig: tol must be in [0, 1) (0: run every step)"),
        ("full", {"top_eig": {"tol": -1.0}}, "probe top_eig: tol must be in [0, 1)"),
        ("full", {"curv_dual": {"tol": float("inf")}}, "probe curv_dual: tol must be in [0, 1)"),
        ("full", {"curv_fd": {"scale": 1e308}}, "probe curv_fd: scale must be in (0, 1000]"),
        ("standard", {"trace": {"hvps": 12}}, "options for probe trace, which does not run (probes: norms, secant)"),
    ]:
        with pytest.raises(SmoothprobeError, match=re.escape(message)):
            ProbeConfig(preset=preset, options=options)


def test_register_keeps_the_probes_that_move_parameters_last_and_names_unique(registry):
    class Early(PROBES["curv_hvp"]):
        name = "early"

    class Mover(PROBES["curv_fd"]):
        name = "mover"

    register(Mover)
    register(Early)
    assert list(PROBES)[-3:] == ["early", "curv_fd", "mover"]
    with pytest.raises(SmoothprobeError, match="probe name 'secant' is taken by SecantProbe"):
        register(type("Secant", (Early,), {"name": "secant"}))


def test_each_builtin_probe_writes_the_columns_it_declares():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    params = list(model.parameters())
    oracle = GradOracle(model, lambda: torch.nn.functional.mse_loss(model(x), y), params)
    update = [0.01 * torch.randn_like(p) for p in params]
    context = ProbeContext(oracle, Geometry("euclidean", [n for n, _ in model.named_parameters()]),
                           [torch.randn_like(p) for p in params], update)
    for probe in build(tuple(PROBES)):
        assert set(probe.measure(context).row) == set(probe.columns), probe.name
        assert set(probe.k_columns) <= set(probe.columns)


def test_record_sets_probe_options_from_the_command_line(tmp_path):
    args = ["record", "--task", "quadratic", "--steps", "3", "--every", "1", "--heavy-every", "1", "--probes",
            "norms,top_eig", "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r"), "--probe-option", "top_eig.steps=4"])
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "r")
    assert run.steps["lanczos_hvps"].max() <= 4 and run.config["probes"]["options"] == {"top_eig": {"steps": 4}}
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "s"), "--probe-option", "top_eig.stepz=4"])
    assert result.exit_code == 2 and "--probe-option" in result.output and "no option 'stepz'" in result.output


def test_a_plugin_that_fails_to_load_is_skipped_with_a_warning(monkeypatch):
    import smoothprobe.probes as registry

    class Broken:
        name, value = "broken", "nowhere.module:Probe"

        def load(self):
            raise ImportError("No module named 'nowhere'")

    monkeypatch.setattr(registry, "entry_points", lambda group: [Broken()])
    before = dict(registry.PROBES)
    with pytest.warns(RuntimeWarning, match=r"probe plugin 'broken' \(nowhere.module:Probe\) skipped: ImportError"):
        registry.discover()
    assert registry.PROBES == before

"""The prepared GPU check runs its whole code path on CPU (`--dry-run`), so it does not rot."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run_covers_both_presets_and_the_adaptive_run(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # dataclasses look their module up there
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--dry-run", "--optimizer", "lion"]) == 0  # lion: cheap LMOs, the same code path
    out = capsys.readouterr().out
    for probe in ("time_secant", "time_curv_hvp", "time_top_eig", "time_trace", "time_curv_dual", "time_curv_fd"):
        assert f"{probe} " in out
    assert "adaptive run:" in out and "2 steps in" in out and out.rstrip().endswith("ok")

"""smoothprobe: measure how smooth the loss is along training and derive the warm-up from it.

The pieces most users need: `Recorder` (probes inside any PyTorch loop), `load_run` (read a run
directory), `fit_run` (fit the smoothness model), `AdaptiveWarmup` (the loss-driven scheduler), and
`train`/`TrainConfig` (the built-in training loop). Reports live in `smoothprobe.report`, the
framework adapters in `smoothprobe.integrations`.
"""

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit import SmoothnessFit, fit_run
from smoothprobe.schedule.adaptive import AdaptiveWarmup
from smoothprobe.store import Run, load_run
from smoothprobe.train import TrainConfig, train
from smoothprobe.writer import Recorder

__all__ = [
    "AdaptiveWarmup",
    "Recorder",
    "Run",
    "SmoothnessFit",
    "SmoothprobeError",
    "TrainConfig",
    "fit_run",
    "load_run",
    "train",
]

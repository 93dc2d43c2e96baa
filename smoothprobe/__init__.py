"""smoothprobe: measure how smooth the loss is along training and derive the warm-up from it."""

from smoothprobe.errors import SmoothprobeError
from smoothprobe.store import Run, load_run
from smoothprobe.train import TrainConfig, train

__all__ = ["Run", "SmoothprobeError", "TrainConfig", "load_run", "train"]

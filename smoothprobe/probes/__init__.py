"""The probes, one class per module behind `Probe.measure(context)`, and their registry.

`PROBES` maps each probe's name to its class in the order the Recorder runs them: probes that
share the gradient at x_{t+1} and its graph first, the FD probe last because it moves the
parameters (which drops a kept HVP graph). A new probe is one module plus one entry here.
"""

from smoothprobe.probes.base import Probe
from smoothprobe.probes.curvature_fd import FDCurvatureProbe
from smoothprobe.probes.curvature_hvp import HVPCurvatureProbe
from smoothprobe.probes.dual_curvature import DualCurvatureProbe
from smoothprobe.probes.lanczos import LanczosProbe
from smoothprobe.probes.norms import NormsProbe
from smoothprobe.probes.secant import SecantProbe
from smoothprobe.probes.trace import TraceProbe

PROBES: dict[str, type[Probe]] = {
    probe.name: probe
    for probe in (
        NormsProbe, SecantProbe, HVPCurvatureProbe, LanczosProbe, TraceProbe, DualCurvatureProbe, FDCurvatureProbe
    )
}
PRESETS: dict[str, tuple[str, ...]] = {
    "cheap": ("norms",),
    "standard": ("norms", "secant"),
    "full": tuple(PROBES),
}

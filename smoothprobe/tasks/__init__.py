"""Built-in tasks (no downloads) and the factory the CLI calls."""

from __future__ import annotations

from smoothprobe.errors import SmoothprobeError
from smoothprobe.tasks.base import Task

TASKS = ("quadratic", "markov", "lm")


def make_task(
    name: str,
    *,
    model: str = "tiny",
    batch_size: int = 16,
    seq_len: int = 64,
    seed: int = 0,
    data: str | None = None,
    vocab_size: int | None = None,
    options: dict | None = None,
) -> Task:
    """Build task `name`; `options` holds task-specific keyword arguments (e.g. markov `order`)."""
    options = dict(options or {})
    if name == "quadratic":
        from smoothprobe.tasks.quadratic import QuadraticTask

        return QuadraticTask(seed=seed, **options)
    if name == "markov":
        from smoothprobe.tasks.markov import MarkovTask

        return MarkovTask(model=model, batch_size=batch_size, seq_len=seq_len, seed=seed, **options)
    if name == "lm":
        from smoothprobe.tasks.lm import LanguageModelTask

        return LanguageModelTask(
            model=model, batch_size=batch_size, seq_len=seq_len, seed=seed, data=data,
            vocab_size=vocab_size, **options,
        )
    raise SmoothprobeError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")

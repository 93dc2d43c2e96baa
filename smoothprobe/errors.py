"""The exceptions the CLI turns into a single line and an exit code: SmoothprobeError (bad input
or an unusable run, exit 2; RunInUse when another process writes the run) and Terminated
(SIGTERM during a run, exit 143)."""


class SmoothprobeError(ValueError):
    """Bad input or an unusable run: the message is one line a user can act on.

    A ValueError, so code that already guards against bad values catches it too.
    """


class RunInUse(SmoothprobeError):
    """Another live process holds the run directory's writer lock."""


class Terminated(BaseException):
    """SIGTERM arrived during a run: like KeyboardInterrupt, the run closes as interrupted."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (torch's multi-line messages joined), at most `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""The exceptions the CLI turns into a single line and an exit code: SmoothprobeError (bad input
or an unusable run, exit 2; RunInUse when another process writes the run) and Terminated
(SIGTERM during a run, exit 143)."""

from collections.abc import Callable, Iterable
from itertools import groupby


class SmoothprobeError(ValueError):
    """Bad input or an unusable run: the message is one line a user can act on.

    A ValueError, so code that already guards against bad values catches it too. `params` are the
    parameters the message names, spelled as the library spells them; a front end shows its own names
    for them through `worded` (the CLI shows flags).
    """

    def __init__(self, message: str = "", *, params: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.params = tuple(params)

    def worded(self, name: Callable[[str], str]) -> str:
        """The message with the first mention of each of `params` as `name(param)` (later mentions are
        prose: "a pilot makes its own fit")."""
        words, left = [], set(self.params)
        for _, chars in groupby(str(self), key=lambda c: c.isalnum() or c == "_"):
            word = "".join(chars)
            words.append(name(word) if word in left else word)
            left.discard(word)
        return "".join(words)


class RunInUse(SmoothprobeError):
    """Another live process holds the run directory's writer lock."""


class Terminated(BaseException):
    """SIGTERM arrived during a run: like KeyboardInterrupt, the run closes as interrupted."""


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An exception's message on one line (torch's multi-line messages joined), at most `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

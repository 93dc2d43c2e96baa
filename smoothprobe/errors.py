"""The one exception type the CLI turns into a single line and exit code 2."""


class SmoothprobeError(ValueError):
    """Bad input or an unusable run: the message is one line a user can act on.

    A ValueError, so code that already guards against bad values catches it too.
    """

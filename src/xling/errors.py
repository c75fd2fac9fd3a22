"""User-facing errors.

Any mistake a user can make (a bad flag, a missing file, an unknown language, a
malformed corpus line) raises :class:`XlingError` with a one-line message that
names the file, line or language. The CLI prints it as ``xling: error: ...`` and
exits with status 2, without a traceback. Programming errors are not wrapped.
"""


class XlingError(Exception):
    """A user mistake: one line, names the culprit, no traceback in the CLI."""

    def __init__(self, message: str):
        # Keep messages on one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))

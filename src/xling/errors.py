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


#: Commands whose finished languages are cached, so that an interrupted run resumes.
RESUMABLE_COMMANDS = ("align", "eval", "transfer")


def interrupted_message(argv) -> str:
    """The line printed on Ctrl-C: mentions resuming only for commands that cache their progress."""
    command = next((a for a in argv or () if not str(a).startswith("-")), None)
    if command in RESUMABLE_COMMANDS:
        return "xling: interrupted (finished languages are cached; run again to resume)"
    return "xling: interrupted"

"""The ``xling`` console script: Ctrl-C at any moment prints one line and exits 130 (SIGTERM: 143).

The command line imports a lot (torch, transformers) before ``xling.cli.main``
can catch anything, so this module, which imports only the standard library at
the top, installs the SIGINT handler first and then imports the CLI. The first
Ctrl-C raises :class:`KeyboardInterrupt` as usual (temporary files are cleaned
up on the way out); a second one, or one that arrives while Python shuts down,
exits at once, still with one line and status 130.
"""

import os
import signal
import sys

_EXIT_INTERRUPTED = 130
_EXIT_TERMINATED = 143  # 128 + SIGTERM
_terminated = False


def _message() -> str:
    try:
        from xling.errors import interrupted_message

        return interrupted_message(sys.argv[1:])
    except BaseException:  # noqa: BLE001 - never let the message itself fail
        return "xling: interrupted"


def _exit_now(signum=None, frame=None) -> None:
    """Leave at once: flush what was printed, say so, exit 130 (no traceback, no cleanup code)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    try:
        os.write(2, (_message() + "\n").encode())
    finally:
        os._exit(_EXIT_INTERRUPTED)


def _in_import(frame) -> bool:
    """Whether Python is importing a module: a C++ extension's initialisation may be on the stack."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _first_interrupt(signum, frame) -> None:
    """Raise KeyboardInterrupt, but never inside an import.

    An exception raised while an extension module initialises (torch's pybind11
    code calls back into Python) aborts the process ("terminate called after
    throwing pybind11::error_already_set"), so during an import the interrupt is
    held and raised as soon as the import is over (checked every 20 ms).
    """
    if _in_import(frame) and hasattr(signal, "setitimer"):
        signal.signal(signal.SIGINT, _exit_now)  # a second Ctrl-C leaves at once
        signal.signal(signal.SIGALRM, _held_interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        return
    signal.signal(signal.SIGINT, _exit_now)  # a second Ctrl-C does not wait for the clean-up
    raise KeyboardInterrupt


def _terminate(signum, frame) -> None:
    """SIGTERM (``timeout``, a job scheduler, ``kill``): the same clean way out as a first Ctrl-C, so the
    half-written output folder is removed, then exit 143 as a shell reports a terminated command."""
    global _terminated
    _terminated = True
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _exit_now)  # a second one leaves at once
    _first_interrupt(signum, frame)


def _held_interrupt(signum, frame) -> None:
    if _in_import(frame):
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        return
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGINT, _first_interrupt)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _terminate)
    try:
        from xling.cli import main as cli_main

        rc = cli_main()
    except KeyboardInterrupt:  # before or after cli.main's own handler (imports, start-up)
        signal.signal(signal.SIGINT, _exit_now)
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(_message(), file=sys.stderr)
        rc = _EXIT_INTERRUPTED
    except BrokenPipeError:  # ``xling corpus --show 9 | head``: the reader left, nothing to report
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        rc = 141  # 128 + SIGPIPE, as a shell reports it
    signal.signal(signal.SIGINT, _exit_now)  # an interrupt during shutdown: no traceback either
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
    return _EXIT_TERMINATED if _terminated else rc


if __name__ == "__main__":
    sys.exit(main())

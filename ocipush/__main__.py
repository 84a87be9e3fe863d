"""``python -m ocipush`` and the ``ocipush`` command.

SIGINT and SIGTERM are handled from the first line on: until ``cli`` puts its own handlers
in place (after importing httpx and the rest, a few hundred milliseconds), a signal ends
the process at once with the documented one line and exit code (130, 143) instead of a
traceback or a silent death.  Nothing is open yet then, so there is nothing to cancel.
"""

import os
import signal


def _early(signum: int, frame: object) -> None:
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    os.write(2, f"ocipush: {word}\n".encode())
    os._exit(128 + signum)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _early)
    from .cli import entry_point  # the heavy imports, covered by _early

    entry_point()


if __name__ == "__main__":
    main()

"""No silent death: a thread of a long-running process that dies takes the process with
it, so that its supervisor (``tidefield up``, uvicorn's worker manager, systemd) restarts
it instead of it running on with a loop missing.

The process exits ``DEATH_GRACE_S`` after the thread died, not at once: meanwhile its
/healthz answers 503 naming the dead loop, which is how an operator (and a test) can see
why it went. Nothing is lost by the delay or by the exit itself: ingest acknowledges a
message only after its transaction commits, and the detector resumes from its checkpoint.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE: an internal error
DEATH_GRACE_S = 2.0


def exit_when_a_thread_dies(grace_s: float = DEATH_GRACE_S) -> None:
    """Install a ``threading.excepthook`` that prints the traceback as before, then exits
    the process with ``EXIT_CODE`` after ``grace_s``. Entry points call it; a library
    never does (tests run workers in their own process)."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        previous(args)
        name = args.thread.name if args.thread is not None else "?"
        log.critical("thread %s died (%s); the process exits in %.0f s to be restarted",
                     name, args.exc_type.__name__, grace_s)
        timer = threading.Timer(grace_s, os._exit, (EXIT_CODE,))
        timer.daemon = True
        timer.start()

    threading.excepthook = hook

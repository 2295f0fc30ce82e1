"""The delivery process: ``smtpsettings deliver`` itself, and the supervisor ``serve`` keeps it running with.

One program per job, as Postfix does it: the workers accept (HTTP and SMTP submission) and the delivery
process sends, so neither waits for the other's event loop and the two use both cores. ``serve`` starts it
as a fresh interpreter (``python -m smtpsettings deliver``) rather than a fork: it inherits the environment
(configuration, metrics directory) but none of the parent's threads, sockets or locks, it reads as what it is
in ``ps``, and the same command runs under a unit of its own where an operator prefers that.

The dispatcher keeps its own guarantees: it dispatches only while it holds ``outbox.lock`` (a new delivery
process after a kill -9 takes the lock and ends the dead one's leases), so at most one process sends and
delivery stays at least once, whoever restarts it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import structlog

from smtpsettings.config import Settings

__all__ = ("DeliverySupervisor", "run")

log = structlog.get_logger("smtpsettings.deliver")

STOP_GRACE = 5.0
"""Seconds sends in flight get to finish when the delivery process stops."""
_KILL_AFTER = STOP_GRACE + 10.0  # the grace, then the pool's close and the last writes
_FIRST_BACKOFF = 0.5
_LONGEST_BACKOFF = 30.0
_STEADY = 60.0  # a process that ran this long before it died starts the back-off over
_PARENT_CHECK = 1.0

# Popen learns that its child has started when a pipe's write end, closed by the child's exec, reaches end of
# file. A fork in another thread meanwhile (granian forks its workers, at start and when it respawns one)
# copies that write end into the forked worker, which never execs: Popen would wait for as long as the worker
# lives, and no delivery process would be restarted. No fork of this process runs while the supervisor spawns.
_SPAWNING = threading.RLock()
os.register_at_fork(before=_SPAWNING.acquire, after_in_parent=_SPAWNING.release, after_in_child=_SPAWNING.release)


def run(settings: Settings) -> None:
    """Deliver until SIGTERM or SIGINT, or until the process that started this one is gone."""
    asyncio.run(_deliver(settings))


async def _deliver(settings: Settings) -> None:
    from smtpsettings.wiring import SEPARATE_DELIVERY_ENV, Delivery  # the dispatcher and what it needs

    delivery = Delivery(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Started by serve: its pid, even should it be gone already. Run by hand or by a unit: whoever started it.
    parent = int(os.environ.get(SEPARATE_DELIVERY_ENV) or os.getppid())
    await delivery.start()
    log.info("delivery_started", pid=os.getpid())
    try:
        # An orphan (serve killed with -9) would send on beside the next serve's delivery process until
        # that one got the lock: it leaves instead.
        while not stop.is_set() and os.getppid() == parent:
            try:
                await asyncio.wait_for(stop.wait(), _PARENT_CHECK)
            except TimeoutError:
                pass
    finally:
        await delivery.close(STOP_GRACE)
        log.info("delivery_stopped", pid=os.getpid())


class DeliverySupervisor:
    """Runs the delivery process beside ``serve``'s workers: restarts it when it dies, stops it last.

    A thread of the serve process waits on the child. A death is logged and followed by a restart after a
    back-off that doubles while the process keeps dying young, so a delivery process that cannot start (a
    database away) does not spin. Once :meth:`request_stop` is called (serve was told to stop) nothing is
    restarted; :meth:`request_stop` sends it SIGTERM at once, and :meth:`stop` waits for it after the workers, with
    SIGKILL after a bound.
    """

    def __init__(self, command: Sequence[str] | None = None, *, pass_fds: Sequence[int] = ()) -> None:
        self._command = list(command or (sys.executable, "-m", "smtpsettings", "deliver"))
        self._pass_fds = tuple(pass_fds)
        self._stopping = threading.Event()
        self._guard = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._supervise, name="delivery-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """No more restarts, and the delivery process told to stop now: serve is stopping.

        Called from serve's signal handler, so it only sets a flag and signals: the delivery process's
        graceful stop then runs beside the workers' rather than after them, which keeps the whole stop
        within a service manager's stop timeout. What the workers accept meanwhile is on disk and goes
        out at the next start.
        """
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

    def stop(self, kill_after: float = _KILL_AFTER) -> None:
        """Stop the delivery process: SIGTERM, up to ``kill_after`` seconds for its graceful stop, then SIGKILL."""
        self._stopping.set()
        with self._guard:
            process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(kill_after)
            except subprocess.TimeoutExpired:
                log.warning("delivery_process_killed", pid=process.pid, after_seconds=kill_after)
                process.kill()
                process.wait()
        self._thread.join(kill_after)

    def _supervise(self) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            with self._guard:
                if self._stopping.is_set():
                    return
                started = time.monotonic()
                try:
                    with _SPAWNING:
                        process = self._process = subprocess.Popen(
                            self._command, stdin=subprocess.DEVNULL, pass_fds=self._pass_fds
                        )
                except OSError as exc:
                    process = None
                    log.error("delivery_process_not_started", error=str(exc), restart_in_seconds=backoff)
            if process is not None:
                code = process.wait()
                if self._stopping.is_set():
                    return
                if time.monotonic() - started >= _STEADY:
                    backoff = _FIRST_BACKOFF
                log.warning(
                    "delivery_process_exited", pid=process.pid, returncode=code, restart_in_seconds=backoff
                )
            if self._stopping.wait(backoff):
                return
            backoff = min(2 * backoff, _LONGEST_BACKOFF)

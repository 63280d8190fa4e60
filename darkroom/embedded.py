"""`darkroom run`: the API in this process, a worker and a webhook worker as its children, the
sweeper in a thread; the caller has migrated the database.

- Children die with this process, however it ends: the kernel sends them SIGTERM (a Celery
  worker's warm shutdown) when it goes (darkroom/processes.py). They are started, and restarted,
  by one supervising thread that lives as long as the stack, since the kernel watches the thread.
- A child that dies unexpectedly is restarted, with a log line, after a pause that doubles from
  1 s up to 30 s while it keeps dying within a minute of its start. The API stays up meanwhile;
  jobs wait queued, and the sweeper requeues a job whose run died with it.
- A child that refuses to start (exit status 78, EX_CONFIG: a model missing, no room on the
  device) would refuse again: the stack stops, and `darkroom run` exits with that status.
- Stopping (SIGTERM, SIGINT, a refusal): the API stops taking requests, then every child is sent
  SIGTERM and all of them get STOP_TIMEOUT_S together before the rest are killed; each step is
  logged. uvicorn re-raises the signal it caught once it has shut down, which would end this
  process before its children are stopped: the handler installed here takes it instead.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from darkroom.processes import EXIT_CANNOT_START, describe_exit, dies_with_this_process
from darkroom.settings import Settings

log = logging.getLogger("darkroom")

STOP_TIMEOUT_S = 30.0
RESTART_DELAYS_S = (1, 2, 4, 8, 16, 30)  # after 1, 2, ... quick deaths in a row
QUICK_DEATH_S = 60.0  # a child that ran longer than this before dying starts its delays afresh
_POLL_S = 0.2


@dataclass
class Child:
    command: str  # the `darkroom` subcommand
    log_level: str
    process: subprocess.Popen | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None  # when a dead child is started again

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "darkroom.cli", "--log-level", self.log_level, self.command],
            preexec_fn=dies_with_this_process(signal.SIGTERM),
        )
        self.started, self.restart_at = time.monotonic(), None
        log.info("%s started (pid %d)", self.command, self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Starts the children, restarts those that die, and stops them all at the end. `on_stop` is
    called from its thread when the stack must stop: a child refused to start, or it failed."""

    def __init__(self, children: list[Child], on_stop: Callable[[], None]) -> None:
        self.children = children
        self.on_stop = on_stop
        self.exit_status = 0  # the stack's: a refusing child's, 1 if this failed
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop every child, within STOP_TIMEOUT_S and their kill, and wait for it."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            for child in self.children:
                child.start()
            while not self._stopping.wait(_POLL_S):
                for child in self.children:
                    self._look_after(child)
        except Exception:
            log.exception("supervising the children failed; stopping")
            self.exit_status = 1
            self.on_stop()
        finally:
            self._stop_children()

    def _look_after(self, child: Child) -> None:
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.start()
            return
        code = child.process.poll()
        if code is None:
            return
        if code == EXIT_CANNOT_START:
            log.error("%s refused to start (its reason is above); stopping", child.command)
            self.exit_status = code
            self._stopping.set()
            self.on_stop()
            return
        ran_s = now - child.started
        child.quick_deaths = child.quick_deaths + 1 if ran_s < QUICK_DEATH_S else 0
        delay = RESTART_DELAYS_S[min(child.quick_deaths, len(RESTART_DELAYS_S) - 1)]
        log.error(
            "%s (pid %d) exited with %s after %.0f s; restarting it in %g s",
            child.command,
            child.process.pid,
            describe_exit(code),
            ran_s,
            delay,
        )
        child.restart_at = now + delay

    def _stop_children(self) -> None:
        running = [child for child in self.children if child.running]
        if not running:
            return
        log.info("stopping %s", ", ".join(f"{child.command} (pid {child.process.pid})" for child in running))
        for child in running:
            child.process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in running:
            try:
                code = child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                log.info("%s stopped (%s)", child.command, describe_exit(code))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
                log.error("%s did not stop within %g s; killed", child.command, STOP_TIMEOUT_S)


def run_embedded(settings: Settings, server, *, log_level: str) -> int:
    """Serve until asked to stop or until a child refuses to start; returns the exit status: 0
    when asked, the refusing child's (78) otherwise. `server` is the API's uvicorn server."""
    from worker.sweeper import make_sweeper

    def stop_serving() -> None:
        server.should_exit = True

    def on_signal(signum: int, _frame) -> None:
        log.info("%s received; stopping", signal.Signals(signum).name)
        stop_serving()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    supervisor = Supervisor([Child("worker", log_level), Child("webhook-worker", log_level)], on_stop=stop_serving)
    sweeping = threading.Event()
    threading.Thread(target=make_sweeper(settings).run, args=(sweeping,), name="sweeper", daemon=True).start()
    supervisor.start()
    log.info(
        "serving http://%s:%s/v1 with one worker (data in %s)", server.config.host, server.config.port, settings.data_dir
    )
    try:
        server.run()
    finally:
        sweeping.set()
        supervisor.stop()
        log.info("stopped (exit status %d)", supervisor.exit_status)
    return supervisor.exit_status

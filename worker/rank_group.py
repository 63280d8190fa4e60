"""A GPU group behind one Celery consumer: rank 0 is the worker's pool child, ranks 1..N-1 are
follower processes it spawns and supervises (`python -m worker.rank_group RANK INIT_METHOD`).

Hand-off. Rank 0 writes each job as a pickle of (model, GenerationRequest) down every follower's
stdin pipe, then all ranks run the pipeline (the transformer's collectives keep them together) and
rank 0 keeps its own output; the others' outputs are identical and dropped. A pipe rather than a
collective for the hand-off: an idle follower waits on it with no timeout to outlive, and sees EOF
the moment rank 0 goes away.

Stopping. Rank 0's step callback (cancel, time limit) may raise; every rank's step callback
all-reduces a stop flag (pipelines.acceleration.distributed.SyncedSteps), so all ranks leave at the
same step and the group serves the next job. Any other error leaves the ranks out of step (some may
wait in a collective that will never complete): the group is then `broken`, and rank 0's process
exits after the job's failure is written, so Celery's prefork parent starts a fresh child that
rebuilds it.

Death. A supervisor thread polls the followers. A follower that dies mid-job makes rank 0's
collectives fail (gloo notices the closed connection at once; for NCCL, which may not, the thread
aborts the process groups), and the job fails with `worker_rank_lost`. One that dies while idle
ends rank 0's process at once. Followers die with rank 0 (PR_SET_PDEATHSIG, and EOF on stdin), and
every collective has the plan's timeout, so no rank hangs for ever.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from darkroom.processes import describe_exit, dies_with_this_process
from pipelines.spec.parallel_plan import ParallelPlan
from pipelines.spec.types import GenerationRequest, PreviewCallback, StepCallback
from worker.execute import JobFailure
from worker.loading import load_runners

log = logging.getLogger("darkroom.worker")

RANK_LOST_CODE = "worker_rank_lost"
_FOLLOWER_FAILED = 3  # a follower's exit status after an error of its own in a job
_POLL_S = 0.2
_LOSS_NOTICE_S = 2.0  # how long a failed run waits for the supervisor to see a dead follower
_STUCK_AFTER_LOSS_S = 30.0  # a job still running this long after a rank died is ended by force


def _end_this_process() -> None:
    # Rank 0 is the prefork child: its parent starts a fresh one, which rebuilds the group; the
    # followers go with it (PR_SET_PDEATHSIG).
    os.kill(os.getpid(), signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _describe_exit(code: int) -> str:
    if code == _FOLLOWER_FAILED:
        return "an error of its own (see its log lines)"
    return describe_exit(code)


class RankGroup:
    """Rank 0's side of the group."""

    def __init__(
        self, plan: ParallelPlan, *, on_idle_loss: Callable[[], None] = _end_this_process
    ) -> None:
        self.plan = plan
        self.on_idle_loss = on_idle_loss
        self.control: Any = None  # the gloo group for the step flag, once joined
        self.followers: list[subprocess.Popen] = []
        self.lost: str | None = None  # which follower died, and how
        self.lost_code: int | None = None  # its exit status
        self.broken = False  # the ranks may be out of step: this process must go
        self._in_flight = False
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, name="rank-supervisor", daemon=True
        )

    def start(self, env: dict[str, str] | None = None) -> RankGroup:
        """Spawn the followers and join the group with them (blocks until all have joined)."""
        from pipelines.acceleration.distributed import join_group

        init_method = f"tcp://127.0.0.1:{_free_port()}"
        for rank in range(1, self.plan.world_size):
            self.followers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "worker.rank_group", str(rank), init_method],
                    stdin=subprocess.PIPE,
                    env=env,
                    preexec_fn=dies_with_this_process(signal.SIGKILL),
                )
            )
        self._supervisor.start()
        self.control = join_group(self.plan, 0, init_method)
        log.info(
            "rank group joined: %s, followers %s",
            self.plan.describe(),
            [p.pid for p in self.followers],
        )
        return self

    def wait_ready(self) -> None:
        """After rank 0 loaded its runners: returns once every follower has loaded its own."""
        import torch.distributed as dist

        dist.barrier(group=self.control)

    def run(
        self, model: str, local: Any, request: GenerationRequest, on_step: StepCallback | None,
        on_preview: PreviewCallback | None = None,
    ) -> Any:
        from pipelines.acceleration.distributed import SyncedSteps

        if request.lora:
            # Every rank loads the adapters in its own runner, before any collective; a missing or
            # unfitting one fails the job here, on rank 0 alone, and the group stays in step.
            local.prepare_lora(request.lora)
        with self._lock:
            if self.lost or self.broken:
                raise self._lost_failure()
            self._in_flight = True
        steps = SyncedSteps(self.control, on_step)
        try:
            self._hand_out(model, request)
            # Previews are decoded on rank 0 alone (the VAE is replicated: no collectives).
            previews = {"on_preview": on_preview} if on_preview is not None else {}
            return local.run(request, on_step=steps, **previews)
        except Exception as error:
            if steps.stopped:
                raise  # every rank left at the same step: the group is fine
            self.broken = True
            if self._wait_for_loss(_LOSS_NOTICE_S):
                raise self._lost_failure(error) from error
            raise
        finally:
            with self._lock:
                self._in_flight = False

    def close(self) -> None:
        """Followers exit on EOF; any that do not within a few seconds are killed."""
        self._closing.set()
        for process in self.followers:
            try:
                process.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for process in self.followers:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _hand_out(self, model: str, request: GenerationRequest) -> None:
        message = pickle.dumps((model, request), protocol=pickle.HIGHEST_PROTOCOL)
        for process in self.followers:
            try:
                process.stdin.write(message)
                process.stdin.flush()
            except OSError as error:  # the follower is gone: its pipe is closed
                raise RuntimeError(
                    f"follower pid {process.pid} is not reading its jobs: {error}"
                ) from error

    def _lost_failure(self, error: BaseException | None = None) -> JobFailure:
        if error is not None and self.lost_code == _FOLLOWER_FAILED:
            # The follower failed on its own, most likely as rank 0 did (the same inputs): the
            # model's error, not the group's, is what the job reports.
            return JobFailure(
                "generation_failed",
                f"The model failed: {type(error).__name__}: {error}"[:1000],
            )
        return JobFailure(
            RANK_LOST_CODE,
            f"A rank of this worker's GPU group ({self.lost or 'out of step after an error'}) "
            "failed while the job ran; the worker restarts its group.",
        )

    def _wait_for_loss(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.lost is not None

    def _supervise(self) -> None:
        while not self._closing.wait(_POLL_S):
            for rank, process in enumerate(self.followers, start=1):
                code = process.poll()
                if code is None or self.lost is not None or self._closing.is_set():
                    continue  # (followers exit on purpose when the group closes)
                with self._lock:
                    self.lost = (
                        f"rank {rank}, pid {process.pid}, exited with {_describe_exit(code)}"
                    )
                    self.lost_code = code
                    self.broken = True  # even if the job in flight still completes
                    in_flight = self._in_flight
                log.error("rank group: %s", self.lost)
                if not in_flight:
                    log.error(
                        "rank group lost a rank while idle; ending this process to rebuild it"
                    )
                    self.on_idle_loss()
                    return
                self._abort_collectives()
                if self._wait_until_idle(_STUCK_AFTER_LOSS_S):
                    return
                log.error(
                    "the job is still running %g s after a rank died; ending this process",
                    _STUCK_AFTER_LOSS_S,
                )
                self.on_idle_loss()
                return

    def _wait_until_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._in_flight

    def _abort_collectives(self) -> None:
        """gloo fails a collective whose peer has gone at once; NCCL may wait for its timeout, so
        its communicators are aborted, which fails the collectives rank 0 is waiting in."""
        if self.plan.backend != "nccl":
            return
        try:
            from torch.distributed.distributed_c10d import _abort_process_group

            _abort_process_group()
        except Exception:  # private API: the collective timeout remains the backstop
            log.exception("could not abort the process groups; waiting for the collective timeout")


class GroupRunner:
    """Stands in the worker's runners map for one model: `run` runs the request on every rank."""

    def __init__(self, group: RankGroup, model: str, local: Any) -> None:
        self.group = group
        self.model = model
        self.local = local
        self.spec = local.spec
        self.pipeline = local.pipeline

    def run(self, request: GenerationRequest, on_step: StepCallback | None = None, on_preview=None) -> Any:
        return self.group.run(self.model, self.local, request, on_step, on_preview)


def follower_main(rank: int, init_method: str) -> int:
    """A follower rank: join, load, then run each job handed down the pipe until EOF."""
    from darkroom.logs import configure_logging
    from darkroom.settings import get_settings
    from pipelines.acceleration.distributed import SyncedSteps, join_group

    settings = get_settings()
    configure_logging(os.environ.get("DARKROOM_LOG_LEVEL", "INFO"), settings.log_format)
    plan = settings.parallel_plan
    control = join_group(plan, rank, init_method)
    runners = load_runners(settings, rank)
    import torch.distributed as dist

    dist.barrier(group=control)  # rank 0's wait_ready
    log.info("rank %d of %s ready", rank, plan.describe())
    jobs = sys.stdin.buffer
    while True:
        try:
            model, request = pickle.load(jobs)
        except EOFError:
            return 0  # rank 0 closed the pipe or is gone
        steps = SyncedSteps(control, None)
        try:
            runners[model].run(request, on_step=steps)
        except Exception:
            if steps.stopped:
                continue  # rank 0 stopped the job; every rank left at the same step
            log.exception(
                "rank %d failed in a job; leaving the group for rank 0 to rebuild it", rank
            )
            return _FOLLOWER_FAILED


if __name__ == "__main__":
    code = follower_main(int(sys.argv[1]), sys.argv[2])
    logging.shutdown()
    # Not sys.exit: interpreter teardown may wait on process-group threads whose peers are gone.
    os._exit(code)

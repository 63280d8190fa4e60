"""What Darkroom's processes tell each other by how they start and end: the status of a process that
refuses to start, an exit status in words, and children that do not outlive their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

# The status of a process that cannot serve as configured (a model missing, no room on the device,
# a group that cannot be built): EX_CONFIG, so a supervisor tells a refusal, which would happen
# again, from a crash, which a restart may cure.
EXIT_CANNOT_START = 78

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def describe_exit(code: int) -> str:
    """A Popen return code in words: "exit status 1", "signal SIGKILL"."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def die_with(parent_pid: int, signum: int) -> None:
    """Called in a child: the kernel sends it `signum` when its parent goes, however it goes
    (Linux's PR_SET_PDEATHSIG; elsewhere nothing is done). `parent_pid` is the parent as the
    parent saw itself: a parent that died before this call has already left the child to init,
    so the child takes the signal now.

    The kernel means the parent's *thread*: a child started from a thread gets the signal when
    that thread ends, so children are started from a thread that lives as long as its process."""
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def dies_with_this_process(signum: int) -> Callable[[], None]:
    """A `preexec_fn` for `subprocess.Popen`: the child gets `signum` when this process ends."""
    parent_pid = os.getpid()
    return lambda: die_with(parent_pid, signum)

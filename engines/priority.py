"""Thread priorities: generation yields the CPU to the requests that must stay quick.

On a small CPU machine one generation keeps every core busy. A rater's label round trip
needs a few milliseconds of CPU, and a chat user waits on their own reply, not on a
background eval job; so the threads that generate run at a higher nice value than the
app's request threads. Linux gives each thread its own nice value, and the threads it
starts (torch's OpenMP workers: libgomp starts a team per calling thread) inherit it. A
thread can raise its nice value but not lower it again, so only threads made for one
generation are niced. Elsewhere (macOS, Windows) nothing changes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

# A streamed chat reply's generate thread: ahead of queue jobs (JOB_NICE), behind the app's
# request threads (nice 0: labels, next items, page loads). Measured by benchmarks.label_load.
CHAT_NICE = 5
# An Organise-tab queue job: behind chats too. Default model, 2 shared cores, one user chatting
# through a 16-reply job: a 32-token chat reply took 1.16-1.43x its idle time at the same
# priority and 0.64x (noise) at nice 10, the job ~1.7x longer.
JOB_NICE = 10


def lower_priority(nice: int) -> None:
    """Add `nice` to the calling thread's nice value (as `nice -n` does; the threads it starts
    from now on inherit it)."""
    if sys.platform != "linux" or nice <= 0:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + nice, 19))
    except OSError as err:  # a container may forbid it: the work still runs, at normal priority
        log.warning("could not lower a thread's priority: %s", err)

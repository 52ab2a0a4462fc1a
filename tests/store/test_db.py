import threading
import time

from store.db import WriterQueue


def test_writers_take_the_queue_in_arrival_order():
    queue, order, started = WriterQueue(), [], []

    def write(n: int) -> None:
        with queue:
            order.append(n)

    with queue:  # held: every writer below waits, in the order they arrived
        for n in range(8):
            thread = threading.Thread(target=write, args=(n,))
            thread.start()
            started.append(thread)
            while len(queue._waiting) < n + 1:  # this one is queued before the next starts
                time.sleep(0.001)
    for thread in started:
        thread.join(timeout=10)
    assert order == list(range(8))
    with queue:  # free again once the last one left
        assert not queue._waiting

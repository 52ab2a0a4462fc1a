"""The model's child process (`python -m engines.worker FD`, started by `engines.child.ProcessEngine`
through core/child.py, which sends it the engine config, nice value and torch threads): load the engine
the usual way, then answer the app's requests over the inherited connection until the app closes it."""

from __future__ import annotations

import logging
import os
import threading
from multiprocessing.connection import Connection

from core.child import connect, fail, ready
from core.errors import PersonaStudioError
from engines.child import END, JOB_NICE, _portable
from engines.config import EngineConfig
from engines.factory import load_engine
from engines.priority import lower_priority

log = logging.getLogger(__name__)


def serve(conn: Connection, cfg: EngineConfig, nice: int, threads: int) -> None:
    """Load the engine, tell the app, then answer its requests until the app closes the connection."""
    import torch

    lower_priority(nice)  # before torch starts its threads: they inherit it
    torch.set_num_threads(threads)
    try:
        engine = load_engine(cfg)
    except Exception as err:  # the app shows it (ours: problem and fix, no traceback)
        if not isinstance(err, PersonaStudioError):
            log.exception("loading the model failed")
        fail(conn, _portable(err))
        return
    info = (engine.name, engine.context_window, engine.tokenizer, engine.batches, torch.get_num_threads())
    ready(conn, info)
    send_lock, cancelled = threading.Lock(), set()

    def reply(rid: int, item) -> None:
        with send_lock:
            conn.send((rid, item))

    def run(kind: str, rid: int, *args) -> None:
        try:
            if kind == "stream":
                pieces = engine.stream(*args)
                for piece in pieces:
                    if rid in cancelled:
                        pieces.close()  # the engine drops the row
                        return
                    reply(rid, piece)
                reply(rid, END)
            elif kind == "generate":
                conversations, settings, kw = args
                lower_priority(JOB_NICE)
                reply(rid, engine.generate(conversations, settings, **kw))
            else:
                reply(rid, engine.warm(*args))
        except (OSError, ValueError):  # the app is gone
            return
        except Exception as err:
            if not isinstance(err, PersonaStudioError):
                log.exception("%s request failed", kind)
            reply(rid, _portable(err))
        finally:
            cancelled.discard(rid)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break  # the app ended or dropped this version
        if message[0] == "cancel":
            cancelled.add(message[1])
            continue
        threading.Thread(target=run, args=message, daemon=True).start()
    os._exit(0)  # at once: a batch thread inside torch at interpreter teardown can abort the process


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s model process: %(message)s")
    conn, (cfg, nice, threads) = connect()
    serve(conn, cfg, nice, threads)

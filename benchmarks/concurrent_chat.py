"""Concurrent chat: N simultaneous `gradio_client` chats against the real app, per concurrency limit.

    python -m benchmarks.concurrent_chat                          # default model, N = 1, 4, 16; limits 1, 2, 4
    python -m benchmarks.concurrent_chat --clients 1,4,16 --limits 2
    python -m benchmarks.concurrent_chat --quick                  # tiny model, N = 1, 2; limit 2

For each `--concurrency_limit` the real `app.py` is started as a subprocess (its own SQLite
file, greedy decoding). N clients are users in the middle of a chat (the persona and history
of chat_latency, made unique per user): each first sends its 6th turn (untimed), then all
send their 7th message at the same moment, with the history the app returned, and read the
streamed replies. So the server's prefix cache holds what it would hold for real users.
Time to first token is until the first update with reply text; total is until the reply
finished (and was saved). The alternative column is the same app with one client: the
ratio is the slowdown N users see. Clients and server share the machine's cores.

The queue "starts to hurt" at the smallest N whose p50 first token is over twice that of
N = 1. The suggested limit is the one with the lowest p95 first token at the largest N
without errors (ties: more replies/s); compare it with `AppConfig.concurrency_limit`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.chat_latency import HISTORY, MESSAGE
from benchmarks.common import REPO, Row, Sizes, add_model_args, at_most, describe, report
from benchmarks.models import model_source

NAME = "concurrent_chat"
HURT = 2.0  # p50 first token over this multiple of N = 1's: the queue hurts


def parse_args(argv):
    sizes = Sizes(__doc__)
    add_model_args(sizes)
    sizes.add("--clients", "1,4,16", "1,2", "numbers of simultaneous chats", type=str)
    sizes.add("--limits", "1,2,4", "2", "app concurrency limits to try (--concurrency_limit)", type=str)
    sizes.add("--max-new-tokens", 64, 8, "tokens per timed reply (the 7th turn)")
    sizes.add("--first-tokens", 24, 8, "tokens of the untimed 6th-turn reply")
    sizes.add("--rounds", 2, 1, "times each N is run (samples are pooled)")
    sizes.parser.add_argument("--persona", default="ada", help="persona key (a file in personas/)")
    sizes.parser.add_argument("--startup-timeout", type=int, default=300, help="seconds for the app to come up")
    args = sizes.parse(argv)
    args.clients = [int(n) for n in str(args.clients).split(",")]
    args.limits = [int(n) for n in str(args.limits).split(",")]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model: str, limit: int, folder: Path) -> tuple[subprocess.Popen, str, Path]:
    """`python app.py` on a free port with its own store; (process, url, log file)."""
    port = free_port()
    log = folder / f"app-limit{limit}.log"
    flags = {"--model": model, "--port": port, "--concurrency_limit": limit, "--runs_dir": folder / "runs",
             "--database_url": f"sqlite:///{folder / f'labels-{limit}.db'}"}  # fmt: skip
    cmd = [sys.executable, "app.py", *(str(part) for pair in flags.items() for part in pair)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}", log


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> float:
    """Seconds until the app answers HTTP; raises with the log's tail if it dies or times out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/config", timeout=2):
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"app not up after {timeout} s:\n{log.read_text()[-2000:]}")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def reply_text(output) -> str:
    """The reply so far in a streamed /chat output (conversation_id, reply, turn_id)."""
    return output[1] if isinstance(output, list | tuple) and len(output) > 1 and output[1] else ""


def chat_kwargs(message: str, conv_id, args, max_new_tokens: int, history: list | None = None) -> dict:
    """The typed /chat endpoint's inputs: greedy, the persona of --persona, model version `base`."""
    kwargs = dict(message=message, persona=args.persona, version="base", conversation_id=conv_id, temperature=0,
                  max_new_tokens=max_new_tokens, api_name="/chat")  # fmt: skip
    return kwargs | ({"history": history} if history else {})


def one_chat(client, index: int, args, start: threading.Barrier, result: dict) -> None:
    """A user in the middle of a chat: the 6th turn is sent first (untimed; a new conversation
    seeded with the first 4 messages, made unique per user, as real users' are), then, when all
    clients are ready, the 7th message in the same stored conversation. Records first-token and
    total seconds of the 7th."""
    history = [dict(m) for m in HISTORY[:4]]
    history[0]["content"] = f"{history[0]['content']} (I am visitor number {index + 1}.)"
    try:
        conv_id, _, _ = client.predict(**chat_kwargs(HISTORY[4]["content"], None, args, args.first_tokens, history))
    except Exception as err:
        result["error"] = f"6th turn: {type(err).__name__}: {err}"[:300]
        conv_id = None
    start.wait()
    if conv_id is None:
        return
    t0 = time.perf_counter()
    try:
        job = client.submit(**chat_kwargs(MESSAGE, conv_id, args, args.max_new_tokens))
        # Poll every 5 ms: Job's own iterator polls every 1 ms, which 16 threads would turn
        # into CPU load on the cores the server needs.
        while not job.done():
            if "ttft_s" not in result and any(reply_text(o) for o in job.outputs()[-1:]):
                result["ttft_s"] = time.perf_counter() - t0
            time.sleep(0.005)
        final = job.result()
        result["total_s"] = time.perf_counter() - t0
        result.setdefault("ttft_s", result["total_s"] if reply_text(final) else None)
        result["chars"] = len(reply_text(final))
    except Exception as err:  # any failure a user would see counts as an error
        result["error"] = f"{type(err).__name__}: {err}"[:300]


def run_clients(url: str, n: int, args) -> dict:
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(n)]
    barrier = threading.Barrier(n)
    results = [{} for _ in range(n)]
    threads = [
        threading.Thread(target=one_chat, args=(c, i, args, barrier, r))
        for i, (c, r) in enumerate(zip(clients, results, strict=True))
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for c in clients:
        c.close()
    return {"results": results, "wall_s": wall}


def summarize(runs: list[dict], n: int) -> dict:
    samples = [r for run in runs for r in run["results"]]
    ok = [r for r in samples if "error" not in r]
    return {
        "clients": n,
        "ttft_s": describe([r["ttft_s"] for r in ok if r.get("ttft_s") is not None]),
        "total_s": describe([r["total_s"] for r in ok]),
        "errors": len(samples) - len(ok),
        "error_examples": sorted({r["error"] for r in samples if "error" in r})[:3],
        "replies_per_s": sum(n / run["wall_s"] for run in runs) / len(runs),
    }


def knee(by_n: dict[int, dict]) -> int | None:
    """The smallest N whose p50 first token is over HURT x that of the smallest N."""
    ns = sorted(by_n)
    base = by_n[ns[0]]["ttft_s"].get("p50")
    return next((n for n in ns[1:] if base and (by_n[n]["ttft_s"].get("p50") or 0) > HURT * base), None)


def suggest(by_limit: dict[int, dict[int, dict]]) -> int:
    """The limit with the lowest p95 first token at the largest N without errors (ties: replies/s)."""
    top = max(n for by_n in by_limit.values() for n in by_n)

    def score(limit):
        at = by_limit[limit][top]
        return (at["errors"] > 0, at["ttft_s"].get("p95") or float("inf"), -at["replies_per_s"])

    return min(by_limit, key=score)


def build_rows(by_limit: dict, current: int) -> tuple[list[Row], dict]:
    rows, knees = [], {}
    for limit, by_n in by_limit.items():
        ns = sorted(by_n)
        base = by_n[ns[0]]
        for n in ns:
            for q in ("p50", "p95"):
                metric = f"first token {q} s, N={n}, limit={limit} (vs N={ns[0]})"
                rows.append(Row(metric, by_n[n]["ttft_s"].get(q), base["ttft_s"].get(q)))
        errors = sum(by_n[n]["errors"] for n in ns)
        examples = sorted({e for n in ns for e in by_n[n]["error_examples"]})
        rows.append(
            Row(f"errors, all N, limit={limit}", errors, None, "0", at_most(errors, 0), note="; ".join(examples))
        )
        knees[limit] = knee(by_n)
    best = suggest(by_limit)
    top = max(n for by_n in by_limit.values() for n in by_n)
    hurt = "; ".join(f"limit {k}: from N={v}" if v else f"limit {k}: not up to N={top}" for k, v in knees.items())
    rows.append(
        Row(
            "suggested concurrency_limit (vs AppConfig default)",
            best,
            current,
            "",
            note=f"the queue hurts (p50 first token > {HURT:g}x that of N=1) {hurt}",
        )
    )
    return rows, {"knee": knees, "suggested_limit": best, "current_default": current}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import log_quietly

    log_quietly()
    args = parse_args(argv)
    from app import AppConfig

    current = AppConfig.model_fields["concurrency_limit"].default
    model = model_source(args.model)
    by_limit: dict[int, dict[int, dict]] = {}
    startup = {}
    with tempfile.TemporaryDirectory(prefix="persona-studio-concurrent-") as folder:
        for limit in args.limits:
            proc, url, log = start_app(model, limit, Path(folder))
            try:
                startup[limit] = wait_ready(proc, url, log, args.startup_timeout)
                run_clients(url, 1, args)  # warm-up: the first generation pays one-off costs
                by_limit[limit] = {}
                for n in args.clients:
                    runs = [run_clients(url, n, args) for _ in range(args.rounds)]
                    by_limit[limit][n] = summarize(runs, n)
                    s = by_limit[limit][n]
                    print(
                        f"limit {limit}, N={n}: first token p50 {s['ttft_s'].get('p50', 0):.3f} s, {s['errors']} errors"
                    )
            finally:
                stop_app(proc)
    rows, decision = build_rows(by_limit, current)
    report(NAME, rows, args, {"by_limit": by_limit, "startup_s": startup, **decision})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Concurrent chat: N simultaneous `gradio_client` chats against the real app, per engine behind it.

    python -m benchmarks.concurrent_chat                          # default model, N = 1, 4, 16, 32; all engines
    python -m benchmarks.concurrent_chat --engines inprocess --clients 1,4,16 --limits 2
    python -m benchmarks.concurrent_chat --quick                  # tiny model, N = 1, 2; inprocess + batched

Engines (`--engines`): `inprocess`, the engine before batching (`--batching off`: one `generate`
per chat), once per app `--concurrency_limit` in `--limits`; `batched`, the app's default
`--batching auto` (engines/batched.py) in a child process (`--model_process`, engines/child.py);
`batched-app`, the same in the app's own process;
`serve`, the app over `transformers serve --continuous-batching` (`--engine_url`); `llamacpp`, the
app over llama.cpp's server (`llama-server` or llama-cpp-python, default model's GGUF; skipped
with the reason when there is none). All but `inprocess` run with the limit at the largest N: they
batch, so every chat must reach them at once.

For each, the real `app.py` is started as a subprocess (its own SQLite file, greedy decoding). N
clients are users in the middle of a chat (the persona and history of chat_latency, made unique
per user): each first sends its 6th turn (untimed), then all send their 7th message at the same
moment, with the history the app returned, and read the streamed replies. So the server's prefix
cache holds what it would hold for real users. Time to first token is until the first update with
reply text; total is until the reply finished (and was saved). Aggregate tokens/s: the 7th replies'
tokens over the time from the common start to the last reply. Greedy replies are compared with the
in-process engine's, user by user. Clients and servers share the machine's cores, so by default
users are light HTTP clients (`--client http`: Gradio's event stream read over one connection each,
next to no CPU); `--client gradio` uses gradio_client, whose threads take cores from the app (the
clients' CPU use is printed either way).

The queue "starts to hurt" at the smallest N whose p50 first token is over twice that of
N = 1. The suggested limit (in-process engine) is the one with the lowest p95 first token at the
largest N without errors (ties: more replies/s); compare it with the app's limit
without batching (`app.UNBATCHED_LIMIT`).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import closing
from pathlib import Path

from benchmarks.chat_latency import HISTORY, MESSAGE
from benchmarks.common import REPO, Row, Sizes, add_model_args, at_least, at_most, describe, report, skipped, sse_events
from benchmarks.models import model_source

NAME = "concurrent_chat"
HURT = 2.0  # p50 first token over this multiple of N = 1's: the queue hurts
ENGINES = ("inprocess", "batched-app", "batched", "serve", "llamacpp")
TARGET_N = 16  # issue 13's targets: first token p50 <= 1.5 s and >= 3x today's tokens/s at 16 users


def parse_args(argv):
    sizes = Sizes(__doc__)
    add_model_args(sizes)
    sizes.add("--clients", "1,4,16,32", "1,2", "numbers of simultaneous chats", type=str)
    sizes.add("--limits", "1,2,4", "2", "app concurrency limits to try with the in-process engine", type=str)
    sizes.add("--engines", ",".join(ENGINES), "inprocess,batched", "engines behind the app", type=str)
    sizes.add("--max-new-tokens", 64, 8, "tokens per timed reply (the 7th turn)")
    sizes.add("--first-tokens", 24, 8, "tokens of the untimed 6th-turn reply")
    sizes.add("--rounds", 2, 1, "times each N is run (samples are pooled)")
    sizes.parser.add_argument("--client", choices=sorted(CLIENTS), default="http",
                              help="users' client: http = light HTTP clients (little CPU here, as users "
                              "on their own machines); gradio = gradio_client (threads on these cores)")  # fmt: skip
    sizes.parser.add_argument("--persona", default="ada", help="persona key (a file in personas/)")
    sizes.parser.add_argument("--repetition-penalty", type=float, default=None,
                              help="the apps' generation.repetition_penalty (default: the app's; `transformers "
                              "serve` refuses one: its greedy replies match in-process ones at 1.0)")  # fmt: skip
    sizes.parser.add_argument("--startup-timeout", type=int, default=300, help="seconds for a server to come up")
    args = sizes.parse(argv)
    args.clients = [int(n) for n in str(args.clients).split(",")]
    args.limits = [int(n) for n in str(args.limits).split(",")]
    args.engines = [e.strip() for e in str(args.engines).split(",")]
    unknown = set(args.engines) - set(ENGINES)
    if unknown:
        sizes.parser.error(f"unknown engines {sorted(unknown)}; pick from {', '.join(ENGINES)}")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list, log: Path) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        return subprocess.Popen([str(c) for c in cmd], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)


def start_app(model: str, limit: int, folder: Path, tag: str, extra: dict) -> tuple[subprocess.Popen, str, Path]:
    """`python app.py` on a free port with its own store; (process, url, log file)."""
    port = free_port()
    log = folder / f"app-{tag}.log"
    flags = {"--model": model, "--port": port, "--concurrency_limit": limit, "--runs_dir": folder / "runs",
             "--database_url": f"sqlite:///{folder / f'labels-{tag}.db'}", **extra}  # fmt: skip
    proc = start([sys.executable, "app.py", *(part for pair in flags.items() for part in pair)], log)
    return proc, f"http://127.0.0.1:{port}", log


def start_server(engine: str, args, model: str, folder: Path) -> tuple[subprocess.Popen | None, str]:
    """The model server behind the app for `serve` / `llamacpp`: (process, its /v1 URL), or (None, why not)."""
    from engines.serve import llama_server, llamacpp_commands, transformers_command

    port = free_port()
    if engine == "serve":
        cmd = transformers_command("127.0.0.1", port)
        cmd[0] = str(Path(sys.executable).parent / "transformers")  # the CLI of this environment
    else:
        server = llama_server()
        if server is None:
            return None, "no llama-server on PATH and no llama_cpp package (pip install 'llama-cpp-python[server]')"
        if args.model != "default":
            return None, f"llama.cpp serves the default model's GGUF; --model is {args.model}"
        from core.default_model import gguf_path

        [cmd] = llamacpp_commands(server, gguf_path(), [], "127.0.0.1", port, max(args.clients))
    proc = start(cmd, folder / f"{engine}-server.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, folder / f"{engine}-server.log", args.startup_timeout, path="/health")
    return proc, f"{url}/v1"


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float, path: str = "/config") -> float:
    """Seconds until `url + path` answers HTTP; raises with the log's tail if it dies or times out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2):
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"{log.name}: not up after {timeout} s:\n{log.read_text()[-2000:]}")


def stop_app(proc: subprocess.Popen | None) -> None:
    """Stop an app or server process (None: nothing was started)."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def reply_text(output) -> str:
    """The reply so far in a streamed /chat output (conversation_id, reply, turn_id)."""
    return output[1] if isinstance(output, list | tuple) and len(output) > 1 and output[1] else ""


CHAT_INPUTS = (
    "message",
    "persona",
    "version",
    "conversation_id",
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "custom_persona",
    "history",
    "scope_guard",
)  # /chat's parameters, in order (ui/chat.py)


def chat_kwargs(message: str, conv_id, args, max_new_tokens: int, history: list | None = None) -> dict:
    """The typed /chat endpoint's inputs: greedy, the persona of --persona, model version `base`."""
    kwargs = dict(message=message, persona=args.persona, version="base", conversation_id=conv_id, temperature=0,
                  max_new_tokens=max_new_tokens)  # fmt: skip
    return kwargs | ({"history": history} if history else {})


class GradioChat:
    """A user's browser-like client: gradio_client (its threads run here, on the cores measured)."""

    def __init__(self, url: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False)

    def send(self, kwargs: dict, first_text=None) -> tuple:
        """The final (conversation_id, reply, turn_id); `first_text()` is called at the first reply text."""
        job = self.client.submit(**kwargs, api_name="/chat")
        # Poll every 5 ms: Job's own iterator polls every 1 ms, which 32 threads would turn into CPU
        # load on the cores the server needs.
        while not job.done():
            if first_text and any(reply_text(o) for o in job.outputs()[-1:]):
                first_text()
                first_text = None
            time.sleep(0.005)
        return job.result()

    def close(self) -> None:
        self.client.close()


class HttpChat:
    """A light client: Gradio's HTTP API (POST /call/chat, then its event stream read line by line),
    so 32 users cost the measured machine next to nothing. A connection per message: the server
    closes one left idle for 5 s (uvicorn's keep-alive), as a user's between two messages may be."""

    def __init__(self, url: str):
        self.host = url.removeprefix("http://")
        self.session_hash = uuid.uuid4().hex  # one session per user, as a browser tab has

    def send(self, kwargs: dict, first_text=None) -> tuple:
        data = [kwargs.get(name) for name in CHAT_INPUTS]
        data[CHAT_INPUTS.index("scope_guard")] = True
        body = json.dumps({"data": data, "session_hash": self.session_hash})
        with closing(http.client.HTTPConnection(self.host, timeout=300)) as conn:
            return self._send(conn, body, first_text)

    def _send(self, conn: http.client.HTTPConnection, body: str, first_text) -> tuple:
        conn.request("POST", "/gradio_api/call/chat", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {text.decode()[:200]}")
        conn.request("GET", f"/gradio_api/call/chat/{json.loads(text)['event_id']}")
        response = conn.getresponse()
        final = None
        for event, data in sse_events(response):
            output = json.loads(data)
            output = output[0] if isinstance(output, list) and len(output) == 1 else output  # the tuple: one output
            if event == "error":
                raise RuntimeError(f"{output}"[:300])
            if first_text and event in ("generating", "complete") and reply_text(output):
                first_text()
                first_text = None
            if event == "complete":
                final = output
        if final is None:
            raise RuntimeError("no result in the event stream")
        return tuple(final)

    def close(self) -> None:
        pass


CLIENTS = {"http": HttpChat, "gradio": GradioChat}


def one_chat(client, index: int, args, start: threading.Barrier, result: dict) -> None:
    """A user in the middle of a chat: the 6th turn is sent first (untimed; a new conversation
    seeded with the first 4 messages, made unique per user, as real users' are), then, when all
    clients are ready, the 7th message in the same stored conversation. Records first-token and
    total seconds of the 7th, its text, and when it started and ended."""
    history = [dict(m) for m in HISTORY[:4]]
    history[0]["content"] = f"{history[0]['content']} (I am visitor number {index + 1}.)"
    try:
        conv_id, _, _ = client.send(chat_kwargs(HISTORY[4]["content"], None, args, args.first_tokens, history))
    except Exception as err:
        result["error"] = f"6th turn: {type(err).__name__}: {err}"[:300]
        conv_id = None
    start.wait()
    if conv_id is None:
        return
    t0 = result["t0"] = time.perf_counter()

    def first_text():
        result["ttft_s"] = time.perf_counter() - t0

    try:
        final = client.send(chat_kwargs(MESSAGE, conv_id, args, args.max_new_tokens), first_text)
        result["t_end"] = time.perf_counter()
        result["total_s"] = result["t_end"] - t0
        result["reply"] = reply_text(final)
        result.setdefault("ttft_s", result["total_s"] if result["reply"] else None)
    except Exception as err:  # any failure a user would see counts as an error
        result["error"] = f"{type(err).__name__}: {err}"[:300]


def run_clients(url: str, n: int, args) -> dict:
    clients = [CLIENTS[args.client](url) for _ in range(n)]
    barrier = threading.Barrier(n)
    results = [{} for _ in range(n)]
    threads = [
        threading.Thread(target=one_chat, args=(c, i, args, barrier, r))
        for i, (c, r) in enumerate(zip(clients, results, strict=True))
    ]
    start, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    client_cores = (time.process_time() - cpu) / wall  # this process runs only the clients meanwhile
    for c in clients:
        c.close()
    return {"results": results, "wall_s": wall, "client_cores": client_cores}


def summarize(runs: list[dict], n: int, count_tokens) -> dict:
    samples = [r for run in runs for r in run["results"]]
    ok = [r for r in samples if "error" not in r]
    rates = []
    for run in runs:
        done = [r for r in run["results"] if "t_end" in r]
        if done:
            window = max(r["t_end"] for r in done) - min(r["t0"] for r in done)
            rates.append(sum(count_tokens(r["reply"]) for r in done) / window)
    return {
        "clients": n,
        "ttft_s": describe([r["ttft_s"] for r in ok if r.get("ttft_s") is not None]),
        "total_s": describe([r["total_s"] for r in ok]),
        "tokens_per_s": sum(rates) / len(rates) if rates else None,
        "errors": len(samples) - len(ok),
        "error_examples": sorted({r["error"] for r in samples if "error" in r})[:3],
        "replies_per_s": sum(n / run["wall_s"] for run in runs) / len(runs),
        "client_cores": sum(run["client_cores"] for run in runs) / len(runs),
        "replies": [r.get("reply") for r in runs[0]["results"]],  # round 1, user by user
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


def engine_rows(label: str, by_n: dict, today: dict | None) -> list[Row]:
    """First token, tokens/s (vs today's engine at the same N), greedy agreement and errors of one setup."""
    rows, ns = [], sorted(by_n)
    for n in ns:
        s, first, target = by_n[n], by_n[ns[0]], n == TARGET_N
        for q in ("p50", "p95"):
            goal = target and q == "p50"  # issue 13: <= 1.5 s at 16 users
            met = at_most(s["ttft_s"].get(q), 1.5) if goal else None
            metric = f"first token {q} s, N={n}, {label} (vs N={ns[0]})"
            rows.append(Row(metric, s["ttft_s"].get(q), first["ttft_s"].get(q), "≤ 1.5 s" if goal else "", met))
        if today is by_n:
            rows.append(Row(f"aggregate tokens/s, N={n}, {label}", s["tokens_per_s"]))
        if today is None or n not in today or today is by_n:
            continue
        ratio = (s["tokens_per_s"] or 0) / (today[n]["tokens_per_s"] or 1)
        metric = f"aggregate tokens/s, N={n}, {label} (vs in-process)"
        goal = "ratio ≥ 3" if target else ""
        rows.append(
            Row(metric, s["tokens_per_s"], today[n]["tokens_per_s"], goal, at_least(ratio, 3) if goal else None)
        )
        pairs = [(a, b) for a, b in zip(s["replies"], today[n]["replies"], strict=True) if a is not None and b]
        same = sum(a == b for a, b in pairs)
        why = (
            "transformers serve refuses repetition_penalty: see --repetition-penalty"
            if label.startswith("serve")
            else ""
        )
        metric = f"greedy replies = in-process's, N={n}, {label}"
        met = bool(pairs) and same == len(pairs)  # none compared (errors) is not a match
        rows.append(Row(metric, same, len(pairs), "all", met, note=why if same < len(pairs) else ""))
    errors = sum(by_n[n]["errors"] for n in ns)
    examples = sorted({e for n in ns for e in by_n[n]["error_examples"]})
    rows.append(Row(f"errors, all N, {label}", errors, None, "0", at_most(errors, 0), note="; ".join(examples)))
    return rows


def build_rows(by_setup: dict[str, dict], by_limit: dict, current: int, skips: dict) -> tuple[list[Row], dict]:
    today_label = f"inprocess, limit={current}" if current in by_limit else next(iter(by_setup), None)
    today = by_setup.get(today_label)
    rows = [row for label, by_n in by_setup.items() for row in engine_rows(label, by_n, today)]
    rows += [skipped(f"all N, {engine}", reason) for engine, reason in skips.items()]
    decision = {"today": today_label}
    if by_limit:
        knees = {limit: knee(by_n) for limit, by_n in by_limit.items()}
        best = suggest(by_limit)
        top = max(n for by_n in by_limit.values() for n in by_n)
        hurt = "; ".join(f"limit {k}: from N={v}" if v else f"limit {k}: not up to N={top}" for k, v in knees.items())
        rows.append(Row("suggested concurrency_limit, in-process (vs the app's unbatched default)", best, current, "",
                        note=f"the queue hurts (p50 first token > {HURT:g}x that of N=1) {hurt}"))  # fmt: skip
        decision |= {"knee": knees, "suggested_limit": best, "current_default": current}
    return rows, decision


def token_counter(model: str):
    from transformers import AutoTokenizer

    from core.default_model import DEFAULT_MODEL, prepare_default_model

    tokenizer = AutoTokenizer.from_pretrained(prepare_default_model() if model == DEFAULT_MODEL else model)
    return lambda text: len(tokenizer(text or "", add_special_tokens=False)["input_ids"])


def measure(url: str, args, count_tokens, label: str) -> dict[int, dict]:
    run_clients(url, 1, args)  # warm-up: the first generation pays one-off costs
    by_n = {}
    for n in args.clients:
        by_n[n] = summarize([run_clients(url, n, args) for _ in range(args.rounds)], n, count_tokens)
        s = by_n[n]
        print(f"{label}, N={n}: first token p50 {s['ttft_s'].get('p50') or 0:.3f} s, "
              f"{s['tokens_per_s'] or 0:.1f} tok/s, {s['errors']} errors, "
              f"clients {s['client_cores']:.2f} cores")  # fmt: skip
    return by_n


def setups(args) -> list[tuple[str, str, int]]:
    """(label, engine, app concurrency limit) in run order: the in-process engine first, the reference."""
    order = sorted(args.engines, key=ENGINES.index)
    top = max(args.clients)
    return [(f"inprocess, limit={lim}", e, lim) if e == "inprocess" else (f"{e}, limit={top}", e, top)
            for e in order for lim in (args.limits if e == "inprocess" else [top])]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import log_quietly

    log_quietly()
    args = parse_args(argv)
    from app import UNBATCHED_LIMIT

    current = UNBATCHED_LIMIT  # the app's limit for one generate per chat (batched: BATCHED_LIMIT)
    model = model_source(args.model)
    count_tokens = token_counter(model)
    by_setup: dict[str, dict[int, dict]] = {}
    by_limit: dict[int, dict[int, dict]] = {}
    startup, skips = {}, {}
    with tempfile.TemporaryDirectory(prefix="persona-studio-concurrent-") as folder:
        for label, engine, limit in setups(args):
            server, app = None, None
            try:
                # inprocess: one generate per chat in the app's process (the engine before batching);
                # batched-app: chats batched in the app's process; batched: the default, batched in a
                # child process (engines/child.py).
                extra = {"--batching": "off" if engine == "inprocess" else "auto"}
                extra["--model_process"] = "child" if engine == "batched" else "app"
                if engine in ("serve", "llamacpp"):
                    server, url = start_server(engine, args, model, Path(folder))
                    if server is None:
                        skips[engine] = url
                        print(f"{engine}: skipped ({url})")
                        continue
                    extra = {"--engine_url": url}
                if args.repetition_penalty is not None:
                    extra["--generation.repetition_penalty"] = args.repetition_penalty
                tag = label.replace(", limit=", "-")
                app, app_url, log = start_app(model, limit, Path(folder), tag, extra)
                startup[label] = wait_ready(app, app_url, log, args.startup_timeout)
                by_setup[label] = measure(app_url, args, count_tokens, label)
                if engine == "inprocess":
                    by_limit[limit] = by_setup[label]
            finally:
                stop_app(app)
                stop_app(server)
    rows, decision = build_rows(by_setup, by_limit, current, skips)
    results = {"by_engine": by_setup, "by_limit": by_limit, "startup_s": startup, "skipped": skips, **decision}
    report(NAME, rows, args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

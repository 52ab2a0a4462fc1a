"""Label load: a room of raters labelling over plain HTTP against the real app, with people chatting.

    python -m benchmarks.label_load                            # 30 and 100 raters, then 100 + 16 chatters
    python -m benchmarks.label_load --raters 100 --chatters 16 --duration 30
    python -m benchmarks.label_load --before 1a63e13           # the app of that commit too, same run
    python -m benchmarks.label_load --routes run --chatters 0  # raters only, the direct route only
    python -m benchmarks.label_load --routes browser --raters 100 --chatters 16   # as browser tabs do
    python -m benchmarks.label_load --quick                    # tiny model, 4 raters (+ 2 chatters), 4 s

The real `app.py` is started as a subprocess on a SQLite store in a temp folder, with enough
label items registered beforehand. Each rater is a thread with ONE keep-alive HTTP connection
(`http.client`, no gradio_client: 100 clients of that kind would eat the cores being measured)
calling Gradio's HTTP API as a script would, by one of two routes (`--routes`): `call`,
`POST /gradio_api/call/<api_name>` (the queue, as gradio_client uses it) then
`GET .../<event_id>` for the server-sent result; or `run`, `POST /gradio_api/run/<api_name>`,
answered in the response, past the queue (ui/label.py opens it); or `browser`, the Label tab's
own events as a browser tab fires them (`benchmarks.label_browser`: one session, the tab
opened and the name entered once, then one `POST /gradio_api/run/predict` per Good/Bad whose
reply holds the next item: that POST is the round trip). A `call`/`run` rater loops
`/next_item` -> pause (`--pause`, jittered +-25 %) -> `/label`, for `--duration` seconds; the
round trip is what a rater waits between two pauses: `/label` + the following `/next_item`.
Chatters (typed `/chat`, `--max-new-tokens` each, a new conversation every 3 messages) keep
the generation group busy meanwhile. A call turned away (HTTP 503, queue full) is counted as
refused and retried after 1 s, as a person would press again.

After each scenario the store's label rows are counted against the labels the app
acknowledged: every label must be stored exactly once. `--before COMMIT` runs the same
scenarios on that commit's app (`git archive`), in the same run: the alternative column.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path

from benchmarks.common import REPO, Row, Sizes, add_model_args, at_most, describe, report, sse_events
from benchmarks.concurrent_chat import free_port, stop_app, wait_ready
from benchmarks.label_browser import LabelTab, label_events
from benchmarks.label_browser import Refused as BrowserRefused
from benchmarks.models import model_source

NAME = "label_load"
P95_TARGET_S = 0.2
IDLE_S = 3.0  # seconds the app's CPU use is measured with nobody calling
# Raters arrive within one pause of the start, all at once for the app: each first call builds the
# rater's Gradio session state (a copy of every component's config, ~9 ms) and claims an item (a
# write). Round trips that start after this many seconds show the room labelling at its pace.
ARRIVED_S = 5.0
PERSONA = {"name": "Ada", "facts": ["I build clocks.", "I keep bees."], "style": "short and warm"}


def parse_args(argv):
    sizes = Sizes(__doc__)
    add_model_args(sizes)
    sizes.add("--raters", "30,100", "4", "numbers of raters, one scenario each", type=str)
    sizes.add("--chatters", 16, 2, "people chatting during one more scenario at the largest --raters (0: none)")
    sizes.add("--duration", 60.0, 4.0, "seconds each scenario runs", type=float)
    sizes.add("--pause", 2.0, 0.5, "seconds a rater reads before labelling (jittered +-25 %%)", type=float)
    sizes.add("--max-new-tokens", 32, 4, "tokens per chat reply")
    routes = (
        "raters' routes, one scenario each: call = through the queue (as gradio_client); run = a direct POST; "
        "browser = the Label tab's own events, as Chromium sends them"
    )
    sizes.add("--routes", "call,run", "call,run", routes, type=str)
    sizes.parser.add_argument("--before", help="also measure the app of this commit (git archive) as the alternative")
    sizes.parser.add_argument("--startup-timeout", type=int, default=300, help="seconds for the app to come up")
    sizes.parser.add_argument("--app-args", default="", help="more flags for app.py (this commit's app only), e.g. "
                              "'--batching auto' or '--engine_url http://127.0.0.1:8011/v1'")  # fmt: skip
    args = sizes.parse(argv)
    args.raters = [int(n) for n in str(args.raters).split(",")]
    args.routes = str(args.routes).split(",")
    if set(args.routes) - {"call", "run", "browser"}:
        sizes.parser.error(f"--routes: call, run and/or browser, not {args.routes}")
    return args


# ---------------------------------------------------------------- a light HTTP client


class Refused(Exception):
    """HTTP 503: the app's queue is full."""


class Api:
    """Gradio's HTTP API over one keep-alive connection (one per thread)."""

    def __init__(self, url: str, timeout: float = 120, route: str = "call"):
        self.conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=timeout)
        self.route = route
        # One session per client, as gradio_client keeps: without one, every call makes the app
        # build a new session state (a copy of every component's config, ~40 % of its CPU).
        self.session_hash = uuid.uuid4().hex

    def call(self, api_name: str, *data) -> list:
        """POST /call/<api_name> then read the event stream; the final output's values."""
        body = json.dumps({"data": list(data), "session_hash": self.session_hash})
        self.conn.request("POST", f"/gradio_api/{self.route}/{api_name}", body, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        text = response.read()
        if response.status == 503:
            raise Refused(text.decode()[:200])
        if response.status != 200:
            raise RuntimeError(f"{api_name}: HTTP {response.status}: {text.decode()[:200]}")
        if self.route == "run":  # answered in the response itself, past the queue
            return json.loads(text)["data"]
        event_id = json.loads(text)["event_id"]
        self.conn.request("GET", f"/gradio_api/call/{api_name}/{event_id}")
        response = self.conn.getresponse()
        output = None
        for event, data in sse_events(response):
            if event in ("complete", "error"):
                output = json.loads(data)
                if event == "error":
                    raise RuntimeError(f"{api_name}: {output}"[:300])
        if output is None:
            raise RuntimeError(f"{api_name}: no result in the event stream")
        return output

    def close(self) -> None:
        self.conn.close()


def patient(api: Api, stop_at: float, counts: dict, api_name: str, *data) -> list | None:
    """The call, retried after 1 s while refused (None once the scenario is over)."""
    while time.perf_counter() < stop_at + 30:
        try:
            return api.call(api_name, *data)
        except Refused:
            counts["refused"] += 1
            time.sleep(1.0)
    return None


# ---------------------------------------------------------------- raters and chatters


def rater_name(scenario_tag: str, index: int) -> str:
    return f"{scenario_tag}-rater-{index:03d}"


def rater(url: str, name: str, route: str, args, stop_at: float, out: dict) -> None:
    if route == "browser":
        return browser_rater(url, name, args, stop_at, out)
    rng = random.Random(name)
    api = Api(url, route=route)
    out.update(round_trips=[], started_s=[], label_s=[], next_s=[], acked=[], refused=0, errors=[])
    start = stop_at - args.duration
    try:
        time.sleep(rng.uniform(0, args.pause))  # raters arrive one by one, not in lock-step
        t0 = time.perf_counter()
        shown = patient(api, stop_at, out, "next_item", name)
        out["next_s"].append(time.perf_counter() - t0)
        while shown and shown[0] is not None and time.perf_counter() < stop_at:
            time.sleep(args.pause * rng.uniform(0.75, 1.25))
            t0 = time.perf_counter()
            done = patient(api, stop_at, out, "label", shown[0], rng.choice(["good", "bad"]), "", name)
            t1 = time.perf_counter()
            if done is None:
                break
            out["acked"].append(shown[0])
            shown = patient(api, stop_at, out, "next_item", name)
            t2 = time.perf_counter()
            out["label_s"].append(t1 - t0)
            out["next_s"].append(t2 - t1)
            out["round_trips"].append(t2 - t0)
            out["started_s"].append(t0 - start)
    except Exception as err:  # what a rater would see as a failure
        out["errors"].append(f"{type(err).__name__}: {err}"[:300])
    finally:
        api.close()


def browser_rater(url: str, name: str, args, stop_at: float, out: dict) -> None:
    """A rater's browser tab: the Label tab opened, the name entered, then Good/Bad at the pace;
    what is acknowledged is the answer that was on screen (its item id is looked up afterwards)."""
    rng = random.Random(name)
    out.update(round_trips=[], started_s=[], label_s=[], next_s=[], acked=[], refused=0, errors=[])
    start = stop_at - args.duration
    tab = LabelTab(url, args.label_events)
    try:
        time.sleep(rng.uniform(0, args.pause))
        t0 = time.perf_counter()
        browser_patient(lambda: tab.open(name), stop_at, out)
        out["next_s"].append(time.perf_counter() - t0)
        while tab.answer and time.perf_counter() < stop_at:
            time.sleep(args.pause * rng.uniform(0.75, 1.25))
            shown, t0 = tab.answer, time.perf_counter()
            if not browser_patient(lambda: tab.verdict(rng.choice(["good", "bad"]), name), stop_at, out):
                break
            out["acked"].append(shown)
            out["label_s"].append(time.perf_counter() - t0)
            out["round_trips"].append(time.perf_counter() - t0)  # the label and the next item, one POST
            out["started_s"].append(t0 - start)
    except Exception as err:
        out["errors"].append(f"{type(err).__name__}: {err}"[:300])
    finally:
        tab.close()


def browser_patient(press, stop_at: float, counts: dict) -> bool:
    """`press()`, pressed again after 1 s while refused; False once the scenario is over."""
    while time.perf_counter() < stop_at + 30:
        try:
            press()
            return True
        except BrowserRefused:
            counts["refused"] += 1
            time.sleep(1.0)
    return False


def chatter(url: str, index: int, args, stop_at: float, out: dict) -> None:
    api = Api(url, timeout=600)
    out.update(replies=[], refused=0, errors=[])
    conv_id, turn = None, 0
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            message = f"Tell me about your day, part {turn + 1} (visitor {index})."
            # Every parameter of the typed /chat, in order (a raw POST names none of them).
            reply = patient(api, stop_at, out, "chat", message, "ada", "base", conv_id, 0, None, None,
                            args.max_new_tokens, None, None, True)  # fmt: skip
            if reply is None:
                break
            out["replies"].append(time.perf_counter() - t0)
            turn = (turn + 1) % 3
            reply = reply[0] if len(reply) == 1 else reply  # the streamed tuple is one output
            conv_id = reply[0] if turn else None  # a new conversation every 3 messages
    except Exception as err:
        out["errors"].append(f"{type(err).__name__}: {err}"[:300])
    finally:
        api.close()


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def app_cpu_seconds(pid: int) -> float:
    """The app's CPU seconds with its store process's (store/process.py: the store's work moved
    there), not the model's process (that is the chats' work, not the app's)."""
    import psutil

    children = psutil.Process(pid).children()
    served = [c.pid for c in children if "store.process" in " ".join(c.cmdline())]
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in served)


def scenario(url: str, pid: int, tag: str, n_raters: int, n_chatters: int, route: str, args) -> dict:
    stop_at = time.perf_counter() + args.duration
    raters = [{} for _ in range(n_raters)]
    chatters = [{} for _ in range(n_chatters)]
    threads = [threading.Thread(target=rater, args=(url, rater_name(tag, i), route, args, stop_at, r))
               for i, r in enumerate(raters)]  # fmt: skip
    threads += [threading.Thread(target=chatter, args=(url, i, args, stop_at, c)) for i, c in enumerate(chatters)]
    cpu0, own0, start = app_cpu_seconds(pid), cpu_seconds(os.getpid()), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu, own = time.perf_counter() - start, app_cpu_seconds(pid) - cpu0, cpu_seconds(os.getpid()) - own0
    acked = [(rater_name(tag, i), item) for i, r in enumerate(raters) for item in r["acked"]]
    flat = {key: [x for r in raters for x in r[key]] for key in ("round_trips", "started_s", "label_s", "next_s")}
    settled = [rt for rt, started in zip(flat["round_trips"], flat["started_s"], strict=True) if started >= ARRIVED_S]
    return {
        "raters": n_raters,
        "chatters": n_chatters,
        "round_trip_s": describe(flat["round_trips"]),
        "round_trip_after_arrivals_s": describe(settled),
        "label_s": describe(flat["label_s"]),
        "next_item_s": describe(flat["next_s"]),
        "labels_acked": len(acked),
        "labels_per_s": len(acked) / wall,
        "refused": sum(r["refused"] for r in raters),
        "errors": sum(len(r["errors"]) for r in raters),
        "error_examples": sorted({e for r in raters for e in r["errors"]})[:3],
        "chat_replies": describe([x for c in chatters for x in c["replies"]]),
        "chat_refused": sum(c["refused"] for c in chatters),
        "chat_errors": sum(len(c["errors"]) for c in chatters),
        "chat_error_examples": sorted({e for c in chatters for e in c["errors"]})[:3],
        "app_cpu_s": cpu,
        "app_cores": cpu / wall,
        "client_cores": own / wall,  # the raters' and chatters' threads (this process), same machine
        "wall_s": wall,
        "_acked": acked,
    }


# ---------------------------------------------------------------- the store


def register_items(db: str | Path, count: int) -> None:
    """The label items of a run, registered by the code of the app that will serve them (run in
    its folder by `measure_app`: an older app refuses a store of a newer schema)."""
    from store import NewItem, Store

    context = [{"role": "user", "content": "What do you do on Sundays?"}]
    items = [NewItem("eval", "Ada", PERSONA, context, f"I wind clock number {i}.", "base") for i in range(count)]
    Store(f"sqlite:///{db}", migrate=True).add_label_items(items)


def stored_exactly_once(db: Path, tag: str, result: dict) -> dict:
    """The scenario's label rows vs the labels acknowledged: missing, extra, items held twice."""
    # Plain SQL on the two tables every schema version has alike, so the store of an older app
    # (`--before`) is read without opening it with this code's Store (which would refuse it).
    with closing(sqlite3.connect(db)) as conn:
        query = "SELECT r.name, l.item_id FROM labels l JOIN raters r ON r.id = l.rater_id WHERE r.name LIKE ?"
        rows = conn.execute(query, (f"{tag}-%",)).fetchall()
        by_answer = dict(conn.execute("SELECT answer, id FROM label_items").fetchall())
    stored = set(rows)
    # A browser rater knows the answer it judged, not the item id (the page never shows it).
    acked = {
        (name, by_answer.get(item, item) if isinstance(item, str) else item) for name, item in result.pop("_acked")
    }
    return {"rows": len(rows), "acked": len(acked), "missing": len(acked - stored), "extra": len(stored - acked),
            "items_labelled_twice": len(rows) - len({item_id for _, item_id in rows})}  # fmt: skip


# ---------------------------------------------------------------- one app, all scenarios


def checkout(commit: str, folder: Path) -> Path:
    """The repository at `commit` (tracked files only), to run its app.py."""
    out = folder / f"app-{commit[:12]}"
    out.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def start_app(app_dir: Path, model: str, db: Path, folder: Path, extra: str = "") -> tuple[subprocess.Popen, str, Path]:
    """`python app.py` of `app_dir` on a free port and the given store, its default queue settings
    (plus `extra` flags)."""
    port = free_port()
    log = folder / f"app-{app_dir.name}.log"
    flags = {"--model": model, "--port": port, "--runs_dir": folder / "runs", "--database_url": f"sqlite:///{db}"}
    cmd = [sys.executable, "app.py", *(str(part) for pair in flags.items() for part in pair), *shlex.split(extra)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=app_dir, stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}", log


def measure_app(app_dir: Path, model: str, args, folder: Path, tag: str) -> dict:
    """Every scenario, one after the other, on one start of the app (its own store)."""
    with_chat = [(max(args.raters), args.chatters)] if args.chatters else []
    # Routes side by side per N: the store grows over the run (next_item and progress get slower).
    plan = [(n, m, route) for n, m in [(n, 0) for n in args.raters] + with_chat for route in args.routes]
    per_rater = int(args.duration / (args.pause * 0.75)) + 5  # more than a rater can label
    db = folder / f"labels-{tag}.db"
    count = sum(n for n, _, _ in plan) * per_rater
    code = f"from benchmarks.label_load import register_items; register_items({str(db)!r}, {count})"
    subprocess.run([sys.executable, "-c", code], cwd=app_dir, check=True)
    proc, url, log = start_app(app_dir, model, db, folder, args.app_args if app_dir == REPO else "")
    by_scenario = {}
    try:
        wait_ready(proc, url, log, args.startup_timeout)
        warm_up(url, args)
        args.label_events = label_events(url) if "browser" in args.routes else None
        by_scenario["idle"] = {"app_cores": settle(proc.pid)}  # the queue's own polling
        for k, (n_raters, n_chatters, route) in enumerate(plan):
            result = scenario(url, proc.pid, f"s{k}", n_raters, n_chatters, route, args)
            result["store"] = stored_exactly_once(db, f"s{k}", result)
            key = f"{n_raters} raters" + (f" + {n_chatters} chatters" if n_chatters else "") + f", /{route}"
            by_scenario[key] = result
            rt, settled = result["round_trip_s"], result["round_trip_after_arrivals_s"]
            after = f" (from {ARRIVED_S:g} s on: {settled['p95']:.3f} s)" if settled.get("n") else ""
            print(
                f"{tag}, {key}: round trip p50 {rt.get('p50', 0):.3f} s, p95 {rt.get('p95', 0):.3f} s{after}; "
                f"{result['refused']} refused, {result['errors']} errors; {result['labels_per_s']:.1f} labels/s"
            )
    finally:
        stop_app(proc)
    return by_scenario


def settle(pid: int, quiet_cores: float = 0.25, timeout: float = 180) -> float:
    """Waits until the app is quiet (at start it prefills every persona's prompt in the
    background); returns its CPU use then, in cores."""
    start = time.perf_counter()
    while True:
        cpu0 = app_cpu_seconds(pid)
        time.sleep(IDLE_S)
        cores = (app_cpu_seconds(pid) - cpu0) / IDLE_S
        if cores < quiet_cores or time.perf_counter() - start > timeout:
            return cores


def warm_up(url: str, args) -> None:
    """One chat reply and one item shown (the first calls pay one-off costs) before the clock starts."""
    api = Api(url, timeout=600)
    if args.chatters:
        api.call("chat", "Hello!", "ada", "base", None, 0, None, None, args.max_new_tokens, None, None, True)
    api.call("next_item", "warm-up")
    api.close()


# ---------------------------------------------------------------- the table


METRICS = {  # metric -> how to read it from a scenario's results
    "round trip p50 s": lambda s: s["round_trip_s"].get("p50"),
    "round trip p95 s": lambda s: s["round_trip_s"].get("p95"),
    "round trip max s": lambda s: s["round_trip_s"].get("max"),
    f"round trip p95 s, from {ARRIVED_S:g} s on": lambda s: s.get("round_trip_after_arrivals_s", {}).get("p95"),
    "refused + errors": lambda s: s["refused"] + s["errors"],
    "labels stored": lambda s: s["store"]["rows"],
    "labels/s": lambda s: s["labels_per_s"],
    "app CPU, cores": lambda s: s["app_cores"],
    "chat reply p50 s": lambda s: s["chat_replies"].get("p50"),
}


def scenario_rows(key: str, now: dict, old: dict | None) -> list[Row]:
    p95, failed, store = METRICS["round trip p95 s"](now), now["refused"] + now["errors"], now["store"]
    once = store["missing"] == store["extra"] == store["items_labelled_twice"] == 0
    targets = {  # metric -> (target, met, note)
        "round trip p95 s": (f"≤ {P95_TARGET_S} s", at_most(p95, P95_TARGET_S), ""),
        "refused + errors": ("0", at_most(failed, 0), "; ".join(now["error_examples"])),
        "labels stored": ("= acknowledged, once", once, f"{store['acked']} acknowledged, {store['missing']} "
                          f"missing, {store['extra']} extra, {store['items_labelled_twice']} items twice"),
        "labels/s": ("higher is better", None, ""),
        "app CPU, cores": ("lower is better", None, f"CPU seconds of the app's process and its store process / "
                           f"wall seconds; the raters' and chatters' threads used {now['client_cores']:.2f} cores "
                           "beside it"),
        "chat reply p50 s": ("", None, f"{now['chat_replies'].get('n', 0)} replies, {now['chat_refused']} "
                             f"refused, {now['chat_errors']} errors"),
    }  # fmt: skip
    rows = []
    for metric, get in METRICS.items():
        if metric.startswith("chat") and not now["chatters"]:
            continue
        target, met, note = targets.get(metric, ("", None, ""))
        rows.append(Row(f"{metric}, {key} (now vs before)", get(now), get(old) if old else None, target, met, note))
    return rows


def build_rows(after: dict, before: dict | None) -> list[Row]:
    rows = [Row("app CPU with nobody calling, cores (now vs before)", after["idle"]["app_cores"],
                before["idle"]["app_cores"] if before else None, "lower is better")]  # fmt: skip
    scenarios = [(key, now) for key, now in after.items() if key != "idle"]
    return rows + [row for key, now in scenarios for row in scenario_rows(key, now, (before or {}).get(key))]


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import log_quietly

    log_quietly()
    args = parse_args(argv)
    model = model_source(args.model)
    with tempfile.TemporaryDirectory(prefix="persona-studio-label-load-") as tmp:
        folder = Path(tmp)
        before = measure_app(checkout(args.before, folder), model, args, folder, "before") if args.before else None
        after = measure_app(REPO, model, args, folder, "now")
    rows = build_rows(after, before)
    report(NAME, rows, args, {"now": after, "before": before})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The first token as a person sees it: Chat in Chromium against `python app.py` as it ships.

    python -m benchmarks.first_token_browser              # default model, 6 warm messages, twice
    python -m benchmarks.first_token_browser --quick      # tiny model, 3 messages, once

Timed inside the page, not by polling it from Playwright (which adds 0.2-0.3 s): a key/click
listener takes `performance.now()` when Enter is pressed in the message box (or Retry is
clicked), and a MutationObserver on the chat box takes it again when the user's message shows
(the app accepted it: the first event's round trip) and when the new reply's first text shows.
Moments: the first message of a fresh page, the next messages of that chat (warm: the
engine's prefix cache holds the conversation), the first message after a persona switch
mid-chat, and a Retry, each after `--think` seconds (a person reads and types). Each round
(`--rounds`) starts a fresh page on the same app; the load average is printed beside the
figures (the machine is shared).
"""

from __future__ import annotations

import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, Row, Sizes, add_model_args, at_most, describe, report
from benchmarks.concurrent_chat import free_port, stop_app, wait_ready
from benchmarks.models import model_source

NAME = "first_token_browser"
WARM_TARGET_S, SWITCH_TARGET_S = 0.2, 0.6
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright cannot download a browser here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip
MESSAGES = [
    "Hello! What are you working on today?",
    "Why that one?",
    "How long does it take?",
    "What is the hardest part?",
    "Do you ever make mistakes?",
    "What would you do differently next time?",
]
# In the page: arm on Enter in the message box or a click on Retry; resolve on the user's message
# (sends only) and on the first text of the new reply (the last bot message, new or changed, not a
# notice). Times in ms since the arming event.
TIMER_JS = r"""
() => {
  if (window.__ft) return;
  const bots = () => [...document.querySelectorAll('#chat-box [data-testid="bot"]')].map(e => e.innerText.trim());
  const users = () => document.querySelectorAll('#chat-box [data-testid="user"]').length;
  const ft = window.__ft = {done: [], pending: null};
  const arm = (kind) => { ft.pending = {kind, t0: performance.now(), bots: bots(), users: users()}; };
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && e.target.closest("#chat-input")) arm("send");
  }, true);
  document.addEventListener("click", (e) => {
    const b = e.target.closest("button");
    if (b && b.innerText.trim() === "Retry") arm("retry");
  }, true);
  const check = () => {
    const p = ft.pending;
    if (!p) return;
    const now = performance.now();
    if (p.kind === "send" && p.accepted === undefined && users() > p.users) p.accepted = now - p.t0;
    const texts = bots(), last = texts[texts.length - 1] || "";
    const fresh = p.kind === "send" ? texts.length > p.bots.length : last !== p.bots[p.bots.length - 1];
    if (fresh && last && !last.startsWith("Persona switched")) {
      const joins = (window.__joins || []).filter((t) => t >= p.t0).map((t) => t - p.t0);
      const streamed = (window.__streamed || []).filter((t) => t >= p.t0).map((t) => t - p.t0);
      ft.done.push({kind: p.kind, first_text_ms: now - p.t0, accepted_ms: p.accepted ?? null, joins_ms: joins,
                    arrived_ms: streamed.length ? streamed[streamed.length - 1] : null,
                    t0_wall_ms: performance.timeOrigin + p.t0});
      ft.pending = null;
    }
  };
  new MutationObserver(check).observe(document.querySelector("#chat-box"),
    {subtree: true, childList: true, characterData: true});
}
"""


SENDABLE_JS = """() => {
  const b = document.querySelector("#chat-send");
  return b && !b.disabled && b.innerText.trim() === "Send";
}"""


# Before the page's scripts: each `POST /gradio_api/queue/join` (an event entering the queue) noted
# with its start, to tell the two events of a send apart (accept the message, then generate).
JOINS_JS = r"""
window.__joins = [];
const fetched = window.fetch;
window.fetch = function (input, init) {
  const url = typeof input === "string" ? input : input.url;
  if (url.includes("/queue/join")) window.__joins.push(performance.now());
  if (!url.includes("/queue/data")) return fetched.apply(this, arguments);
  // The event stream (read by Gradio's client through fetch): each streamed update of an event
  // ("process_generating") noted as it arrives, before the page renders it.
  return fetched.apply(this, arguments).then((response) => {
    if (!response.body) return response;
    const [page, ours] = response.body.tee();
    const reader = ours.getReader(), text = new TextDecoder();
    (async () => {
      for (;;) {
        const {done, value} = await reader.read();
        if (done) return;
        if (text.decode(value).includes('"process_generating"')) window.__streamed.push(performance.now());
      }
    })();
    return new Response(page, {status: response.status, statusText: response.statusText, headers: response.headers});
  });
};
window.__streamed = [];
"""


def parse_args(argv):
    sizes = Sizes(__doc__)
    add_model_args(sizes)
    sizes.add("--messages", 6, 3, "messages of the warm chat (the first one is timed apart)")
    sizes.add("--rounds", 2, 1, "fresh pages, one after the other (the machine is shared: run it twice)")
    sizes.add("--think", 3.0, 0.5, "seconds a person reads and types before each send or retry", type=float)
    sizes.parser.add_argument("--startup-timeout", type=int, default=300, help="seconds for the app to come up")
    sizes.parser.add_argument("--switch-to", default="Marco", help="persona picked mid-chat (its display name)")
    sizes.parser.add_argument("--app-args", default="", help="more flags for app.py, e.g. '--dtype bfloat16'")
    return sizes.parse(argv)


def load() -> float:
    return os.getloadavg()[0]


def start_app(model: str, folder: Path, more: str = "") -> tuple[subprocess.Popen, str, Path]:
    """`python app.py` with its defaults (store and model in their processes), a store of its own."""
    port, log = free_port(), folder / "app.log"
    cmd = [sys.executable, "app.py", "--model", model, "--port", str(port), "--runs_dir", str(folder / "runs"),
           "--database_url", f"sqlite:///{folder / 'labels.db'}", *shlex.split(more)]  # fmt: skip
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}", log


def finished(page, timeout_ms: int = 180_000) -> None:
    """Until the reply's first text showed, then until it is saved (the Send button, which said
    "Replying…" since the message was accepted, says Send again)."""
    page.wait_for_function("() => !window.__ft.pending", timeout=timeout_ms)
    page.wait_for_function(SENDABLE_JS, timeout=timeout_ms)


def send(page, text: str, think: float) -> None:
    page.wait_for_timeout(think * 1000)
    box = page.locator("#chat-input textarea")
    box.fill(text)
    box.press("Enter")
    finished(page)


def one_round(browser, url: str, args) -> list[dict]:
    """A fresh page: the warm chat, a persona switch, a retry; the page's timings with the load."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(JOINS_JS)
    try:
        page.goto(url, wait_until="domcontentloaded")  # "networkidle" never settles on a Gradio page
        page.locator("#chat-box").wait_for()
        page.wait_for_timeout(1000)  # the page-load events (persona list) settle first
        page.evaluate(TIMER_JS)
        moments = []
        for i, text in enumerate(MESSAGES[: args.messages]):
            send(page, text, args.think)
            moments.append("first message" if i == 0 else "warm")
        page.locator("#chat-persona").get_by_role("combobox").click()
        page.get_by_role("option", name=re.compile(rf"^{re.escape(args.switch_to)}\b")).click()
        send(page, "Who am I talking to now?", args.think)
        moments.append("after a persona switch")
        page.wait_for_timeout(args.think * 1000)
        page.get_by_role("button", name="Retry", exact=True).click()
        finished(page)
        moments.append("after a retry")
        done = page.evaluate("() => window.__ft.done")
    finally:
        page.close()
    assert len(done) == len(moments), (moments, done)
    return [d | {"moment": m, "load_1min": load()} for d, m in zip(done, moments, strict=True)]


def summary(timings: list[dict]) -> dict:
    by_moment = {}
    for t in timings:
        by_moment.setdefault(t["moment"], []).append(t)
    out = {}
    for moment, ts in by_moment.items():
        out[moment] = {
            "first_text_s": describe([t["first_text_ms"] / 1000 for t in ts]),
            "accepted_s": describe([t["accepted_ms"] / 1000 for t in ts if t["accepted_ms"] is not None]),
            # the generating event's join (the last before the first text): what the model and
            # the stream take from there
            "generation_joined_s": describe([t["joins_ms"][-1] / 1000 for t in ts if t["joins_ms"]]),
            # the streamed update that carried the first text, as it reached the page (the rest, to
            # the first text: the browser drawing it)
            "arrived_s": describe([t["arrived_ms"] / 1000 for t in ts if t.get("arrived_ms") is not None]),
        }
    return out


def build_rows(per_round: list[dict], loads: list[float]) -> list[Row]:
    rows = []
    targets = {"warm": WARM_TARGET_S, "after a persona switch": SWITCH_TARGET_S, "after a retry": SWITCH_TARGET_S}
    for k, s in enumerate(per_round, start=1):
        for moment, m in s.items():
            p50, target = m["first_text_s"].get("p50"), targets.get(moment)
            accepted, joined = m["accepted_s"].get("p50"), m["generation_joined_s"].get("p50")
            note = f"n={m['first_text_s']['n']}; load {loads[k - 1]:.2f}"
            if accepted is not None:
                note += f"; message shown (accepted) at {accepted:.3f} s"
            if joined is not None:
                note += f"; generating event joined the queue at {joined:.3f} s"
            if (arrived := m["arrived_s"].get("p50")) is not None:
                note += f"; first text reached the page at {arrived:.3f} s"
            met = at_most(p50, target) if target else None
            rows.append(Row(f"round {k}: first visible token, {moment}, p50 s", p50, None,
                            f"≤ {target} s" if target else "", met, note))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    args = parse_args(argv)
    model = model_source(args.model)
    per_round, loads, timings = [], [], []
    with tempfile.TemporaryDirectory(prefix="persona-studio-first-token-") as tmp:
        proc, url, log = start_app(model, Path(tmp), args.app_args)
        try:
            wait_ready(proc, url, log, args.startup_timeout)
            time.sleep(5)  # the app prefills every persona's prompt at start: let it finish
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for _ in range(args.rounds):
                    loads.append(load())
                    got = one_round(browser, url, args)
                    timings += got
                    per_round.append(summary(got))
                browser.close()
        finally:
            stop_app(proc)
    rows = build_rows(per_round, loads)
    warm = [t["first_text_ms"] / 1000 for t in timings if t["moment"] == "warm"]
    print(f"warm first visible token, all rounds: median {statistics.median(warm):.3f} s" if warm else "")
    report(NAME, rows, args, {"rounds": per_round, "timings": timings, "load_1min_at_round_start": loads})
    return 0


if __name__ == "__main__":
    sys.exit(main())

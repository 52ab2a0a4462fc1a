"""The Label tab as a rater's browser tab drives it, for `benchmarks.label_load --routes browser`.

Gradio's JS client sends an event that does not queue (the Label tab's events are `queue=False`,
ui/label.py) as one `POST /gradio_api/run/predict` with the event's `fn_index`, its trigger's
component id, the page's `session_hash` and the inputs' values, State inputs as null (the
server keeps them in the session); the reply carries every output. Seen in Chromium against
the app: opening the tab, pressing Enter in the Rater box, Good and Bad are one such POST each,
and a verdict's reply already holds the next item. So a rater here is one keep-alive connection
and one session: open the tab, give the name, then one POST per verdict (that POST is the round
trip the rater waits).
"""

from __future__ import annotations

import http.client
import json
import uuid


class Refused(Exception):
    """HTTP 503: the app turned the request away."""


def host(url: str) -> str:
    """`127.0.0.1:7860` of `http://127.0.0.1:7860/`."""
    return url.removeprefix("http://").rstrip("/")


def label_events(url: str) -> dict:
    """{event: (fn_index, trigger_id)} of the Label tab's own events, read from the page's
    `/config` as the browser reads it; also the output positions of the answer and progress."""
    conn = http.client.HTTPConnection(host(url), timeout=60)
    conn.request("GET", "/config")
    config = json.loads(conn.getresponse().read())
    conn.close()
    by_id = {c["id"]: c for c in config["components"]}

    def component(key: str, value: str, kind: str | None = None) -> int:
        [found] = [i for i, c in by_id.items() if c.get("props", {}).get(key) == value and kind in (None, c["type"])]
        return found

    wanted = {
        "open": (component("label", "Label", "tabitem"), "select"),
        "name": (component("elem_id", "rater-name"), "submit"),
        "good": (component("elem_id", "label-good"), "click"),
        "bad": (component("elem_id", "label-bad"), "click"),
    }
    events = {}
    for event, target in wanted.items():
        [dep] = [d for d in config["dependencies"] if list(target) in [list(t) for t in d["targets"]]]
        if dep.get("queue") is not False:
            raise RuntimeError(f"the Label tab's {event!r} event queues: the browser does not send it to /run/predict")
        events[event] = (dep["id"], target[0])
    outputs = dep["outputs"]  # every Label event shows the same outputs (ui/label.py `view.outputs`)
    events["answer_at"] = outputs.index(component("elem_id", "label-answer"))
    events["progress_at"] = outputs.index(component("elem_id", "label-progress"))
    return events


class LabelTab:
    """One rater's page: one session, one keep-alive connection, the tab's events as the browser
    fires them. `answer` is the answer on screen ("" when nothing is left)."""

    def __init__(self, url: str, events: dict, timeout: float = 120):
        self.conn = http.client.HTTPConnection(host(url), timeout=timeout)
        self.events = events
        self.session_hash = uuid.uuid4().hex[:10]  # the JS client's are 10 characters
        self.answer = ""

    def fire(self, event: str, data: list, event_data: dict | None = None) -> str:
        """The event's POST; returns the progress line (an error shows there, ui/label.py `beside`)."""
        fn_index, trigger_id = self.events[event]
        body = {"data": data, "event_data": event_data, "fn_index": fn_index, "trigger_id": trigger_id,
                "session_hash": self.session_hash}  # fmt: skip
        self.conn.request("POST", "/gradio_api/run/predict", json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        text = response.read()
        if response.status == 503:
            raise Refused(text.decode()[:200])
        if response.status != 200:
            raise RuntimeError(f"{event}: HTTP {response.status}: {text.decode()[:200]}")
        outputs = json.loads(text)["data"]
        answer, progress = outputs[self.events["answer_at"]], outputs[self.events["progress_at"]]
        if isinstance(progress, str) and progress.startswith("⚠️"):
            raise RuntimeError(f"{event}: {progress}"[:300])
        if isinstance(answer, str):  # a skipped output ({"__type__": "update"}) leaves the screen as it was
            self.answer = answer
        return progress

    def open(self, name: str) -> None:
        """Open the Label tab, type the name and press Enter: the rater's first item on screen."""
        self.fire("open", ["", None], {"value": "Label", "index": 2})  # no name typed yet
        self.fire("name", [name, None])

    def verdict(self, verdict: str, name: str) -> None:
        """Press Good or Bad: the label saved and the next item on screen (one POST)."""
        self.fire(verdict, [None, "", None, name, None])  # item id, comment, mine, rater, shown_for

    def close(self) -> None:
        self.conn.close()

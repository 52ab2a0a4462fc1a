"""What every benchmark shares: the machine's description, timing, the results table and JSON.

A script measures the product's code path and the alternative a user would otherwise write,
in the same run, turns each compared quantity into a `Row` and calls `report()`, which prints
the Markdown table (metric | product | alternative | ratio | target | met?) and writes
`benchmarks/results/<name>.json` with the machine's description. `--quick` swaps every size
for a tiny one (the tiny Llama, a few steps or items): it checks that a script still runs,
and its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks.models import LLAMA_1B_SHAPED, TINY
from corpus.formats import SHARED_VALID_CSV

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
PACKAGES = ("transformers", "peft", "trl", "accelerate", "bitsandbytes", "unsloth", "gradio", "bert-score")


# ---------------------------------------------------------------- the table and the JSON


@dataclass
class Row:
    """One compared quantity. `ratio` is always product / alternative; `target` says in words
    which way is better (e.g. "ratio ≥ 1.0" for tokens/s, "≤ 0.3 s" for a latency)."""

    metric: str
    product: float | None
    alternative: float | None = None
    target: str = ""
    met: bool | None = None  # None: no target, or not measurable here
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.product is None or not self.alternative:
            return None
        return self.product / self.alternative

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def skipped(metric: str, reason: str) -> Row:
    """A row that could not be measured here, with the reason (never a made-up number)."""
    return Row(metric, None, note=f"skipped: {reason}")


def at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """The Markdown table, notes numbered under it."""
    lines = ["| metric | product | alternative | ratio | target | met? |", "|---|---:|---:|---:|---|:---:|"]
    notes = []
    for row in rows:
        metric = row.metric
        if row.note:
            notes.append(row.note)
            metric += f" [{len(notes)}]"
        product = "skipped" if row.product is None and row.note.startswith("skipped") else _fmt(row.product)
        met = {True: "yes", False: "**no**", None: "—"}[row.met]
        lines.append(f"| {metric} | {product} | {_fmt(row.alternative)} | {_fmt(row.ratio)} | {row.target} | {met} |")
    lines += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)] if notes else []
    return "\n".join(lines)


def report(name: str, rows: list[Row], args: argparse.Namespace, results: dict) -> Path:
    """Print the table and write `<args.out>/<name>.json`; returns the JSON's path."""
    title = f"## {name}" + (" (--quick: tiny sizes, the numbers mean nothing)" if args.quick else "")
    print(f"\n{title}\n\n{table(rows)}\n")
    payload = {
        "benchmark": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "rows": [row.as_dict() for row in rows],
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"written {path}")
    return path


# ---------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine() -> dict:
    """What the numbers were measured on. The load average matters: a busy machine is slow."""
    import psutil
    import torch

    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "memory_gb": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "count": torch.cuda.device_count(),
        }
    return info


# ---------------------------------------------------------------- timing


def cuda_sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def describe(values: list[float]) -> dict:
    """n, p50, p95, mean, min, max of a list of measurements (seconds, tokens/s, ...)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def repeat(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeats` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        cuda_sync()
        start = time.perf_counter()
        fn()
        cuda_sync()
        times.append(time.perf_counter() - start)
    return times


class PeakRSS:
    """Highest resident memory (MB) of this process while the block runs, sampled every 10 ms.
    Sampling can miss a spike shorter than that; `ru_maxrss` never misses but covers the
    whole process life, so both are worth reporting."""

    def __init__(self, interval_s: float = 0.01):
        import psutil

        self.interval_s = interval_s
        self.process = psutil.Process()
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.process.memory_info().rss / 2**20)
            self._stop.wait(self.interval_s)

    def start(self) -> PeakRSS:
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.process.memory_info().rss / 2**20)
        return self.peak_mb


def max_rss_mb() -> float:
    """Peak resident memory of this process over its whole life (Linux: ru_maxrss in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- arguments


class Sizes:
    """Arguments whose default depends on --quick (and, where given, on a CUDA GPU)."""

    def __init__(self, doc: str):
        first, _, rest = (doc or "").partition("\n")
        self.parser = argparse.ArgumentParser(
            description=first, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        self.parser.add_argument(
            "--quick", action="store_true", help="tiny sizes to check the script runs (the numbers mean nothing)"
        )
        self.parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for <name>.json")
        self.defaults: dict[str, tuple] = {}

    def add(self, flag: str, full, quick, help: str, type=int, gpu=None) -> None:
        dest = flag.lstrip("-").replace("-", "_")
        where = f"default {full}" + (f", {gpu} on CUDA" if gpu is not None else "") + f"; --quick: {quick}"
        self.parser.add_argument(flag, type=type, default=None, help=f"{help} ({where})")
        self.defaults[dest] = (full, quick, gpu)

    def parse(self, argv: list[str] | None) -> argparse.Namespace:
        import torch

        args = self.parser.parse_args(argv)
        cuda = torch.cuda.is_available()
        for dest, (full, quick, gpu) in self.defaults.items():
            if getattr(args, dest) is None:
                setattr(args, dest, quick if args.quick else (gpu if cuda and gpu is not None else full))
        return args


def add_model_args(sizes: Sizes, gpu_model: str | None = None) -> None:
    help = f"`default` (SmolLM2-135M), a folder, a hub id, `{TINY}` or `{LLAMA_1B_SHAPED}` (random weights)"
    sizes.add("--model", "default", TINY, help, type=str, gpu=gpu_model)
    sizes.parser.add_argument("--data", type=Path, default=SHARED_VALID_CSV, help="Synthetic-Persona-Chat CSV")


def log_quietly() -> None:
    """Benchmarks print tables; library chatter goes to stderr at WARNING only."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------- the app's HTTP API


def sse_events(response) -> Iterator[tuple[str | None, str]]:
    """(event, data) of each `data:` line of Gradio's event stream (`GET /gradio_api/call/<name>/<id>`),
    read line by line as it arrives; it ends after `complete` or `error`."""
    event = None
    while line := response.readline():
        line = line.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, line[6:]

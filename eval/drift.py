"""Persona drift: does a long chat stay in persona, or does the persona fade turn by turn?

Every regression reply gets `persona_similarity` (all-MiniLM-L6-v2 cosine to its persona's
best-matching fact, `eval.consistency`) and `closest_persona` (its own persona is the most
similar of all). For scripts with at least `MIN_TURNS` replies under one persona, both are
averaged per window of `WINDOW` consecutive turns, so decay shows as a falling line:
`eval.regress` prints it, stores it in results.json (`drift`) and plots it (`drift.png`).
"""

from __future__ import annotations

import statistics
from pathlib import Path

MIN_TURNS = 10  # shorter scripts have too few windows to show a trend
WINDOW = 5  # turns per point: one reply's similarity is noisy


def drift(records: list[dict], window: int = WINDOW, min_turns: int = MIN_TURNS) -> list[dict]:
    """Per long script: [{"script", "persona", "windows": [{"turns": "1-5", "similarity",
    "in_persona"}, ...], "slope"}], slope = least-squares change of similarity per turn."""
    by_script: dict[str, list[dict]] = {}
    for record in records:
        by_script.setdefault(record["script"], []).append(record)
    found = []
    for script, turns in by_script.items():
        if len(turns) < min_turns or len({t["persona"] for t in turns}) > 1:
            continue  # a persona switch restarts the persona: not one chat's drift
        windows = []
        for start in range(0, len(turns), window):
            chunk = turns[start : start + window]
            windows.append({
                "turns": f"{start + 1}-{start + len(chunk)}",
                "similarity": statistics.fmean(t["persona_similarity"] for t in chunk),
                "in_persona": statistics.fmean(float(t["closest_persona"]) for t in chunk),
            })  # fmt: skip
        positions = list(range(1, len(turns) + 1))
        slope = statistics.linear_regression(positions, [t["persona_similarity"] for t in turns]).slope
        found.append({"script": script, "persona": turns[0]["persona"], "windows": windows, "slope": slope})
    return found


def drift_lines(found: list[dict]) -> list[str]:
    lines = []
    for d in found:
        points = ", ".join(f"{w['turns']}: {w['similarity']:.2f} ({w['in_persona']:.0%})" for w in d["windows"])
        lines.append(f"persona drift, {d['script']} (similarity by turns, share closest to {d['persona']}): {points}; "
                     f"slope {d['slope']:+.4f}/turn")  # fmt: skip
    return lines


def drift_plot(found: list[dict], path: Path) -> Path | None:
    """Similarity per window, one line per long script; None when there is none."""
    if not found:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for d in found:
        ax.plot([w["turns"] for w in d["windows"]], [w["similarity"] for w in d["windows"]], marker="o",
                label=f"{d['script']} ({d['slope']:+.4f}/turn)")  # fmt: skip
    ax.set_xlabel("turns")
    ax.set_ylabel("similarity to own persona")
    ax.set_title("Persona drift over long regression chats", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path

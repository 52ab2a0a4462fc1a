"""The leaderboard section of the Results tab, and Compare's "pick the pair for me".

`build_leaderboard(ctx)` (inside `with gr.Tab("Results")`) shows the Bradley-Terry leaderboard
of the blind A/B votes (`eval.leaderboard`): strengths with 95 % bootstrap intervals as a table
and a plot, the votes per pair and, folded, each persona's own leaderboard. `/leaderboard`
(gradio_client) returns {leaderboard, pairs, personas, notes}; `/pick_pair(persona="")` the two
versions `eval.pairing` would compare next.
"""

# No `from __future__ import annotations`: `gr.api` reads the endpoint types from the live
# annotations.

from collections.abc import Callable

import gradio as gr
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.errors import PersonaStudioError
from eval.leaderboard import ELO_BASE, Board, by_persona, leaderboard
from eval.pairing import pick_pair
from ui.common import shows_errors, user_error
from ui.context import AppContext

# Each persona's board has fewer votes and so a slower fit per round (~2 s for 10 personas x
# 200 votes at 200 rounds on 2 busy cores, ~5 s at 1,000): fewer rounds keep a refresh short.
PERSONA_ROUNDS = 200
HELP = (
    "Bradley-Terry strengths from every blind Compare vote, on the Elo scale (1000 = average; 400 points = 10:1 "
    "odds). A tie or *both bad* counts half a win for each side. Bars: 95 % bootstrap intervals (1,000 rounds). "
    "Versions whose intervals overlap share a rank."
)


def leaderboard_figure(table: pd.DataFrame) -> Figure:
    """Each version's strength with its 95 % interval, best on top; 1000 (average) marked."""
    fig = Figure(figsize=(6, 1.2 + 0.4 * max(len(table), 1)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: no global state in Gradio's worker threads
    ax = fig.add_subplot(1, 1, 1)
    if table.empty:
        ax.text(0.5, 0.5, "no A/B votes yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    y = list(range(len(table)))[::-1]  # best (first row) on top
    low, high = table["strength"] - table["95 % low"], table["95 % high"] - table["strength"]
    ax.errorbar(table["strength"], y, xerr=[low, high], fmt="o", color="tab:blue", capsize=3)
    labels = [f"#{rank} {name} (n={votes})" for rank, name, votes in table[["rank", "model version", "votes"]].values]
    ax.set_yticks(y, labels, fontsize=8, parse_math=False)
    ax.axvline(ELO_BASE, color="gray", linewidth=0.6)
    ax.set_xlabel("strength (Elo scale), 95 % interval")
    ax.set_title("A/B leaderboard (Bradley-Terry)", fontsize=10)
    return fig


def read_board(ctx: AppContext) -> tuple[Board, pd.DataFrame]:
    try:
        rows = ctx.store.preferences()
    except PersonaStudioError as err:
        raise user_error(err) from None
    return leaderboard(rows), by_persona(rows, rounds=PERSONA_ROUNDS)


def build_leaderboard(ctx: AppContext) -> dict:
    """The section; call inside the Results tab. Returns the arguments of a `.select(**...)`
    (or `.click`) that refreshes it: `results_tab.select(**build_leaderboard(ctx), api_name=False)`."""
    gr.Markdown("### Leaderboard from the blind A/B votes")
    gr.Markdown(HELP)
    table = gr.Dataframe(label="Leaderboard", interactive=False, wrap=True)
    plot = gr.Plot(label="Strengths with 95 % intervals")
    notes = gr.Markdown("")
    with gr.Accordion("Votes per pair and per persona", open=False):
        pairs = gr.Dataframe(label="Votes per pair", interactive=False)
        personas = gr.Dataframe(label=f"Per persona ({PERSONA_ROUNDS} bootstrap rounds)", interactive=False)
    refresh_button = gr.Button("⟳ Refresh the leaderboard")

    @shows_errors
    def refresh() -> tuple:
        board, per_persona = read_board(ctx)
        return (
            board.table,
            leaderboard_figure(board.table),
            "\n".join(f"- {n}" for n in board.notes),
            board.pairs,
            per_persona,
        )

    def leaderboard_api() -> dict:
        """The leaderboard (best first: rank, model version, strength, 95 % low/high, votes, won,
        lost, ties, both bad), the votes per pair, each persona's leaderboard, and notes."""
        board, per_persona = read_board(ctx)
        return {
            "leaderboard": board.table.to_dict("records"),
            "pairs": board.pairs.to_dict("records"),
            "personas": per_persona.to_dict("records"),
            "notes": board.notes,
        }

    def pick_pair_api(persona: str = "") -> list[str]:
        """The two versions to compare next (eval.pairing's rule) among the pool's, by the votes
        of `persona` (its name as stored with the votes) or of all personas when empty."""
        return list(pick_pair(ctx.store, ctx.pool.versions(), persona or None))

    events = dict(outputs=[table, plot, notes, pairs, personas], api_visibility="private")
    refresh_button.click(refresh, **events)
    gr.api(leaderboard_api, api_name="leaderboard")
    gr.api(shows_errors(pick_pair_api), api_name="pick_pair")
    return dict(fn=refresh, **events)


def pick_versions(ctx: AppContext) -> Callable:
    """Compare's "pick the pair for me": a handler persona key -> updates of the two version
    dropdowns, filled with the pair `eval.pairing` chooses for that persona's votes."""

    @shows_errors
    def pick(persona_key: str) -> tuple[dict, dict]:
        versions = ctx.pool.versions()
        first, second = pick_pair(ctx.store, versions, ctx.persona(persona_key).name)
        return gr.update(choices=versions, value=first), gr.update(choices=versions, value=second)

    return pick

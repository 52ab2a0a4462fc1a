"""`Store`: conversations, label items, the labelling queue, labels, A/B preferences and eval runs
(and, from `store.raters`, the organiser's methods: gold items, repeats, queue order, progress).

A rater's two calls: `next_item` (what to label next, and how far they are) and `label` (save a
verdict; with `and_next=True`, also the next item, in the same write). A 👍/👎 in Chat is `thumb`.

Every method is one transaction (`next_item` first reads, without waiting for the write lock,
and writes only when the rater holds no item); a write is committed (on disk) when the method returns.
Methods take and return plain values and records built from rows outside any ORM session
(nothing loads lazily, nothing is shared between calls), so any thread may call them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

from core.conversation import dialogue
from store import assign, history, quality, sql, votes
from store.db import DEFAULT_DATA_DIR, URL_FIX, StoreError, WriterQueue, create_engine, database_url, mask_url, reason
from store.db import transaction as _transaction
from store.quality import QueueMix
from store.raters import RaterQuality
from store.records import (
    CONVERSATION_SOURCES,
    ITEM_SOURCES,
    WITHDRAW_REASONS,
    Labelled,
    LabelRow,
    NewItem,
    NewPreference,
    Next,
    PreferenceRow,
    Verdict,
    WithdrawReason,
    check,
    check_overlap,
    check_verdict,
    rater_name,
)
from store.schema import (
    EvalRun,
    Item,
    Turn,
    conversations,
    eval_runs,
    label_items,
    labels,
    now,
    repeats,
    skips,
    turns,
)
from store.upgrade import ensure as ensure_schema

log = logging.getLogger(__name__)
T = TypeVar("T")


class Store(RaterQuality):
    """The one way the app, eval and scripts read and write persisted data.

    `Store()` opens `$DATABASE_URL`, else `sqlite:///data/persona_studio.db`, and creates the
    tables in an empty database. An older database is upgraded only with `migrate=True` (the
    app on start, `python -m store.migrate`) and refused otherwise; `found_version` says which
    version it was at (None: this open created it). A database that cannot be reached raises
    `StoreError`.
    """

    def __init__(self, url: str | None = None, *, data_dir: str | Path = DEFAULT_DATA_DIR, migrate: bool = False):
        full_url = database_url(url, data_dir)
        self.url = mask_url(full_url)  # safe to show
        self._full_url = full_url
        self.engine = create_engine(full_url)
        # SQLite has one writer at a time, and a writer that finds the lock taken polls for it
        # (sqlite3's busy handler sleeps 1, 2, 5, ... 100 ms between tries): with 100 raters those
        # sleeps were the p95 of a label round trip. This process's writers queue on a lock
        # instead and go as soon as it is free; other processes (eval.run) still meet the busy
        # timeout. PostgreSQL locks rows, not the database: no lock here.
        self._writers = WriterQueue() if self.engine.dialect.name == "sqlite" else nullcontext()
        # Rater name -> id, once committed: every label call looked it up (two statements).
        self._rater_ids: dict[str, int] = {}
        try:
            with _transaction(self.engine, write=True) as conn:
                self.found_version = ensure_schema(conn, self.url, migrate)
        except sa.exc.DBAPIError as err:
            self.engine.dispose()
            raise StoreError(f"cannot open the database {self.url}: {reason(err, full_url)}", URL_FIX) from None
        except StoreError:
            self.engine.dispose()
            raise

    @classmethod
    def from_env(cls, *, migrate: bool = False) -> Store:
        """The store named by `$DATABASE_URL` (the local SQLite file when unset)."""
        return cls(os.environ.get("DATABASE_URL"), migrate=migrate)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- conversations ----------------------------------------------------------------

    def start_conversation(self, source: str, persona_key: str, persona: dict, model_version: str) -> int:
        check(source, CONVERSATION_SOURCES, "conversation source")
        values = dict(source=source, persona_key=persona_key, persona=_as_dict(persona), model_version=model_version)
        return self._write(lambda c: sql.insert_id(c, conversations, values), "the conversation was NOT saved")

    def add_turn(
        self,
        conversation_id: int,
        role: str,
        content: str,
        model_version: str | None = None,
        persona_name: str | None = None,
        persona: dict | None = None,
        *,
        deflected: bool = False,
    ) -> int:
        """Append a turn; `persona` is the persona the model spoke as (assistant and notice turns);
        `deflected`: the reply is that persona's scope deflection (the model was not asked)."""
        turn = dict(role=role, content=content, model_version=model_version, persona_name=persona_name, persona=persona,
                    deflected=deflected)  # fmt: skip
        return self.add_turns(conversation_id, [turn])[0]

    def add_turns(self, conversation_id: int, turns: list[dict]) -> list[int]:
        """Append several turns (dicts of `add_turn`'s arguments) in one transaction: a user
        message and its reply are saved together or not at all. Returns their ids, in order."""
        rows = [history.turn_values(turn) for turn in turns]

        def write(conn: sa.Connection) -> list[int]:
            # The row lock (PostgreSQL) makes a second writer to this conversation wait, so the
            # two cannot compute the same next index.
            sql.require(conn, conversations, conversation_id, "conversation", lock=True)
            return history.insert_turns(conn, conversation_id, rows)

        roles = " and ".join(row["role"] for row in rows)
        turns_were = "turns were" if len(rows) > 1 else "turn was"
        return self._write(write, f"the {roles} {turns_were} NOT saved in conversation {conversation_id}")

    def withdraw_turns(self, conversation_id: int, turn_ids: list[int], reason: WithdrawReason) -> int:
        """Mark turns of the conversation as taken back by the user (`reason` "undo" or "retry");
        they stay in `conversation`, with `withdrawn` set. Returns how many were not withdrawn yet."""
        check(reason, WITHDRAW_REASONS, "withdraw reason")
        turn_ids = list(turn_ids)

        def write(conn: sa.Connection) -> int:
            sql.require(conn, conversations, conversation_id, "conversation")
            return history.withdraw(conn, conversation_id, turn_ids, reason)

        return self._write(write, f"withdrawing turns {turn_ids} of conversation {conversation_id} was NOT saved")

    def add_exchange(
        self,
        conversation_id: int | None,
        turns: list[dict],
        *,
        start: dict | None = None,
        replacing: list[int] | None = None,
    ) -> tuple[int, list[int]]:
        """A chat message's one write: (conversation id, the turns' ids). Starts the conversation
        when `conversation_id` is None (`start`: `start_conversation`'s arguments), appends `turns`
        (as `add_turns`) and withdraws `replacing` (the exchange a retry replaces) in one
        transaction: the new exchange and the old one's withdrawal are saved together or not at all."""
        rows = [history.turn_values(turn) for turn in turns]
        replacing = list(replacing or [])
        if conversation_id is None:
            if start is None:
                raise StoreError("a new conversation needs `start`", "pass start=dict(source, persona_key, persona, "
                                 "model_version), or the id of a stored conversation")  # fmt: skip
            check(start.get("source"), CONVERSATION_SOURCES, "conversation source")
            missing = sorted({"persona_key", "persona", "model_version"} - set(start))
            if missing:
                raise StoreError(f"`start` lacks {', '.join(missing)}", "pass start_conversation's four arguments")
            values = dict(source=start["source"], persona_key=start["persona_key"], persona=_as_dict(start["persona"]),
                          model_version=start["model_version"])  # fmt: skip

        def write(conn: sa.Connection) -> tuple[int, list[int]]:
            if conversation_id is None:
                opened = sql.insert_id(conn, conversations, values)
            else:  # the row lock: a second writer to this conversation waits (see add_turns)
                opened = sql.require(conn, conversations, conversation_id, "conversation", lock=True).id
            ids = history.insert_turns(conn, opened, rows)
            if replacing:
                history.withdraw(conn, opened, replacing, "retry")
            return opened, ids

        where = "a new conversation" if conversation_id is None else f"conversation {conversation_id}"
        return self._write(write, f"the exchange was NOT saved in {where}")

    def turn(self, turn_id: int) -> Turn:
        return self._read(lambda c: sql.record(c, Turn, turn_id, "turn"), f"turn {turn_id}")

    def conversation(self, conversation_id: int) -> list[Turn]:
        """Every turn of the conversation in order, withdrawn ones included (marked)."""

        def read(conn: sa.Connection) -> list[Turn]:
            sql.require(conn, conversations, conversation_id, "conversation")
            query = sa.select(turns).where(turns.c.conversation_id == conversation_id).order_by(turns.c.index)
            return [Turn(**row._mapping) for row in conn.execute(query)]

        return self._read(read, f"conversation {conversation_id}")

    # -- label items and the queue ----------------------------------------------------

    def add_label_items(self, items: list[NewItem]) -> list[int]:
        """Register answers for labelling; returns their ids. An answer registered before
        (same `NewItem.key`) keeps its id and its labels; a higher `priority` than the stored
        one raises it (a lower one leaves it as it is)."""
        for item in items:
            check(item.source, ITEM_SOURCES, "label item source")
            if not isinstance(item.priority, int) or isinstance(item.priority, bool):
                raise StoreError(f"a label item priority must be an integer, not {item.priority!r}", "pass 0, 1, ...")

        def write(conn: sa.Connection) -> list[int]:
            return [_register(conn, item) for item in items]

        return self._write(write, f"{len(items)} label items were NOT saved", retry=True)

    def item(self, item_id: int) -> Item:
        return self._read(lambda c: sql.record(c, Item, item_id, "label item"), f"label item {item_id}")

    def items(self, item_ids: Iterable[int]) -> dict[int, Item]:
        """The items with these ids, by id, in one read (exports and the scorecard look up every
        labelled item); an id without an item is left out."""
        ids = sorted(set(item_ids))

        def read(conn: sa.Connection) -> dict[int, Item]:
            found = {}
            for start in range(0, len(ids), 10_000):  # under SQLite's limit of bound parameters
                query = sa.select(label_items).where(label_items.c.id.in_(ids[start : start + 10_000]))
                found.update({row.id: Item(**row._mapping) for row in conn.execute(query)})
            return found

        return self._read(read, "the label items")

    def next_item(
        self, rater: str, overlap: int = 1, source: str | None = None, *, mix: QueueMix | None = None
    ) -> Next:
        """What the rater labels next, and how far they are (`Next(item, progress)`: what the Label
        tab shows). The item is the one they hold but have not finished, else (with `mix`) maybe a
        gold item or a repeat (store.quality), else, of the items fewer than `overlap` raters hold,
        the one with the highest boost and priority, the oldest of those (now assigned to them);
        None when nothing is left. Progress: (labelled by the rater, labelled + still open to them)."""
        rater = rater_name(rater)
        check_overlap(overlap)

        def read(conn: sa.Connection) -> Next | None:
            rater_id = self._rater_id(conn, rater, create=False)
            held = assign.pending(conn, rater_id, source)
            return _next(conn, held, rater_id, overlap, source) if held else None

        def write(conn: sa.Connection) -> Next:
            rater_id = self._rater_id(conn, rater, create=True)
            return _next(conn, assign.next_for(conn, rater_id, overlap, source, mix), rater_id, overlap, source)

        # The item the rater holds (after `label(and_next=True)` they do) comes from one read, which
        # does not queue behind other raters' writes; only a rater who holds none needs the write.
        return self._read(read, f"the items held by {rater}") or self._write(
            write, f"no item could be assigned to {rater}", retry=True
        )

    # -- labels -----------------------------------------------------------------------

    def label(
        self,
        item_id: int,
        rater: str,
        verdict: Verdict,
        comment: str = "",
        *,
        and_next: bool = False,
        overlap: int = 1,
        source: str | None = None,
        mix: QueueMix | None = None,
    ) -> Labelled:
        """Record (or change) the rater's verdict on an item; on disk when this returns.
        `and_next` (the Label tab's click): in the same write, hand the rater their next item (as
        `next_item` with `overlap`, `source` and `mix`) and count their progress, in `Labelled.next`:
        one write per click (on SQLite writes go one at a time, and 100 raters' label round trips
        queued on them). The label does not depend on the next item: when none can be assigned
        (a busy queue), the label is committed and `next_error` says why."""
        rater, comment = rater_name(rater), comment or ""
        check_verdict(verdict)
        check_overlap(overlap)

        def write(conn: sa.Connection) -> Labelled:
            row, rater_id = self._label(conn, item_id, rater, verdict, comment)
            if not and_next:
                return Labelled(row)
            try:  # assign's own refusal, before it changed anything: the label still commits
                following = assign.next_for(conn, rater_id, overlap, source, mix)
            except StoreError as err:
                return Labelled(row, next_error=err)
            return Labelled(row, _next(conn, following, rater_id, overlap, source))

        return self._write(write, f"the label for item {item_id} by {rater} was NOT saved", retry=True)

    def _label(self, conn: sa.Connection, item_id: int, rater: str, verdict: str, comment: str) -> tuple[LabelRow, int]:
        item = sql.require(conn, label_items, item_id, "label item", columns=[label_items.c.model_version,
                                                                              label_items.c.source])  # fmt: skip
        rater_id = self._rater_id(conn, rater, create=True)
        t = now()
        if quality.answer_repeat(conn, item_id, rater_id, verdict):  # the item shown again: kept apart
            versions = dict(model_version=item.model_version, source=item.source, created_at=t, updated_at=t)
            return LabelRow(item_id=item_id, rater=rater, verdict=verdict, comment=comment, **versions), rater_id
        pair = dict(item_id=item_id, rater_id=rater_id)
        assign.hold(conn, item_id, rater_id)
        stmt = sql.dialect_insert(conn, labels).values(pair | dict(verdict=verdict, comment=comment, created_at=t,
                                                                   updated_at=t))  # fmt: skip
        update = dict(verdict=verdict, comment=comment, updated_at=t)
        stmt = stmt.on_conflict_do_update(index_elements=["item_id", "rater_id"], set_=update)
        created = conn.execute(stmt.returning(labels.c.created_at)).scalar_one()  # a relabel keeps its creation
        conn.execute(sa.delete(skips).filter_by(**pair))  # a label takes back an earlier skip
        row = LabelRow(item_id=item_id, rater=rater, verdict=verdict, comment=comment, model_version=item.model_version,
                       source=item.source, created_at=created, updated_at=t)  # fmt: skip
        return row, rater_id

    def skip(self, item_id: int, rater: str) -> None:
        """The rater will not be shown this item again; their place on it goes to others."""
        rater = rater_name(rater)

        def write(conn: sa.Connection) -> None:
            sql.require(conn, label_items, item_id, "label item")
            rater_id = self._rater_id(conn, rater, create=True)
            if quality.answer_repeat(conn, item_id, rater_id, None):  # a skipped repeat: answered, no verdict
                return
            pair = dict(item_id=item_id, rater_id=rater_id)
            conn.execute(sql.dialect_insert(conn, skips).values(pair).on_conflict_do_nothing())
            assign.release(conn, item_id, rater_id)

        self._write(write, f"the skip of item {item_id} by {rater} was NOT saved", retry=True)

    def undo_last_label(self, rater: str) -> int | None:
        """Delete the rater's most recently written label (or answer to a repeat); its item is
        first in their queue again. Returns that item's id, or None when the rater has no labels."""
        rater = rater_name(rater)

        def write(conn: sa.Connection) -> int | None:
            rater_id = self._rater_id(conn, rater, create=False)
            repeat = quality.last_answered_repeat(conn, rater_id)
            last = conn.execute(
                sa.select(labels.c.id, labels.c.item_id, labels.c.updated_at)
                .where(labels.c.rater_id == rater_id)
                .order_by(labels.c.updated_at.desc(), labels.c.id.desc())
                .limit(1)
            ).first()
            if repeat is not None and (last is None or repeat.answered_at >= last.updated_at):
                conn.execute(sa.update(repeats).where(repeats.c.id == repeat.id).values(verdict=None, answered_at=None))
                return repeat.item_id
            if last is None:
                return None
            conn.execute(sa.delete(labels).where(labels.c.id == last.id))
            # A fresh assignment id puts the item ahead of what the rater holds (assign.pending).
            assign.release(conn, last.item_id, rater_id)
            assign.hold(conn, last.item_id, rater_id)
            return last.item_id

        # No retry: if the first try committed unseen, a second would undo one label more.
        return self._write(write, f"the last label by {rater} was NOT undone")

    def unlabel(self, item_id: int, rater: str) -> bool:
        """Take back the rater's verdict on the item (a 👍 clicked off in Chat): no label is
        left, and they no longer hold it. False when there was none."""
        rater = rater_name(rater)

        return self._write(
            lambda conn: self._unlabel(conn, item_id, rater),
            f"the label for item {item_id} by {rater} was NOT taken back",
            retry=True,
        )

    def _unlabel(self, conn: sa.Connection, item_id: int, rater: str) -> bool:
        rater_id = self._rater_id(conn, rater, create=False)
        if rater_id is None:
            return False
        removed = conn.execute(sa.delete(labels).filter_by(item_id=item_id, rater_id=rater_id)).rowcount
        assign.release(conn, item_id, rater_id)
        return bool(removed)

    def thumb(self, turn_id: int, rater: str, verdict: Verdict | None, comment: str = "") -> LabelRow | None:
        """A 👍/👎 under the stored reply `turn_id`, in one transaction: its label item is registered
        (first use: the persona, model version and conversation before it, as when it was written)
        and the rater's verdict set, changed, or taken back (`verdict` None: the thumb clicked off).
        The label, or None when none is left."""
        rater, comment = rater_name(rater), comment or ""
        if verdict is not None:
            check_verdict(verdict)

        def write(conn: sa.Connection) -> LabelRow | None:
            item_id = _register(conn, _reply_item(conn, turn_id))
            if verdict is None:
                self._unlabel(conn, item_id, rater)
                return None
            return self._label(conn, item_id, rater, verdict, comment)[0]

        return self._write(write, f"the label on turn {turn_id} by {rater} was NOT saved", retry=True)

    def label_rows(self, model_version: str | None = None) -> list[LabelRow]:
        """Every label (of one model version, if given), oldest first."""
        query = sql.LABEL_QUERY.order_by(labels.c.id)
        if model_version is not None:
            query = query.where(label_items.c.model_version == model_version)
        return self._read(lambda c: [LabelRow(**row._mapping) for row in c.execute(query)], "the labels")

    def model_versions_with_labels(self) -> list[str]:
        query = (
            sa.select(label_items.c.model_version)
            .join(labels, labels.c.item_id == label_items.c.id)
            .distinct()
            .order_by(label_items.c.model_version)
        )
        return self._read(lambda c: list(c.execute(query).scalars()), "the labelled model versions")

    # -- A/B preferences ----------------------------------------------------------------

    def add_preference(self, p: NewPreference) -> int:
        """Record a rater's blind A/B vote; on disk when this returns. Returns its id."""
        rater, row = rater_name(p.rater), votes.values(p)

        def write(conn: sa.Connection) -> int:
            for side in ("a", "b"):
                if row[f"conversation_{side}_id"] is not None:
                    sql.require(conn, conversations, row[f"conversation_{side}_id"], "conversation")
            return votes.insert(conn, row | dict(rater_id=self._rater_id(conn, rater, create=True)))

        # No retry: if the first try committed unseen, a second would record the vote twice.
        return self._write(write, f"the vote of {rater} was NOT saved")

    def preferences(self, versions: tuple[str, str] | None = None) -> list[PreferenceRow]:
        """Every A/B vote (between these two versions, in either order, if given), oldest first."""
        query = votes.query(versions)
        return self._read(lambda c: [PreferenceRow(**row._mapping) for row in c.execute(query)], "the A/B votes")

    # -- eval runs --------------------------------------------------------------------

    def add_eval_run(self, model_version: str, path: str | Path, config: dict, summary: dict) -> int:
        values = dict(model_version=model_version, path=str(path), config=config, summary=summary)
        return self._write(
            lambda c: sql.insert_id(c, eval_runs, values), f"the eval run of {model_version} was NOT saved"
        )

    def latest_eval_run(self, model_version: str) -> EvalRun | None:
        runs = self.eval_runs(model_version)
        return runs[-1] if runs else None

    def eval_runs(self, model_version: str | None = None) -> list[EvalRun]:
        """Eval runs (of one model version, if given), oldest first."""
        query = sa.select(eval_runs).order_by(eval_runs.c.id)
        if model_version is not None:
            query = query.where(eval_runs.c.model_version == model_version)
        return self._read(lambda c: [EvalRun(**row._mapping) for row in c.execute(query)], "the eval runs")

    # -- transactions -----------------------------------------------------------------

    def _rater_id(self, conn: sa.Connection, name: str, create: bool) -> int | None:
        return sql.rater_id(conn, name, create, known=self._rater_ids)

    def _read(self, fn: Callable[[sa.Connection], T], what: str) -> T:
        try:
            with _transaction(self.engine, write=False) as conn:
                return fn(conn)
        except sa.exc.DBAPIError as err:
            raise StoreError(f"could not read {what} from {self.url}: {reason(err, self._full_url)}", URL_FIX) from None

    def _write(self, fn: Callable[[sa.Connection], T], not_saved: str, retry: bool = False) -> T:
        """Run `fn` in one write transaction. `retry` (for idempotent writes): after a lost
        connection or a lock timeout, try once more on a fresh connection."""
        try:
            with self._writers, _transaction(self.engine, write=True) as conn:
                return fn(conn)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as err:
            if retry:
                log.warning("database write failed (%s); retrying once", reason(err, self._full_url))
                return self._write(fn, not_saved)
            raise StoreError(f"{not_saved}: {self.url}: {reason(err, self._full_url)}", URL_FIX) from None
        except sa.exc.DBAPIError as err:  # a constraint violation: retrying would fail again
            raise StoreError(f"{not_saved}: {reason(err, self._full_url)}", "report this as a bug") from None


def _register(conn: sa.Connection, item: NewItem) -> int:
    """The id of `item`, registered now unless an equal one (same `NewItem.key`) was; a higher
    priority than the stored one raises it."""
    values = asdict(item) | {"dedupe_key": item.key}
    stmt = sql.dialect_insert(conn, label_items).values(values)
    raise_priority = stmt.on_conflict_do_update(
        index_elements=["dedupe_key"],
        set_={"priority": stmt.excluded.priority},
        where=stmt.excluded.priority > label_items.c.priority,
    )
    conn.execute(raise_priority)
    return conn.execute(sa.select(label_items.c.id).where(label_items.c.dedupe_key == item.key)).scalar_one()


def _reply_item(conn: sa.Connection, turn_id: int) -> NewItem:
    """The label item of the stored reply `turn_id`: only a reply a model wrote is one."""
    turn = sql.record(conn, Turn, turn_id, "turn")
    if turn.role != "assistant" or turn.model_version is None:
        raise StoreError(
            "only the model's replies can be labelled (greetings and scope deflections come from the persona file)",
            "use the thumbs under a reply the model wrote",
        )
    before = conn.execute(
        sa.select(turns.c.role, turns.c.content)
        .where(turns.c.conversation_id == turn.conversation_id, turns.c.index < turn.index,
               turns.c.withdrawn.is_(None))
        .order_by(turns.c.index)
    )  # fmt: skip
    # The context is what the model was given (`dialogue`: the turns since the last persona switch).
    context = dialogue([{"role": r.role, "content": r.content} for r in before])
    return NewItem(source="chat", persona_name=turn.persona_name, persona=turn.persona or {"name": turn.persona_name},
                   context=context, answer=turn.content,
                   model_version=turn.model_version, conversation_id=turn.conversation_id)  # fmt: skip


def _next(conn: sa.Connection, row: sa.Row | None, rater_id: int | None, overlap: int, source: str | None) -> Next:
    return Next(Item(**row._mapping) if row else None, assign.progress(conn, rater_id, overlap, source))


def _as_dict(persona) -> dict:
    return persona if isinstance(persona, dict) else persona.model_dump()

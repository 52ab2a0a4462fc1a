"""The tables, each declared once: a declarative class is both the table and the record.

`Turn`, `Item` and `EvalRun` are what the store hands back. The store writes and reads with
Core statements on `Turn.__table__` (aliased `turns`, ...) and builds each record from its
row (`Turn(**row._mapping)`), outside any ORM session: a record holds plain values, never
loads anything lazily, and changing one changes nothing in the database.

`SCHEMA_VERSION` is the version these declarations describe; with each change, bump it and add
the Alembic migration that brings the previous version here (store/migrations/versions/,
revision id `f"{SCHEMA_VERSION:04d}"`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, MappedColumn, mapped_column

from store.records import CONVERSATION_SOURCES, ITEM_SOURCES, ROLES, VERDICTS, VOTES, WITHDRAW_REASONS, BlindItem

SCHEMA_VERSION = 7


class UTCDateTime(sa.TypeDecorator):
    """Stored as naive UTC, read back as aware UTC, on SQLite and PostgreSQL alike
    (SQLite keeps no time zone, so `DateTime(timezone=True)` would differ per backend)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None


def now() -> datetime:
    return datetime.now(UTC)


# Named constraints (ck_labels_verdict_allowed, ...), so a later migration can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(MappedAsDataclass, DeclarativeBase):
    """Each subclass is a table in `metadata` and a dataclass whose fields are its columns."""

    metadata = sa.MetaData(naming_convention=NAMING)
    # Nullability follows the annotation: `str` is NOT NULL, `str | None` is nullable.
    type_annotation_map = {str: sa.Text, dict: sa.JSON, list[dict]: sa.JSON, datetime: UTCDateTime}


metadata = Base.metadata

Id = Annotated[int, mapped_column(primary_key=True)]
Created = Annotated[datetime, mapped_column(insert_default=now)]  # set by the INSERT, in UTC


def _fk(target: str, ondelete: str | None = None) -> MappedColumn:
    return mapped_column(sa.ForeignKey(f"{target}.id", ondelete=ondelete), index=True)


def _in(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_allowed")


class SchemaVersion(Base):
    """One row: the version of `SCHEMA_VERSION` the tables are at. Alembic's own table
    (alembic_version) is what `store.upgrade` reads; this row tells code from before Alembic."""

    __tablename__ = "schema_version"
    __table_args__ = (sa.CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    version: Mapped[int]


class Rater(Base):
    __tablename__ = "raters"

    id: Mapped[Id]
    name: Mapped[str] = mapped_column(unique=True)
    created_at: Mapped[Created]


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (_in("source", CONVERSATION_SOURCES),)

    id: Mapped[Id]
    source: Mapped[str]
    persona_key: Mapped[str]
    persona: Mapped[dict]
    model_version: Mapped[str]
    created_at: Mapped[Created]


class Turn(Base):
    """One message of a conversation, as the user saw it; a withdrawn turn stays, marked."""

    __tablename__ = "turns"
    __table_args__ = (
        sa.UniqueConstraint("conversation_id", "index"),
        _in("role", ROLES),
        _in("withdrawn", WITHDRAW_REASONS),
    )

    id: Mapped[Id]
    conversation_id: Mapped[int] = _fk("conversations", ondelete="CASCADE")
    index: Mapped[int]  # 0-based position in the conversation, withdrawn turns included
    role: Mapped[str]
    content: Mapped[str]
    model_version: Mapped[str | None]
    persona_name: Mapped[str | None]
    created_at: Mapped[Created]
    # NULL while the turn is part of the conversation; "undo" or "retry" once the user took it back.
    withdrawn: Mapped[str | None]
    # The persona the model spoke as (assistant and notice turns); SQL NULL, not JSON null, otherwise.
    persona: Mapped[dict | None] = mapped_column(sa.JSON(none_as_null=True))
    # An assistant turn that is the persona's scope deflection (the model was not asked).
    deflected: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class EvalRun(Base):
    __tablename__ = "eval_runs"

    id: Mapped[Id]
    model_version: Mapped[str] = mapped_column(index=True)
    path: Mapped[str]
    config: Mapped[dict]
    summary: Mapped[dict]
    created_at: Mapped[Created]


class Item(Base):
    """An answer in front of raters (`NewItem` is what registers one)."""

    __tablename__ = "label_items"
    __table_args__ = (_in("source", ITEM_SOURCES),)

    id: Mapped[Id]
    source: Mapped[str]
    # An item holds everything a rater sees, so it (and its labels) outlives its origin.
    conversation_id: Mapped[int | None] = _fk("conversations", ondelete="SET NULL")
    eval_run_id: Mapped[int | None] = _fk("eval_runs", ondelete="SET NULL")
    persona_name: Mapped[str]
    persona: Mapped[dict]
    context: Mapped[list[dict]]
    answer: Mapped[str]
    model_version: Mapped[str] = mapped_column(index=True)
    dedupe_key: Mapped[str] = mapped_column(sa.String(64), unique=True)  # NewItem.key
    created_at: Mapped[Created]
    # The queue hands out higher priorities first (then the oldest); NewItem.priority.
    priority: Mapped[int] = mapped_column(insert_default=0, server_default=sa.text("0"))
    # Raters holding the item now (its rows in `assignments`), kept by the store in the same
    # transaction as each assignment change, so the queue reads a column instead of counting
    # every item's holders (at 10k items that count made `next_item` ~20 ms and `progress` ~11 ms).
    # `info["derived"]`: not data of its own (store.backup leaves it out).
    holders: Mapped[int] = mapped_column(insert_default=0, server_default=sa.text("0"), info={"derived": True})
    # The known verdict of a gold item (None: not gold). Gold items stay out of the shared queue;
    # each rater gets them mixed in at the organiser's share (store.quality).
    gold: Mapped[str | None] = mapped_column(default=None)
    # Which items go first, ahead of `priority` (store.quality.QUEUE_ORDER states the rule), set by
    # `Store.order_queue` once per queue refill, not per click. Derived: store.backup leaves it out.
    boost: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"), info={"derived": True})

    def blind(self) -> BlindItem:
        return BlindItem(id=self.id, persona=self.persona, context=self.context, answer=self.answer)


# The order the queue hands items out in, holders included: `next_item` walks this index to
# the first item with a free place and stops there (no per-item lookups, no sort).
sa.Index(
    "ix_label_items_queue",
    Item.__table__.c.boost.desc(),
    Item.__table__.c.priority.desc(),
    Item.__table__.c.id,
    Item.__table__.c.holders,
)


class Assignment(Base):
    """A rater holds an item from `next_item` until they label or skip it; the number of
    holders is what `overlap` limits. The id orders a rater's pending items (newest first)."""

    __tablename__ = "assignments"
    __table_args__ = (sa.UniqueConstraint("item_id", "rater_id"),)

    id: Mapped[Id]
    item_id: Mapped[int] = _fk("label_items")
    rater_id: Mapped[int] = _fk("raters")
    created_at: Mapped[Created]


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (sa.UniqueConstraint("item_id", "rater_id"), _in("verdict", VERDICTS))

    id: Mapped[Id]
    item_id: Mapped[int] = _fk("label_items")
    rater_id: Mapped[int] = _fk("raters")
    verdict: Mapped[str]
    comment: Mapped[str] = mapped_column(insert_default="")
    created_at: Mapped[Created]
    updated_at: Mapped[datetime] = mapped_column(insert_default=now, index=True)


class Skip(Base):
    __tablename__ = "skips"
    __table_args__ = (sa.UniqueConstraint("item_id", "rater_id"),)

    id: Mapped[Id]
    item_id: Mapped[int] = _fk("label_items")
    rater_id: Mapped[int] = _fk("raters")
    created_at: Mapped[Created]


class Repeat(Base):
    """An item shown again to a rater who labelled it (store.quality): their second verdict, kept
    apart from `labels` so a repeat never counts twice in accuracy or exports. Pending while
    `answered_at` is None; answered with no verdict: skipped."""

    __tablename__ = "repeats"
    __table_args__ = (sa.UniqueConstraint("item_id", "rater_id"), _in("verdict", VERDICTS))

    id: Mapped[Id]
    item_id: Mapped[int] = _fk("label_items")
    rater_id: Mapped[int] = _fk("raters")
    shown_at: Mapped[Created]
    answered_at: Mapped[datetime | None] = mapped_column(default=None)
    verdict: Mapped[str | None] = mapped_column(default=None)


class Preference(Base):
    """A blind A/B vote (`NewPreference` records one). Like an item, it holds everything the
    rater saw, so it outlives the Compare tab's conversations it came from."""

    __tablename__ = "preferences"
    __table_args__ = (_in("vote", VOTES),)

    id: Mapped[Id]
    rater_id: Mapped[int] = _fk("raters")
    conversation_a_id: Mapped[int | None] = _fk("conversations", ondelete="SET NULL")
    conversation_b_id: Mapped[int | None] = _fk("conversations", ondelete="SET NULL")
    persona_name: Mapped[str]
    persona: Mapped[dict]
    context: Mapped[list[dict]]
    reply_a: Mapped[str]
    reply_b: Mapped[str]
    version_a: Mapped[str]
    version_b: Mapped[str]
    vote: Mapped[str]
    created_at: Mapped[Created]


# The tables, for Core statements.
schema_version = SchemaVersion.__table__
raters = Rater.__table__
conversations = Conversation.__table__
turns = Turn.__table__
eval_runs = EvalRun.__table__
label_items = Item.__table__
assignments = Assignment.__table__
labels = Label.__table__
skips = Skip.__table__
repeats = Repeat.__table__
preferences = Preference.__table__

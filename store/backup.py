"""Backup of the store to a private Hugging Face dataset repo, for a Space whose disk is wiped
at every restart (`PERSONA_STUDIO_BACKUP_REPO=user/persona-studio-labels`, HF_TOKEN with write
access as a Space secret).

Every table (labels, label items, conversations and their turns, A/B preferences, raters, ...)
is exported as one JSON Lines file, `<table>.jsonl`, a row per line with its columns as keys,
and `huggingface_hub.CommitScheduler` pushes the folder every few minutes from a background
thread (and once more when the app exits). A file is rewritten only when its table changed, so
a push uploads only those. `datasets.load_dataset("json", data_files=...)` reads them back.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa

from store.schema import metadata
from store.store import Store

log = logging.getLogger(__name__)


def _plain(value):
    return value.isoformat() if isinstance(value, datetime | date) else value


def table_lines(conn: sa.Connection, table: sa.Table) -> str:
    """The table as JSON Lines, in primary-key order (the same rows give the same text). Columns
    the schema marks derived (`label_items.holders` counts `assignments`) are left out, so labelling
    does not rewrite (and re-push) the largest file, the items."""
    columns = [c for c in table.columns if not c.info.get("derived")]
    rows = conn.execute(sa.select(*columns).order_by(*table.primary_key.columns)).mappings()
    return "".join(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False) + "\n" for row in rows)


def export_tables(store: Store, out_dir: str | Path) -> dict[str, Path]:
    """Write `<table>.jsonl` for every table of the store into `out_dir`; files whose content is
    unchanged are left untouched (their mtime tells CommitScheduler there is nothing to push).
    Read in one transaction, so the files agree with each other."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with store.engine.connect() as conn, conn.begin():
        texts = {table.name: table_lines(conn, table) for table in metadata.sorted_tables}
    files = {}
    for name, text in texts.items():
        path = files[name] = out / f"{name}.jsonl"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            tmp = path.with_suffix(".jsonl.tmp")  # a push never sees a half-written file
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
    return files


def start_backup(store: Store, repo_id: str, every_minutes: float = 5, folder: str | Path | None = None):
    """Push the store's tables to the private dataset `repo_id` every `every_minutes` from now
    on (created if missing). Needs the network and a token with write access (HF_TOKEN)."""
    from huggingface_hub import CommitScheduler

    class StoreScheduler(CommitScheduler):
        def push_to_hub(self):
            with self.lock:  # the scheduler's own lock: no push reads a file being replaced
                export_tables(store, self.folder_path)
            return super().push_to_hub()

    folder = Path(folder or tempfile.mkdtemp(prefix="persona-studio-backup-"))
    export_tables(store, folder)
    scheduler = StoreScheduler(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=folder,
        every=every_minutes,
        private=True,
        allow_patterns=["*.jsonl"],
    )
    log.warning("backing up the store to the dataset %s every %g minutes", repo_id, every_minutes)
    return scheduler

"""The store's process boundary: the methods the app calls (`StoreAPI`), and the check that
refuses what cannot cross it.

    ctx.store: StoreAPI          # a `Store`, or a `StoreProcess` serving one from a child process
    CheckedStore(store)          # an in-process Store that refuses what the process would (tests)

The app serves its store from a child process (store/process.py): each argument and each result
is pickled. A generator, a lambda or an open file passes a `Store` in the caller's process and
fails there with `TypeError: cannot pickle ...` (the scorecard did, with `store.items(<genexpr>)`).
Both `StoreProcess` and `CheckedStore` name the method and the argument instead
(`refuse_what_cannot_cross`); tests use `CheckedStore` (tests/conftest.py `studio_context`), so
such a call fails in a test, not in front of a researcher.
"""

from __future__ import annotations

import functools
import inspect
import pickle
from pathlib import Path
from typing import Any, Protocol

from store.db import StoreError
from store.quality import QueueMix
from store.records import (
    Labelled,
    LabelRow,
    NewItem,
    NewPreference,
    Next,
    PreferenceRow,
    Progress,
    RepeatRow,
    Verdict,
    WithdrawReason,
)
from store.schema import EvalRun, Item, Turn
from store.store import Store
from store.timing import LabelTime

CROSS_FIX = "pass plain values (lists, dicts, strings, numbers, records): a list, not a generator; data, not a function"


class StoreAPI(Protocol):
    """What ui/, eval/ and the app call on the store, in the app's process or across to its child
    (`Store` has each method with this signature: tests/store/test_store_process.py checks)."""

    url: str  # masked: for messages

    def start_conversation(self, source: str, persona_key: str, persona: dict, model_version: str) -> int: ...
    def add_turn(self, conversation_id: int, role: str, content: str, model_version: str | None = None,
                 persona_name: str | None = None, persona: dict | None = None, *,
                 deflected: bool = False) -> int: ...  # fmt: skip
    def add_turns(self, conversation_id: int, turns: list[dict]) -> list[int]: ...
    def add_exchange(self, conversation_id: int | None, turns: list[dict], *, start: dict | None = None,
                     replacing: list[int] | None = None) -> tuple[int, list[int]]: ...  # fmt: skip
    def withdraw_turns(self, conversation_id: int, turn_ids: list[int], reason: WithdrawReason) -> int: ...
    def turn(self, turn_id: int) -> Turn: ...
    def conversation(self, conversation_id: int) -> list[Turn]: ...
    def add_label_items(self, items: list[NewItem]) -> list[int]: ...
    def item(self, item_id: int) -> Item: ...
    def items(self, item_ids: list[int]) -> dict[int, Item]: ...
    def next_item(self, rater: str, overlap: int = 1, source: str | None = None, *,
                  mix: QueueMix | None = None) -> Next: ...  # fmt: skip
    def label(self, item_id: int, rater: str, verdict: Verdict, comment: str = "", *, and_next: bool = False,
              overlap: int = 1, source: str | None = None, mix: QueueMix | None = None) -> Labelled: ...  # fmt: skip
    def thumb(self, turn_id: int, rater: str, verdict: Verdict | None, comment: str = "") -> LabelRow | None: ...
    def skip(self, item_id: int, rater: str) -> None: ...
    def undo_last_label(self, rater: str) -> int | None: ...
    def label_rows(self, model_version: str | None = None) -> list[LabelRow]: ...
    def model_versions_with_labels(self) -> list[str]: ...
    def add_preference(self, p: NewPreference) -> int: ...
    def preferences(self, versions: tuple[str, str] | None = None) -> list[PreferenceRow]: ...
    def add_eval_run(self, model_version: str, path: str | Path, config: dict, summary: dict) -> int: ...
    def latest_eval_run(self, model_version: str) -> EvalRun | None: ...
    def eval_runs(self, model_version: str | None = None) -> list[EvalRun]: ...
    # store.raters: the organiser's view of the raters' work
    def item_counts(self, overlap: int = 1) -> list[dict]: ...
    def rater_progress(self, overlap: int = 1, source: str | None = None) -> dict[str, Progress]: ...
    def label_times(self) -> list[LabelTime]: ...
    def set_gold(self, item_ids: list[int], verdict: Verdict | None) -> int: ...
    def gold_items(self) -> dict[int, str]: ...
    def repeat_rows(self) -> list[RepeatRow]: ...
    def order_queue(self, open_versions: list[str]) -> int: ...
    def close(self) -> None: ...


# The methods that cross (all but `close`, which ends the boundary itself), in StoreAPI's order.
METHODS = tuple(name for name in StoreAPI.__dict__ if not name.startswith("_") and name != "close")


def refuse_what_cannot_cross(method: str, args: tuple, kwargs: dict) -> None:
    """Raise a StoreError naming the first argument of `store.<method>(...)` that cannot be pickled."""
    try:
        named = inspect.signature(getattr(Store, method)).bind(None, *args, **kwargs).arguments
        named.pop("self")
    except TypeError:  # a call that does not fit the signature: Store will say so itself
        named = {f"#{i}": value for i, value in enumerate(args)} | kwargs
    for name, value in named.items():
        try:
            pickle.dumps(value)
        except (TypeError, AttributeError, pickle.PicklingError) as err:
            raise StoreError(
                f"store.{method}: its argument {name} is a {type(value).__name__}, which cannot cross to "
                f"the store's process ({err})",
                CROSS_FIX,
            ) from None


class Crossing(StoreAPI):
    """`StoreAPI`'s methods, each a `_call(method, args, kwargs)` to be made across the boundary."""

    url: str

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _crossing(name: str):
    @functools.wraps(getattr(Store, name))  # Store's signature and docstring
    def call(self: Crossing, *args, **kwargs):
        return self._call(name, args, kwargs)

    return call


for _name in METHODS:
    setattr(Crossing, _name, _crossing(_name))


class CheckedStore(Crossing):
    """An in-process `Store` whose every call crosses a pickle round trip, as it would to the store's
    process: what cannot cross is refused here too, naming the method and the argument."""

    def __init__(self, store: Store):
        self.store, self.url = store, store.url

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        try:
            args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
        except (TypeError, AttributeError, pickle.PicklingError):
            refuse_what_cannot_cross(method, args, kwargs)
            raise
        result = getattr(self.store, method)(*args, **kwargs)
        try:
            return pickle.loads(pickle.dumps(result))
        except (TypeError, AttributeError, pickle.PicklingError) as err:
            raise StoreError(
                f"store.{method} returned a {type(result).__name__}, which cannot cross back from the store's "
                f"process ({err})",
                "return plain values or records from Store's methods",
            ) from None

    def close(self) -> None:
        self.store.close()

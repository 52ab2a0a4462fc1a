"""Engines by model-version name, loaded on first use and kept while there is room.

The app serves `base` and any trained version side by side (Chat, Compare); loading a model
takes seconds, so engines are cached, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from core.errors import ModelLoadError
from core.versions import BASE, list_versions
from engines.config import EngineConfig
from engines.engine import ChatEngine
from engines.factory import load_engine


class EnginePool:
    def __init__(
        self, cfg: EngineConfig, max_loaded: int = 3, loader: Callable[[EngineConfig], ChatEngine] = load_engine
    ):
        self.cfg = cfg
        self.max_loaded = max_loaded
        self._loader = loader
        self._engines: OrderedDict[str, ChatEngine] = OrderedDict()
        self._lock = threading.Lock()  # two first requests for one version load it once

    def versions(self) -> list[str]:
        """`base` first, then trained versions, newest first (re-read each call: new runs appear)."""
        return [v.name for v in list_versions(self.cfg.runs_dir, self.cfg.model)]

    def newest(self) -> str:
        names = self.versions()
        return names[1] if len(names) > 1 else BASE

    def get(self, version: str = BASE) -> ChatEngine:
        with self._lock:
            if version in self._engines:
                self._engines.move_to_end(version)
                return self._engines[version]
            if version != BASE and version not in self.versions():
                raise ModelLoadError(
                    f"model version {version!r} is not in {self.cfg.runs_dir} (was its folder deleted?)",
                    f"pick one of: {', '.join(self.versions())}",
                )
            model = self.cfg.model if version == BASE else version
            adapter = self.cfg.adapter if version == BASE else None  # a version brings its own
            engine = self._loader(self.cfg.model_copy(update={"model": model, "adapter": adapter}))
            engine.name = version
            self._engines[version] = engine
            while len(self._engines) > self.max_loaded:
                self._engines.popitem(last=False)
            return engine

    def loaded(self, version: str = BASE) -> ChatEngine | None:
        """The version's engine if it is loaded now (None: `get` would load it, seconds)."""
        with self._lock:
            return self._engines.get(version)

    def put(self, version: str, engine: ChatEngine) -> None:
        """Register an already loaded engine (the app's start-up model, tests)."""
        with self._lock:
            self._engines[version] = engine

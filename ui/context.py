"""What every tab needs: engines by version, personas, the store, app settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import PersonaError
from core.persona import Persona, scan_personas
from corpus.hub import DEFAULT_DATASET
from engines.config import GenerationSettings
from engines.pool import EnginePool
from store import QueueMix, StoreAPI


@dataclass
class AppContext:
    pool: EnginePool
    store: StoreAPI  # a Store, or the StoreProcess serving it (app.py serve_store)
    personas_dir: str = "personas"
    # What Organise queues and evaluates from (its "Synthetic-Persona-Chat" choice): a file or hub:OWNER/NAME.
    dataset: str = str(DEFAULT_DATASET)
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    label_overlap: int = 1  # raters per label item, so agreement can be measured
    label_mix: QueueMix | None = None  # shares of gold and repeated items in each rater's queue (store/quality.py)
    min_gold_accuracy: float | None = None  # raters below it on gold items are left out of human accuracy
    auth: bool = False  # raters are the logged-in users (basic auth, PERSONA_STUDIO_AUTH)
    oauth: bool = False  # raters sign in with Hugging Face (a Space with hf_oauth: true)
    # Shown on every tab when labels will not survive a restart (a Space without /data or
    # DATABASE_URL): what happens and how to fix it. None: the store is durable.
    storage_warning: str | None = None

    @property
    def signed_in(self) -> bool:
        """Raters are who they logged in as, not a typed name (ui/raters.py)."""
        return self.auth or self.oauth

    def personas(self) -> tuple[dict[str, Persona], dict[str, PersonaError]]:
        """Re-read on each call: a persona file edited or added while the app runs shows up."""
        return scan_personas(self.personas_dir)

    def persona(self, key: str) -> Persona:
        personas, broken = self.personas()
        if key in personas:
            return personas[key]
        if key in broken:
            raise broken[key]
        raise PersonaError(f"there is no persona {key!r} in {self.personas_dir}", "pick one from the list")

    def persona_choices(self) -> list[tuple[str, str]]:
        """(label, key) for a dropdown; broken files are listed with their reason, unselectable
        in effect (choosing one shows the error)."""
        personas, broken = self.personas()
        choices = [(f"{p.name}: {p.description}" if p.description else p.name, k) for k, p in personas.items()]
        choices += [(f"⚠ {k} (broken: {err.problem})", k) for k, err in broken.items()]
        return choices

"""The chat itself: sessions under a persona, the scope guard, the terminal chat (no UI, no engines here)."""

"""Dialogue datasets: file formats (`corpus.formats`) and the per-turn examples and stable
splits built from them (`corpus.examples`). Training and evaluation both read data here, so
they see the same conversations, prompts and splits.

    python -m corpus.examples ../shared/data/synthetic-persona-chat/Synthetic-Persona-Chat_valid.csv
"""

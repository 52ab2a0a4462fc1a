"""Persona Studio's chat core: personas, sessions and the generation engine (no UI here)."""

import logging

# bitsandbytes (imported by transformers/peft) warns on every CPU start that it could not
# fetch an optional kernel from the Hugging Face Hub; we never fetch from the Hub at run time,
# so the warning is noise for every command. Real bitsandbytes errors still surface.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

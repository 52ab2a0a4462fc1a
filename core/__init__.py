"""What every package shares: errors, the CLI/YAML config, personas, conversations, the runs registry."""

import logging
import warnings

# bitsandbytes (imported by transformers/peft) warns on every CPU start that it could not
# fetch an optional kernel from the Hugging Face Hub; we never fetch from the Hub at run time,
# so the warning is noise for every command. Real bitsandbytes errors still surface.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# peft still calls a transformers property that transformers 5 deprecates; the message is
# printed on every adapter load and there is nothing a user can do about it.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

"""Errors a user can act on: each names the problem and the fix.

Entry points catch `PersonaStudioError` and print `str(err)` without a traceback, so the
message must stand on its own.
"""


class PersonaStudioError(Exception):
    """Base class: `problem` says what is wrong, `fix` says what to do about it."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}" if fix else problem)

    def __reduce__(self):
        # Pickled (the store's and the model's processes send errors back) with problem and fix
        # apart; Exception's default would rebuild it from the one joined message.
        return type(self), (self.problem, self.fix)


class PersonaError(PersonaStudioError):
    """A persona file or persona definition is missing or invalid."""


class DatasetError(PersonaStudioError):
    """A dataset file is missing or is not in a format we read."""


class ModelLoadError(PersonaStudioError):
    """A model or adapter could not be loaded."""


class MessageError(PersonaStudioError):
    """A chat message cannot be sent (empty, too long for the context window)."""


class ConfigError(PersonaStudioError):
    """A config file or CLI flag is invalid."""


class GenerationError(PersonaStudioError):
    """Generation failed at run time (e.g. out of memory)."""


class TrainingError(PersonaStudioError):
    """A training run cannot start or could not finish (no data, no disk, out of memory)."""

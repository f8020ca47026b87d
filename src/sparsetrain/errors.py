"""Errors a user can cause: the CLI prints their one-sentence message and exits with 2."""


class UserError(ValueError):
    """A bad name, value, file or config key; the message names it and what is allowed."""


class ConfigError(UserError):
    """A config field has a value outside what the field allows."""


class DivergedError(UserError):
    """Training produced a non-finite loss: the run stops and is stored as ``diverged``."""


class RunHeldError(UserError):
    """Another process holds the lock of this run (it is training it right now)."""


class SparsetrainWarning(UserWarning):
    """Something a user should change although the run can go on (the CLI prints one line)."""

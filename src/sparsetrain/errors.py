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


def load_error(what: str, path: object, exc: BaseException) -> UserError:
    """The one-sentence error for a file ``torch.load(weights_only=True)`` refused or could not
    read. torch's own message advises retrying with weights_only=False, which would run code
    from the file; that advice is never passed on."""
    import re

    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found or "weights_only" in text or "Weights only load failed" in text:
        held = f"a {found.group(1)} object" if found else "objects other than tensors and plain values"
        return UserError(f"{what} {str(path)!r} is refused: it holds {held}; only files of tensors and "
                         "plain values are loaded (a file from an unknown source may run code when loaded)")
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    return UserError(f"{what} {str(path)!r} cannot be read (damaged or not a PyTorch file): {first}")

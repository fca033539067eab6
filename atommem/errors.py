"""User-facing errors: one clear message naming the thing and the fix, never a deep traceback."""

from __future__ import annotations

import sys
from typing import Callable

from atommem.config import ConfigError


class DataError(ValueError):
    """Bad or missing data file; the message names the file, the record and the field."""


class UserError(RuntimeError):
    """Anything a user can act on (missing model path, missing GPU, bad input); the message says the fix."""


class EngineError(RuntimeError):
    """An engine cannot serve (bad model path, server down, missing GPU); the message says what to fix."""


def user_error_types() -> tuple[type[BaseException], ...]:
    return (UserError, ConfigError, DataError, EngineError, FileNotFoundError)


def run_user_facing(fn: Callable[[], int | None]) -> int:
    """Run a command; user errors print `error: ...` and exit 2."""
    try:
        return int(fn() or 0)
    except user_error_types() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

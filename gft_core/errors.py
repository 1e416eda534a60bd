"""The configuration error every part of gft_core raises for a bad setting (kept apart so that
config.py and methods.py can both raise it without importing each other)."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """An invalid configuration value: names the field (dotted path) and the value."""

    def __init__(self, field: str, value: Any, message: str):
        self.field, self.value, self.message = field, value, message
        super().__init__(f"{field}: {message} (got {value!r})")

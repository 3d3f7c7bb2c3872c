"""Every exception the package raises on bad input. All derive from RLDSError so callers can catch one type."""

from __future__ import annotations


class RLDSError(Exception):
    """Base class of the package's documented errors."""


class DatasetNotFoundError(RLDSError, FileNotFoundError):
    """A dataset, version or split that does not exist; the message lists what does."""


class FeatureKeyError(RLDSError, KeyError):
    """A feature key that is not in the dataset; the message lists the keys there are."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0]) if self.args else ""


class UnknownFeatureTypeError(RLDSError, ValueError):
    """A features.json entry whose type this package cannot decode."""


class CorruptRecordError(RLDSError, ValueError):
    """A record that fails its CRC, is truncated or does not parse; names the file and byte offset."""

    def __init__(self, message: str, path: str = "", offset: int | None = None):
        super().__init__(message)
        self.path = path
        self.offset = offset


class ConfigError(RLDSError, ValueError):
    """A loader configuration that cannot work (bad batch size, unknown key, ...)."""


class StateError(RLDSError, ValueError):
    """A data loader state that is corrupt, missing, or from another configuration."""

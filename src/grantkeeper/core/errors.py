"""The exception tree. Expected refresh failures are values (``Outcome``), never exceptions; these are for
bad input and for callers of the public API.

    GrantkeeperError
    ├── InvalidSettingError      a setting or policy value is out of range
    ├── InvalidInputError        a request, import line or argument is malformed
    └── MissingEncryptionKeyError  tokens are needed but no encryption key is configured
"""


class GrantkeeperError(Exception):
    """Base of every error grantkeeper raises on purpose."""


class InvalidSettingError(GrantkeeperError, ValueError):
    """A setting or policy value is out of range."""


class InvalidInputError(GrantkeeperError, ValueError):
    """A request, import line or argument is malformed."""


class MissingEncryptionKeyError(GrantkeeperError):
    """Tokens cannot be read or written: no ``GRANTKEEPER_ENCRYPTION_KEYS`` is set."""

    def __init__(self) -> None:
        super().__init__(
            "no encryption key: set GRANTKEEPER_ENCRYPTION_KEYS to a line printed by "
            "`grantkeeper keys generate` "
            "(e.g. export GRANTKEEPER_ENCRYPTION_KEYS=$(grantkeeper keys generate))"
        )

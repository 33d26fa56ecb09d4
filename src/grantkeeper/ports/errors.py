"""The errors a ``ConnectionStore`` raises on purpose, all under ``StoreError`` (whose docstring draws
the tree). They are part of the store port's contract rather than of one adapter: every store implementation
raises the same classes for the same conditions, so the service layer, the CLI and the API catch and map them
without knowing which database they talk to.
"""

from __future__ import annotations

from collections.abc import Sequence

from grantkeeper.core.errors import GrantkeeperError


class StoreError(GrantkeeperError):
    """Base of the errors a ``ConnectionStore`` raises on purpose; every implementation raises the same.

    StoreError
    ├── UnknownProviderError     an import line or request names a provider the tenant does not have
    ├── UnknownConnectionError   connection ids that do not exist in the tenant
    ├── UnknownWorkflowError     a workflow id that does not exist in the tenant
    ├── DuplicateProviderError   the tenant already has a provider of that name
    ├── ProviderInUseError       a provider to remove still has connections and the caller did not say so
    ├── DuplicateWorkflowError   the tenant already has a workflow of that name
    ├── UnknownDestinationError  a Slack, Discord or webhook destination id the tenant does not have
    ├── TenantKeyExistsError     the tenant already has an API key and the caller did not ask to replace it
    ├── UnreadableSecretError    a stored token no configured key opens (a key removed, a value copied)
    ├── StoreUnavailableError    the database did not answer (down, restarting, unreachable): try again
    └── SchemaOutdatedError      the database schema is not the one this code expects: run migrate
    """


class StoreUnavailableError(StoreError):
    """The database could not be reached or dropped the connection; nothing of the call was done, and the
    same call may succeed later (the refresh path holds its answers in memory meanwhile)."""


class UnreadableSecretError(StoreError):
    """A stored secret failed to decrypt: its key id is not configured, or the value was tampered with or
    copied from another row or column. The message names where it lives, never the value."""


class UnknownProviderError(StoreError, LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown provider {name!r}")
        self.name = name


class ProviderInUseError(StoreError):
    """Removing the provider would remove its connections too, and the caller did not ask for that."""

    def __init__(self, name: str, connections: int) -> None:
        super().__init__(
            f"provider {name!r} has {connections} connection(s); removing it removes them and their tokens"
        )
        self.name = name
        self.connections = connections


class UnknownConnectionError(StoreError, LookupError):
    def __init__(self, connection_ids: Sequence[str]) -> None:
        shown = ", ".join(connection_ids[:10]) + (", ..." if len(connection_ids) > 10 else "")
        super().__init__(f"unknown connection id(s): {shown}")
        self.connection_ids = tuple(connection_ids)


class AccountMismatchError(StoreError):
    """A connect flow's grant belongs to another provider account than the connection's: nothing stored."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} belongs to another provider account")
        self.connection_id = connection_id


class UnknownWorkflowError(StoreError, LookupError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"unknown workflow id {workflow_id!r}")
        self.workflow_id = workflow_id


class UnknownDestinationError(StoreError, LookupError):
    def __init__(self, destination_id: str) -> None:
        super().__init__(f"unknown destination id {destination_id!r}")
        self.destination_id = destination_id


class DuplicateProviderError(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"provider {name!r} already exists")
        self.name = name


class DuplicateWorkflowError(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"workflow {name!r} already exists")
        self.name = name


class TenantKeyExistsError(StoreError):
    """Refusing to overwrite a key silently: every client using the old key would be locked out at once."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"tenant {name!r} already has an API key; rotate it with `grantkeeper tenants rotate-key {name}`"
        )
        self.name = name


class SchemaOutdatedError(StoreError):
    """Raised instead of silently migrating a database that already holds data; migrations are explicit."""

"""Translation between database rows and the domain's values, and the encryption binding of secret columns.

Kept apart from the queries so every query returns the same shapes and there is one place that knows which
columns hold ciphertext and what associated data binds them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Row

from grantkeeper.adapters.crypto import DecryptionError, Keyring
from grantkeeper.core.errors import MissingEncryptionKeyError
from grantkeeper.core.model import (
    ConnectionState,
    ConnectionStatus,
    DisconnectReason,
    ErrorInfo,
    NotificationType,
    OutcomeClass,
)
from grantkeeper.ports import (
    AttemptRecord,
    AuthMethod,
    ConnectionRecord,
    NotificationRecord,
    ProviderConfig,
    TenantRecord,
    UnreadableSecretError,
)


class FieldCipher:
    """Encrypts one column of one row: the associated data ``{table}:{row_id}:{column}`` pins the ciphertext
    to that cell, so copying it to another row or column makes it undecryptable (DESIGN section 3).

    Without a keyring, everything that never touches a secret still works; the first seal or open raises
    ``MissingEncryptionKeyError``, which tells the user how to make a key."""

    def __init__(self, keyring: Keyring | None) -> None:
        self._keyring = keyring

    def _require(self) -> Keyring:
        if self._keyring is None:
            raise MissingEncryptionKeyError()
        return self._keyring

    @property
    def kids(self) -> tuple[str, ...]:
        """The configured key ids, the one that seals first."""
        return self._require().kids

    def seal(self, table: str, row_id: str, column: str, plaintext: str) -> str:
        return self._require().encrypt(plaintext, aad=f"{table}:{row_id}:{column}")

    def open(self, table: str, row_id: str, column: str, stored: str) -> str:
        return self._require().decrypt(stored, aad=f"{table}:{row_id}:{column}")

    def open_optional(self, table: str, row_id: str, column: str, stored: str | None) -> str | None:
        return None if stored is None else self.open(table, row_id, column, stored)


class SealedSecret:
    """One stored cell's ciphertext and where it lives, opened by ``reveal`` (the port's ``Secret``).

    Holds no plaintext: every ``reveal`` decrypts again (an attempt reads its refresh token once or twice).
    A value no key opens raises the port's ``UnreadableSecretError``, naming the cell, never the value."""

    __slots__ = ("_cipher", "_column", "_row_id", "_stored", "_table")

    def __init__(self, cipher: FieldCipher, table: str, row_id: str, column: str, stored: str) -> None:
        self._cipher, self._table, self._row_id, self._column = cipher, table, row_id, column
        self._stored = stored

    def __repr__(self) -> str:
        return f"SealedSecret({self._table}:{self._row_id}:{self._column})"

    def reveal(self) -> str:
        try:
            return self._cipher.open(self._table, self._row_id, self._column, self._stored)
        except DecryptionError as exc:
            raise UnreadableSecretError(
                f"cannot decrypt {self._table}.{self._column} of {self._row_id}: {exc}"
            ) from None


def state_from_row(row: Row[Any]) -> ConnectionState:
    error = None
    if row.last_error_code is not None:
        error = ErrorInfo(row.last_error_code, row.last_error_description or "")
    return ConnectionState(
        status=ConnectionStatus(row.status),
        consecutive_failures=row.consecutive_failures,
        consecutive_transient_failures=row.consecutive_transient_failures,
        last_refreshed_at=row.last_refreshed_at,
        last_failure_at=row.last_failure_at,
        failing_since=row.failing_since,
        last_error=error,
        disconnect_reason=None if row.disconnect_reason is None else DisconnectReason(row.disconnect_reason),
        expires_at=row.expires_at,
        next_attempt_at=row.next_attempt_at,
        warning_sent=row.warning_sent,
        rate_limit_notice_sent=row.rate_limit_notice_sent,
        in_flight_since=row.in_flight_since,
    )


def state_values(state: ConnectionState) -> dict[str, Any]:
    """The connection columns a ``ConnectionState`` owns, ready for an INSERT or UPDATE."""
    return {
        "status": state.status.value,
        "consecutive_failures": state.consecutive_failures,
        "consecutive_transient_failures": state.consecutive_transient_failures,
        "last_refreshed_at": state.last_refreshed_at,
        "last_failure_at": state.last_failure_at,
        "failing_since": state.failing_since,
        "last_error_code": None if state.last_error is None else state.last_error.code,
        "last_error_description": None if state.last_error is None else state.last_error.description,
        "disconnect_reason": None if state.disconnect_reason is None else state.disconnect_reason.value,
        "expires_at": state.expires_at,
        "next_attempt_at": state.next_attempt_at,
        "warning_sent": state.warning_sent,
        "rate_limit_notice_sent": state.rate_limit_notice_sent,
        "in_flight_since": state.in_flight_since,
    }


def record_from_row(row: Row[Any]) -> ConnectionRecord:
    """A listing row (connection columns plus ``provider_name``); token columns are never selected for it."""
    return ConnectionRecord(
        connection_id=row.id,
        tenant_id=row.tenant_id,
        provider=row.provider_name,
        user_id=row.user_id,
        email=row.email,
        state=state_from_row(row),
        created_at=row.created_at,
        updated_at=row.updated_at,
        account_id=row.account_id,
    )


def tenant_from_row(row: Row[Any]) -> TenantRecord:
    return TenantRecord(
        tenant_id=row.id, name=row.name, has_api_key=row.api_key_hash is not None, created_at=row.created_at
    )


def provider_from_row(row: Row[Any], cipher: FieldCipher) -> ProviderConfig:
    return ProviderConfig(
        provider_id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        token_url=row.token_url,
        client_id=row.client_id,
        client_secret=cipher.open("providers", row.id, "client_secret", row.client_secret_enc),
        auth_method=AuthMethod(row.auth_method),
        default_expires_in=row.default_expires_in,
        authorize_url=row.authorize_url,
        revocation_url=row.revocation_url,
        introspection_url=row.introspection_url,
        scopes=row.scopes,
        flagged_at=row.flagged_at,
        flag_reason=row.flag_reason,
        max_concurrency=row.max_concurrency,
        rate_limit_per_second=row.rate_limit_per_second,
        authorize_params=dict(row.authorize_params) if row.authorize_params else None,
        account_field=row.account_field,
        issuer=row.issuer,
    )


def notification_from_row(row: Row[Any]) -> NotificationRecord:
    return NotificationRecord(
        notification_id=row.id,
        tenant_id=row.tenant_id,
        connection_id=row.connection_id,
        user_id=row.user_id,
        type=NotificationType(row.type),
        title=row.title,
        message=row.message,
        is_read=row.is_read,
        created_at=row.created_at,
        metadata=dict(row._mapping["metadata"]),
    )


def attempt_from_row(row: Row[Any]) -> AttemptRecord:
    return AttemptRecord(
        connection_id=row.connection_id,
        attempted_at=row.attempted_at,
        outcome=OutcomeClass(row.outcome),
        http_status=row.http_status,
        error_code=row.error_code,
        duration=timedelta(milliseconds=row.duration_ms),
    )

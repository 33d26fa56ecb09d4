"""Key rotation at rest: which key seals each stored secret, and re-sealing them under the first key.

A new key put first in ``GRANTKEEPER_ENCRYPTION_KEYS`` seals everything written from then on, but values that
are never rewritten keep their old key for good: a refresh token of a provider that does not rotate, a
provider's client secret, a webhook's URL and signing secret. So an old key could never be removed. ``usage``
counts the stored values under each key id (by prefix, in the database); ``reseal`` rewrites those under any
other key with the first one, in batches, so the count for the old key reaches zero and it can go.

Each rewrite is a compare-and-set on the old ciphertext (``WHERE id = :id AND col = :old``): a worker that
stored new tokens for that row meanwhile wins, and its value is under the first key already. Nothing here
touches ``version`` or a lease, so an attempt in flight is not fenced off by a rotation; the ciphertext it
holds stays readable as long as its key is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Column, Connection, Engine, Table, and_, bindparam, func, select, update

from grantkeeper.adapters.crypto import FORMAT_PREFIX, DecryptionError
from grantkeeper.adapters.db.engine import read_transaction, write_transaction
from grantkeeper.adapters.db.rows import FieldCipher
from grantkeeper.adapters.db.tables import authorization_requests, connections, destinations, providers


@dataclass(frozen=True)
class SealedColumn:
    """One column of sealed values and the associated data its cells are sealed with
    (``{table}:{row key}:{name}``, see ``rows.FieldCipher``)."""

    table: Table
    key: str
    column: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.table.name}.{self.column}"

    def stored(self) -> Column[str]:
        return self.table.c[self.column]

    def row_key(self) -> Column[str]:
        return self.table.c[self.key]


#: Every column holding ``Keyring`` output (``tables`` names them ``*_enc``; a test checks none is missing).
SEALED_COLUMNS = (
    SealedColumn(connections, "id", "access_token_enc", "access_token"),
    SealedColumn(connections, "id", "refresh_token_enc", "refresh_token"),
    SealedColumn(providers, "id", "client_secret_enc", "client_secret"),
    SealedColumn(destinations, "id", "url_enc", "url"),
    SealedColumn(destinations, "id", "secret_enc", "secret"),
    SealedColumn(authorization_requests, "state_hash", "code_verifier_enc", "code_verifier"),
)

#: The count of values under none of the configured keys, in ``usage``.
OTHER = "(not configured)"


def _prefix(kid: str) -> str:
    return f"{FORMAT_PREFIX}:{kid}:"


def usage(engine: Engine, kids: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Per sealed column, how many stored values each configured key id seals, and how many none does."""
    counts: dict[str, dict[str, int]] = {}
    with read_transaction(engine) as connection:
        for sealed in SEALED_COLUMNS:
            stored = sealed.stored()
            under = [
                func.count().filter(stored.startswith(_prefix(kid), autoescape=True)).label(f"k{i}")
                for i, kid in enumerate(kids)
            ]
            row = connection.execute(select(func.count(stored), *under)).one()
            per_kid = dict(zip(kids, (int(value) for value in row[1:]), strict=True))
            counts[sealed.label] = per_kid | {OTHER: int(row[0]) - sum(per_kid.values())}
    return counts


@dataclass
class ResealReport:
    """Per sealed column: values rewritten under the first key, and values no configured key opens (left as
    they are; their ids are logged by the caller)."""

    resealed: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, list[str]] = field(default_factory=dict)


def reseal(
    engine: Engine,
    cipher: FieldCipher,
    primary_kid: str,
    *,
    batch_size: int = 500,
    on_batch: Callable[[str, int], None] | None = None,
) -> ResealReport:
    """Rewrite every stored value not under ``primary_kid`` under it, ``batch_size`` rows per transaction,
    walking each column in row-key order (so each row is visited once, and a short transaction at a time
    holds the write lock)."""
    report = ResealReport()
    for sealed in SEALED_COLUMNS:
        resealed, unreadable = 0, []
        after: str | None = None
        while True:
            with write_transaction(engine) as connection:
                rows = _batch(connection, sealed, primary_kid, after, batch_size)
                swaps: list[dict[str, str]] = []
                for row_key, value in rows:
                    try:
                        plaintext = cipher.open(sealed.table.name, row_key, sealed.name, value)
                    except DecryptionError:
                        unreadable.append(row_key)
                        continue
                    fresh = cipher.seal(sealed.table.name, row_key, sealed.name, plaintext)
                    swaps.append({"row_key": row_key, "old": value, "new": fresh})
                resealed += _swap(connection, sealed, swaps)
            if on_batch is not None and rows:
                on_batch(sealed.label, len(rows))
            if len(rows) < batch_size:
                break
            after = rows[-1][0]
        report.resealed[sealed.label] = resealed
        report.unreadable[sealed.label] = unreadable
    return report


def _batch(
    connection: Connection, sealed: SealedColumn, primary_kid: str, after: str | None, limit: int
) -> list[tuple[str, str]]:
    stored, key = sealed.stored(), sealed.row_key()
    conditions = [stored.is_not(None), ~stored.startswith(_prefix(primary_kid), autoescape=True)]
    if after is not None:
        conditions.append(key > after)
    query = select(key, stored).where(and_(*conditions)).order_by(key).limit(limit)
    return [(str(row[0]), str(row[1])) for row in connection.execute(query)]


def _swap(connection: Connection, sealed: SealedColumn, swaps: list[dict[str, str]]) -> int:
    """Compare-and-set of a batch, one executemany: a row changed since it was read keeps its value (already
    current) and is not counted. Returns how many rows took their new value."""
    if not swaps:
        return 0
    stored, key = sealed.stored(), sealed.row_key()
    statement = (
        update(sealed.table)
        .where(key == bindparam("row_key"), stored == bindparam("old"))
        .values({sealed.column: bindparam("new")})
    )
    return int(connection.execute(statement, swaps).rowcount)

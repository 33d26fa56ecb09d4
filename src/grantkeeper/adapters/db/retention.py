"""Pruning ``refresh_attempts``: every refresh adds a row and nothing else ever removes one.

At a million connections with one-hour tokens that is 24 to 30 million rows a day; kept forever they fill the
disk and slow every write to the table's indexes. Nothing reads more than a connection's recent history
(``queries.attempts_for``, newest first), so old rows can go.

Why by id and not by ``attempted_at``: the table has no index on ``attempted_at`` alone, and adding one
would make every refresh pay for a second index to speed up a job that runs once an hour. Ids grow with
insertion time, so the lowest ids are the oldest rows: a batch is the next ``batch_size`` rows in primary
key order (an index range read, never a scan or a sort), of which the rows older than the cutoff are
deleted. The run is over when a batch deletes nothing (it holds only rows not older than the cutoff) or
reaches the end of the table. ``attempted_at`` is the inserting worker's clock, so rows out of id order are
expected: one stamped later than its neighbours (a clock running ahead) stays while the old rows around it
go, and costs each later batch one row of its size; one stamped earlier (a clock running behind) may stay a
little past the retention if a batch of only newer rows ends the run first.

Why small batches, each its own transaction: one ``DELETE`` of millions of rows would hold SQLite's write
lock (every refresh waits) or PostgreSQL's row locks and WAL for minutes. On PostgreSQL the batch is
locked with ``FOR UPDATE SKIP LOCKED``: workers pruning at once take different rows and never wait for each
other or for a connection being deleted (whose attempts cascade), so they cannot deadlock; SQLite runs
write transactions one at a time anyway.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Connection, any_, bindparam, delete, exists, select, true
from sqlalchemy.dialects.postgresql import ARRAY

from grantkeeper.adapters.db.tables import notifications, outbox, refresh_attempts, tenants

__all__ = ["prune_finished_outbox", "prune_notifications", "prune_refresh_attempts"]

_a = refresh_attempts.c
_IS_OLD = _a.attempted_at < bindparam("before")
# the comparison runs in the database: cheaper than turning thousands of timestamps into datetimes
_BATCH = (
    select(_a.id, _IS_OLD.label("is_old"))
    .order_by(_a.id)
    .limit(bindparam("batch_size"))
    .with_for_update(skip_locked=True)  # PostgreSQL only (SQLite has no row locks and renders nothing)
)
# PostgreSQL: exactly the rows this transaction locked, as one array parameter however long the batch
_DELETE_LOCKED = delete(refresh_attempts).where(_a.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
# SQLite: the write transaction holds the only write lock, so the batch's id range holds the batch's rows and
# nothing else; one range delete on the primary key instead of thousands of bound ids
_DELETE_RANGE = delete(refresh_attempts).where(
    _a.id >= bindparam("first_id"), _a.id <= bindparam("last_id"), _IS_OLD
)


def prune_refresh_attempts(connection: Connection, before: datetime, batch_size: int) -> tuple[int, bool]:
    """Delete the rows older than ``before`` among the ``batch_size`` lowest ids; return how many went and
    whether the prune is done (nothing old in the batch, or the batch reached the end of the table; on
    PostgreSQL rows another pruner has locked are skipped, so a short batch may also mean it has them)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    batch = connection.execute(_BATCH, {"before": before, "batch_size": batch_size}).all()
    old = [row.id for row in batch if row.is_old]
    if not old:
        return 0, True
    is_done = len(batch) < batch_size
    if connection.dialect.name == "postgresql":
        return connection.execute(_DELETE_LOCKED, {"ids": old}).rowcount, is_done
    parameters = {"first_id": batch[0].id, "last_id": batch[-1].id, "before": before}
    return connection.execute(_DELETE_RANGE, parameters).rowcount, is_done


# --- finished deliveries ----------------------------------------------------------------------------------

_o = outbox.c
#: Delivered and failed rows whose last attempt was scheduled before the cutoff; ``ix_outbox_due``
#: (status, next_attempt_at) serves it as two index ranges. A finished row's ``next_attempt_at`` is when its
#: last attempt was due, so this is "finished before the cutoff" within one retry delay.
_FINISHED = (
    select(_o.id)
    .where(_o.status.in_(("delivered", "failed")), _o.next_attempt_at < bindparam("before"))
    .limit(bindparam("batch_size"))
    .with_for_update(skip_locked=True)
)


def prune_finished_outbox(connection: Connection, before: datetime, batch_size: int) -> tuple[int, bool]:
    """Delete up to ``batch_size`` finished outbox rows (delivered or given up) older than ``before``, with
    their delivery attempts (``ON DELETE CASCADE``); pending rows are never touched. Returns how many rows
    went and whether none are left."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ids = list(connection.scalars(_FINISHED, {"before": before, "batch_size": batch_size}))
    if not ids:
        return 0, True
    deleted = connection.execute(delete(outbox).where(_o.id.in_(ids))).rowcount
    return int(deleted), len(ids) < batch_size


# --- in-app notifications ---------------------------------------------------------------------------------

_n = notifications.c
#: A tenant's notifications created before the cutoff, oldest first, read through
#: ``ix_notifications_tenant_created`` (there is no index on ``created_at`` alone, and one would only serve
#: this hourly job). One still waiting for a delivery (an email, a chat message, a webhook, a digest) stays:
#: deleting it would cascade to that outbox row and the message would never go.
_OLD_NOTIFICATIONS = (
    select(_n.id)
    .where(
        _n.tenant_id == bindparam("tenant_id"),
        _n.created_at < bindparam("before"),
        # ``IS TRUE`` keeps ``ix_outbox_due`` (status first) out: without statistics SQLite chose it, reading
        # every pending row for each notification, where ``ix_outbox_notification_id`` reads its own few
        ~exists().where(_o.notification_id == _n.id, (_o.status == "pending").is_(true())),
    )
    .order_by(_n.created_at)
    .limit(bindparam("batch_size"))
    .with_for_update(skip_locked=True)
)


def prune_notifications(connection: Connection, before: datetime, batch_size: int) -> tuple[int, bool]:
    """Delete up to ``batch_size`` in-app notifications created before ``before``, tenant by tenant, with
    their finished outbox rows and those rows' delivery attempts (``ON DELETE CASCADE``). Returns how many
    went and whether none are left.

    After a one-hour outage every connection gets a rate-limit notice and a recovery notice, so at ten
    million connections one outage adds twenty million rows (``grantkeeper simulate``): kept forever, they
    outgrow the connections themselves."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ids: list[str] = []
    for tenant_id in connection.scalars(select(tenants.c.id).order_by(tenants.c.id)):
        wanted = batch_size - len(ids)
        parameters = {"tenant_id": tenant_id, "before": before, "batch_size": wanted}
        ids.extend(connection.scalars(_OLD_NOTIFICATIONS, parameters))
        if len(ids) >= batch_size:
            break
    if not ids:
        return 0, True
    deleted = connection.execute(delete(notifications).where(_n.id.in_(ids))).rowcount
    return int(deleted), len(ids) < batch_size

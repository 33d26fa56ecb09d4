"""Committing what one attempt (or a reconnect) changed: state, tokens, attempt log, notifications with their
outbox rows, and workflow and provider effects, all in the caller's one transaction (DESIGN section 3).

The connection UPDATE comes first and is fenced on ``version`` and ``lease_owner``: if another worker took
the row after our lease ran out, the UPDATE matches nothing and the caller writes nothing else. A started
attempt also passes the fence while the row's ``in_flight_since`` is still its own start: then no other
worker has sent a request with the refresh token since (a start overwrites it, a release restores it), so the
answer is the newest there is, and storing it beats losing a rotated token (ADR 11). The rotated
refresh token is therefore durable exactly when the attempt is recorded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Update, and_, bindparam, exists, or_, select, update

from grantkeeper.adapters.db import destinations as destination_rows
from grantkeeper.adapters.db import hotpath
from grantkeeper.adapters.db.fanout import DEFAULT_DIGEST_HOUR, Fanout, NotificationFanout
from grantkeeper.adapters.db.rows import FieldCipher, state_values
from grantkeeper.adapters.db.tables import (
    connections,
    new_id,
    notifications,
    outbox,
    providers,
    refresh_attempts,
    workflow_connections,
    workflows,
)
from grantkeeper.core.model import (
    ConnectionStatus,
    DisconnectReason,
    Effect,
    FlagProvider,
    Notify,
    OutcomeClass,
    PauseWorkflows,
    ResumeWorkflows,
    RetryProviderNow,
    TokenSet,
    Transition,
)
from grantkeeper.core.routing import Destination, EventType
from grantkeeper.ports import (
    AccountMismatchError,
    AttemptCommit,
    NotificationContent,
    UserPreferences,
    WorkflowStatus,
)

_c = connections.c
_w = workflows.c
# Pauses the store lifts by itself; any other paused_reason (a user's own pause) stays until the user acts.
_CONNECTION_PAUSE_REASONS = tuple(reason.value for reason in DisconnectReason)
_INSERT_ATTEMPT = refresh_attempts.insert()
_INSERT_NOTIFICATION = notifications.insert()
_INSERT_OUTBOX = outbox.insert()


def commit_attempts(
    connection: Connection,
    cipher: FieldCipher,
    batch: Sequence[AttemptCommit],
    *,
    digest_hour: int = DEFAULT_DIGEST_HOUR,
) -> list[bool]:
    """Commit many attempts in the caller's transaction; one answer per attempt, in order.

    The ones without a resume or a provider flag (nearly every success and transient failure, the recoveries
    and notices after an outage, and disconnections) go as one executemany UPDATE per column set plus one
    executemany INSERT of their attempt rows, which on PostgreSQL is one pipelined round trip instead of two
    per attempt; their notifications, and all their outbox rows, as one INSERT each, with the users'
    preferences read in one query, and their workflow pauses one commit after another. The UPDATEs are
    fenced like single commits; if the total of rows changed falls short (a lease was lost), that group is
    rolled back to its savepoint and committed row by row, so each answer is exact.
    """
    answers: dict[int, bool] = {}
    grouped: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
    shared = BatchShared()
    for index, commit in enumerate(batch):
        if _is_groupable(commit):
            parameters = _fenced_parameters(cipher, commit)
            grouped.setdefault(_state_columns(parameters), []).append((index, parameters))
        else:
            answers[index] = _commit_one(connection, cipher, commit, digest_hour, shared)
    hot = hotpath.for_connection(connection)
    for columns, group in grouped.items():
        rows = [_driver_values(hot, parameters) for _, parameters in group]
        hot.savepoint(connection)
        if hot.update(connection, columns, rows) != len(rows):
            hot.rollback_to(connection)
            for index, _ in group:
                answers[index] = _commit_one(connection, cipher, batch[index], digest_hour, shared)
            continue
        hot.release(connection)
        hot.insert_attempts(
            connection, [_driver_values(hot, _attempt_row(batch[index])) for index, _ in group]
        )
        _notify_and_apply(connection, [batch[index] for index, _ in group], digest_hour, shared)
        answers.update((index, True) for index, _ in group)
    shared.wake(connection)
    return [answers[index] for index in range(len(batch))]


def _is_groupable(commit: AttemptCommit) -> bool:
    """Committed in a group: notices, wakes and pauses only (``_notify_and_apply``). A resume and a provider
    flag to set or clear go one by one: a resume reads other connections' status, which a group's UPDATEs
    would already have changed, and both are rare."""
    flagged = commit.outcome.klass is OutcomeClass.SUCCESS and commit.claim.provider.flagged_at is not None
    return not flagged and all(isinstance(effect, _GROUPABLE) for effect in commit.transition.effects)


_GROUPABLE = (Notify, RetryProviderNow, PauseWorkflows)


def _notify_and_apply(
    connection: Connection, group: list[AttemptCommit], digest_hour: int, shared: BatchShared
) -> None:
    """The notifications and effects of a group whose state is written: one INSERT for the notifications,
    then each commit's pauses in batch order (as ``_commit_one`` would), then one INSERT for all their
    outbox rows; wakes go to ``shared``."""
    acting = [commit for commit in group if commit.notifications or commit.transition.effects]
    if not acting:
        return
    if any(commit.notifications for commit in acting):
        _read_preferences(connection, acting, shared)
    rows: list[dict[str, Any]] = []
    fanouts: list[tuple[AttemptCommit, Fanout]] = []
    for commit in acting:
        claim = commit.claim
        at = commit.attempt.attempted_at + commit.attempt.duration
        fanout = Fanout(
            connection,
            claim.tenant_id,
            at,
            digest_hour,
            known=shared.destinations,
            preferences=shared.preferences,
        )
        rows.extend(notification_rows(_recipient(commit), commit.notifications, fanout))
        fanouts.append((commit, fanout))
    if rows:
        connection.execute(_INSERT_NOTIFICATION, rows)  # before the outbox rows that reference them
    paused = pause_linked(connection, [pause for commit in acting for pause in _pauses(commit)])
    for commit, fanout in fanouts:
        claim = commit.claim
        provider = (claim.provider.provider_id, claim.provider.name)
        apply_effects(
            connection,
            commit.transition.effects,
            claim.connection_id,
            provider,
            fanout,
            shared=shared,
            paused=paused,
        )
    outbox_rows = [row for _, fanout in fanouts for row in fanout.take_rows()]
    if outbox_rows:
        connection.execute(_INSERT_OUTBOX, outbox_rows)


def _pauses(commit: AttemptCommit) -> list[tuple[str, DisconnectReason, datetime]]:
    """The workflow pauses a commit asks for, as ``pause_linked`` takes them."""
    at = commit.attempt.attempted_at + commit.attempt.duration
    return [
        (commit.claim.connection_id, effect.reason, at)
        for effect in commit.transition.effects
        if isinstance(effect, PauseWorkflows)
    ]


def _read_preferences(connection: Connection, noticed: list[AttemptCommit], shared: BatchShared) -> None:
    """The preferences of every user the group notifies that the batch has not read yet, a query a tenant."""
    wanted: dict[str, set[str]] = {}
    for commit in noticed:
        claim = commit.claim
        if (
            commit.notifications
            and claim.user_id is not None
            and (claim.tenant_id, claim.user_id) not in shared.preferences
        ):
            wanted.setdefault(claim.tenant_id, set()).add(claim.user_id)
    for tenant_id, user_ids in wanted.items():
        for user_id, preferences in destination_rows.preferences_of(connection, tenant_id, user_ids).items():
            shared.preferences[tenant_id, user_id] = preferences


@dataclass
class BatchShared:
    """What the attempts committed in one transaction share, so that each does not pay for it again.

    After an outage nearly every commit is a recovery (a notice and a ``RetryProviderNow``). A profile of
    them put the tenant's destinations and the user's preferences, read again for each, and one wake per
    recovery above the attempt's own writes. Here the destinations are read once per tenant, the
    preferences once per user, and the wakes added up per provider and run once, at the end of the batch
    (the same transaction, so the same outcome: rows this batch holds are leased and skipped either way).
    """

    destinations: dict[str, tuple[Destination, ...]] = field(default_factory=dict)
    preferences: dict[tuple[str, str], UserPreferences] = field(default_factory=dict)
    #: per provider, the wakes' limits added up and the latest instant among them
    wakes: dict[str, tuple[int, datetime]] = field(default_factory=dict)

    def add_wake(self, provider_id: str, limit: int, at: datetime) -> None:
        added, latest = self.wakes.get(provider_id, (0, at))
        self.wakes[provider_id] = (added + limit, max(latest, at))

    def wake(self, connection: Connection) -> int:
        """Run the wakes the batch's recoveries asked for; returns how many rows were made due."""
        woken = sum(
            retry_provider_now(connection, provider_id, at, limit)
            for provider_id, (limit, at) in self.wakes.items()
        )
        self.wakes.clear()
        return woken


def _state_columns(parameters: dict[str, Any]) -> tuple[str, ...]:
    """The columns an attempt's UPDATE sets (its statement's cache key): all but the fence and timestamp."""
    return _columns_of(tuple(parameters))


@functools.lru_cache(maxsize=64)
def _columns_of(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(name for name in names if not name.startswith("fence_") and name != "updated_at"))


#: Every instant among a commit's values (``rows.state_values``, the fence, the attempt row); the test of
#: ``_driver_values`` checks that the list is complete.
TIME_KEYS = (
    "last_refreshed_at", "last_failure_at", "failing_since", "expires_at", "next_attempt_at",
    "in_flight_since", "fence_started_at", "updated_at", "attempted_at",
)  # fmt: skip


def _driver_values(hot: hotpath.HotPath, values: dict[str, Any]) -> dict[str, Any]:
    """Values as the driver takes them: instants converted (``hotpath``); the rest are already plain.

    Only the known instant columns are looked at: testing every value's type cost a tenth of the store
    thread's time in a profile of the refresh path."""
    converted = dict(values)
    time_in = hot.time_in
    for name in TIME_KEYS:
        value = converted.get(name)
        if value is not None:
            converted[name] = time_in(value)
    return converted


def commit_attempt(
    connection: Connection,
    cipher: FieldCipher,
    commit: AttemptCommit,
    *,
    digest_hour: int = DEFAULT_DIGEST_HOUR,
) -> bool:
    """Write everything the attempt changed, or nothing when the lease is no longer ours (returns False)."""
    shared = BatchShared()
    committed = _commit_one(connection, cipher, commit, digest_hour, shared)
    shared.wake(connection)
    return committed


def _commit_one(
    connection: Connection, cipher: FieldCipher, commit: AttemptCommit, digest_hour: int, shared: BatchShared
) -> bool:
    claim = commit.claim
    finished_at = commit.attempt.attempted_at + commit.attempt.duration
    parameters = _fenced_parameters(cipher, commit)
    columns = tuple(
        sorted(name for name in parameters if not name.startswith("fence_") and name != "updated_at")
    )
    if connection.execute(_fenced_update(columns), parameters).rowcount != 1:
        return False
    connection.execute(_INSERT_ATTEMPT, _attempt_row(commit))
    fanout = Fanout(
        connection,
        claim.tenant_id,
        finished_at,
        digest_hour,
        known=shared.destinations,
        preferences=shared.preferences,
    )
    insert_notifications(connection, _recipient(commit), commit.notifications, fanout)
    provider = (claim.provider.provider_id, claim.provider.name)
    apply_effects(connection, commit.transition.effects, claim.connection_id, provider, fanout, shared=shared)
    if commit.outcome.klass is OutcomeClass.SUCCESS and claim.provider.flagged_at is not None:
        clear_provider_flag(connection, claim.provider.provider_id)
    fanout.flush()
    return True


@functools.lru_cache(maxsize=16)
def _fenced_update(columns: tuple[str, ...]) -> Update:
    """The attempt's UPDATE, built once per set of columns with bound parameters.

    Building a statement from literal values costs more CPU than SQLite takes to run it (SQLAlchemy coerces
    and cache-keys every value), and this statement runs once per refresh.
    """
    return (
        update(connections)
        .where(
            _c.id == bindparam("fence_id"),
            or_(
                and_(_c.version == bindparam("fence_version"), _c.lease_owner == bindparam("fence_owner")),
                _c.in_flight_since == bindparam("fence_started_at", type_=_c.in_flight_since.type),
            ),
        )
        .values(
            {name: bindparam(name) for name in columns}
            | {"lease_owner": None, "lease_expires_at": None, "version": _c.version + 1}
            | {"updated_at": bindparam("updated_at")}
        )
    )


def _fenced_parameters(cipher: FieldCipher, commit: AttemptCommit) -> dict[str, Any]:
    """The new column values (state, and tokens on success) plus the fence: id, then version and lease
    owner, or the attempt's own start still being the last one recorded (``ClaimedConnection``)."""
    claim = commit.claim
    values = state_values(commit.transition.state) | _token_values(
        cipher, claim.connection_id, _tokens(commit)
    )
    if commit.transition.state.status is claim.state.status:
        # Writing a column SQLite must rewrite every index holding it, unchanged or not: ``status`` is in two
        # (the due queue and the listing by status), and leaving it out cut a third of this UPDATE's cost.
        # Nothing else writes a leased row's status (a reconnect bumps ``version`` and clears
        # ``in_flight_since``, so this fence fails), so the value stays what the claim read.
        del values["status"]
    return values | {
        "fence_id": claim.connection_id,
        "fence_version": claim.version,
        "fence_owner": claim.lease_owner,
        "fence_started_at": claim.started_at,
        "updated_at": commit.attempt.attempted_at + commit.attempt.duration,
    }


def _lease_cleared(at: datetime) -> dict[str, Any]:
    return {"lease_owner": None, "lease_expires_at": None, "version": _c.version + 1, "updated_at": at}


def _tokens(commit: AttemptCommit) -> TokenSet | None:
    """Only a success carries tokens to store; a malformed 2xx is transient and never overwrites them."""
    return commit.outcome.tokens if commit.outcome.klass is OutcomeClass.SUCCESS else None


def _token_values(cipher: FieldCipher, connection_id: str, tokens: TokenSet | None) -> dict[str, Any]:
    """New access token; new refresh token only when the provider rotated it, else the stored one stays."""
    if tokens is None:
        return {}
    values = {
        "access_token_enc": cipher.seal("connections", connection_id, "access_token", tokens.access_token)
    }
    if tokens.refresh_token is not None:
        values["refresh_token_enc"] = cipher.seal(
            "connections", connection_id, "refresh_token", tokens.refresh_token
        )
    return values


def _attempt_row(commit: AttemptCommit) -> dict[str, Any]:
    attempt = commit.attempt
    return {
        "connection_id": commit.claim.connection_id,
        "tenant_id": commit.claim.tenant_id,
        "provider_id": commit.claim.provider.provider_id,
        "attempted_at": attempt.attempted_at,
        "outcome": attempt.outcome.value,
        "http_status": attempt.http_status,
        "error_code": attempt.error_code,
        "duration_ms": round(attempt.duration.total_seconds() * 1000),
    }


@dataclass(frozen=True)
class Recipient:
    """Whose connection a notification is about: enough to address it and to name it."""

    tenant_id: str
    connection_id: str
    user_id: str | None
    email: str | None
    provider_name: str


def _recipient(commit: AttemptCommit) -> Recipient:
    claim = commit.claim
    return Recipient(claim.tenant_id, claim.connection_id, claim.user_id, claim.email, claim.provider.name)


def insert_notifications(
    connection: Connection,
    recipient: Recipient,
    contents: Sequence[NotificationContent],
    fanout: Fanout,
) -> None:
    """One notification row each, and its outbox rows (email, chat, webhooks), in the state's transaction."""
    rows = notification_rows(recipient, contents, fanout)
    if rows:
        # before the outbox rows that reference them
        connection.execute(_INSERT_NOTIFICATION, rows)


def notification_rows(
    recipient: Recipient, contents: Sequence[NotificationContent], fanout: Fanout
) -> list[dict[str, Any]]:
    """The notification rows for ``contents``; their outbox rows go to ``fanout``, written after them."""
    rows: list[dict[str, Any]] = []
    for content in contents:
        notification_id = new_id("ntf")
        rows.append(
            {
                "id": notification_id,
                "tenant_id": recipient.tenant_id,
                "connection_id": recipient.connection_id,
                "user_id": recipient.user_id,
                "type": content.type.value,
                "title": content.title,
                "message": content.message,
                "is_read": False,
                "created_at": fanout.at,
                "metadata": {"provider": recipient.provider_name} | content.metadata,
            }
        )
        data = {
            "notification_id": notification_id,
            "connection_id": recipient.connection_id,
            "user_id": recipient.user_id,
            "provider": recipient.provider_name,
            "title": content.title,
            "message": content.message,
        }
        notice = NotificationFanout(notification_id, content.type, "email" in content.channels, data)
        fanout.notification(notice, user_id=recipient.user_id, email=recipient.email)
    return rows


def apply_effects(
    connection: Connection,
    effects: tuple[Effect, ...],
    connection_id: str,
    provider: tuple[str, str],
    fanout: Fanout,
    *,
    shared: BatchShared | None = None,
    paused: dict[str, list[tuple[str, str]]] | None = None,
) -> list[str]:
    """Carry out the transition's effects other than notifications (those arrive rendered, as content).

    Queues the webhook events they cause: one per workflow paused or resumed, one when a provider is flagged.
    Returns the names of the workflows resumed (a reconnect's success page lists them). With ``shared``, a
    ``RetryProviderNow`` is added there for the caller to run once per batch (``BatchShared.wake``). With
    ``paused``, the group's pauses were already made (``pause_linked``), and only their events are queued.
    """
    resumed: list[str] = []
    at = fanout.at
    provider_id, provider_name = provider
    for effect in effects:
        if isinstance(effect, PauseWorkflows):
            if paused is None:
                made = pause_linked(connection, [(connection_id, effect.reason, at)])
            else:
                made = paused
            for workflow_id, name in made.get(connection_id, []):
                fanout.event(
                    EventType.WORKFLOW_PAUSED,
                    {
                        "workflow_id": workflow_id,
                        "name": name,
                        "reason": effect.reason.value,
                        "connection_id": connection_id,
                    },
                )
        elif isinstance(effect, ResumeWorkflows):
            for workflow_id, name in resume_workflows(connection, connection_id, at):
                resumed.append(name)
                fanout.event(
                    EventType.WORKFLOW_RESUMED,
                    {"workflow_id": workflow_id, "name": name, "connection_id": connection_id},
                )
        elif isinstance(effect, RetryProviderNow):
            if shared is None:
                retry_provider_now(connection, provider_id, at, effect.limit)
            else:
                shared.add_wake(provider_id, effect.limit, at)
        elif isinstance(effect, FlagProvider):
            reason = f"{effect.error.code}: {effect.error.description}"
            if flag_provider(connection, provider_id, reason, at):
                fanout.event(
                    EventType.PROVIDER_CONFIG_ERROR,
                    {
                        "provider": provider_name,
                        "provider_id": provider_id,
                        "error_code": effect.error.code,
                        "connection_id": connection_id,
                    },
                )

    return resumed


def lock_linked_workflows(connection: Connection, connection_id: str) -> list[str]:
    """Lock the connection's workflows in id order before deciding their status.

    Without the lock two connections of one workflow reconnecting at once could each still see the other as
    disconnected under READ COMMITTED, and neither would resume the workflow. Id order prevents deadlocks.
    """
    linked = select(workflow_connections.c.workflow_id).where(
        workflow_connections.c.connection_id == connection_id
    )
    query = select(_w.id).where(_w.id.in_(linked)).order_by(_w.id).with_for_update()
    return list(connection.scalars(query))


def pause_linked(
    connection: Connection, pauses: Sequence[tuple[str, DisconnectReason, datetime]]
) -> dict[str, list[tuple[str, str]]]:
    """Pause the active workflows that depend on the given connections, for a group of disconnections at once.

    ``pauses`` holds (connection id, reason, instant) in commit order. A workflow linked to several of them is
    paused by the first, with its reason, as committing them one by one would do; one already paused keeps its
    reason. Returns, per connection, the (id, name) of each workflow it paused, in id order, for the
    ``workflow.paused`` events.

    A group costs one query when none of its connections has a workflow (nearly always), where each
    disconnection used to cost one: the links are read for all, the linked workflows locked in id order (so
    two workers cannot deadlock, and a concurrent resume waits), and the active ones paused by one
    executemany UPDATE.
    """
    if not pauses:
        return {}
    links = select(workflow_connections.c.connection_id, workflow_connections.c.workflow_id).where(
        workflow_connections.c.connection_id.in_({connection_id for connection_id, _, _ in pauses})
    )
    linked: dict[str, list[str]] = {}
    for connection_id, workflow_id in connection.execute(links):
        linked.setdefault(connection_id, []).append(workflow_id)
    if not linked:
        return {}
    wanted = {workflow_id for workflow_ids in linked.values() for workflow_id in workflow_ids}
    lock = select(_w.id, _w.name, _w.status).where(_w.id.in_(wanted)).order_by(_w.id).with_for_update()
    active = {
        row.id: row.name for row in connection.execute(lock) if row.status == WorkflowStatus.ACTIVE.value
    }
    paused: dict[str, list[tuple[str, str]]] = {}
    rows: list[dict[str, Any]] = []
    for connection_id, reason, at in pauses:
        for workflow_id in sorted(linked.get(connection_id, ())):
            name = active.pop(workflow_id, None)
            if name is None:  # paused before, or by an earlier connection of this group
                continue
            rows.append({"b_id": workflow_id, "b_reason": reason.value, "b_at": at})
            paused.setdefault(connection_id, []).append((workflow_id, name))
    if rows:
        connection.execute(_PAUSE, rows)
    return paused


_PAUSE = (
    update(workflows)
    .where(_w.id == bindparam("b_id"))
    .values(
        status=WorkflowStatus.PAUSED.value, paused_reason=bindparam("b_reason"), updated_at=bindparam("b_at")
    )
)


def resume_workflows(connection: Connection, connection_id: str, at: datetime) -> list[tuple[str, str]]:
    """Resume workflows a disconnection paused, unless another of their connections still needs
    reauthorization. A pause with any other reason (the user's own) is left alone."""
    return resume_unblocked(connection, lock_linked_workflows(connection, connection_id), at)


def resume_unblocked(connection: Connection, workflow_ids: list[str], at: datetime) -> list[tuple[str, str]]:
    """Resume those of the (locked) workflows that a disconnection paused and that no longer have a linked
    connection needing reauthorization; returns the (id, name) of each one resumed."""
    if not workflow_ids:
        return []
    other_disconnected = exists().where(
        workflow_connections.c.workflow_id == _w.id,
        workflow_connections.c.connection_id == _c.id,
        _c.status == ConnectionStatus.NEEDS_REAUTHORIZATION.value,
    )
    statement = (
        update(workflows)
        .where(
            _w.id.in_(workflow_ids),
            _w.status == WorkflowStatus.PAUSED.value,
            _w.paused_reason.in_(_CONNECTION_PAUSE_REASONS),
            ~other_disconnected,
        )
        .values(status=WorkflowStatus.ACTIVE.value, paused_reason=None, updated_at=at)
        .returning(_w.id, _w.name)
    )
    return sorted((row.id, row.name) for row in connection.execute(statement))


def retry_provider_now(connection: Connection, provider_id: str, at: datetime, limit: int) -> int:
    """Make up to ``limit`` of the provider's connections that back off from transient failures due now, those
    whose retry lies furthest ahead first (``RetryProviderNow``); returns how many.

    Only connected rows with a transient streak whose next attempt lies ahead; leased rows are left to their
    worker, whose commit will schedule them anyway. The rows are read backwards from the end of
    ``ix_connections_transient``, so the statement's cost is ``limit`` rows however many back off (one
    UPDATE over a million of them took 114 s on PostgreSQL, ADR 27). On PostgreSQL, rows another worker's
    wake holds are skipped, not waited for: that worker is waking them already.
    """
    parameters = {"provider_id": provider_id, "at": at, "limit": limit}
    ids = list(connection.scalars(_FURTHEST_BACKED_OFF, parameters))
    if not ids:
        return 0
    connection.execute(_WAKE, {"ids": ids, "woken_at": at})
    return len(ids)


# Built once (a wake runs in every batch that holds a recovery, and building costs more than running).
_FURTHEST_BACKED_OFF = (
    select(_c.id)
    .where(
        _c.provider_id == bindparam("provider_id"),
        _c.consecutive_transient_failures > 0,
        _c.status == ConnectionStatus.CONNECTED.value,
        _c.next_attempt_at > bindparam("at"),
        or_(_c.lease_expires_at.is_(None), _c.lease_expires_at < bindparam("at")),
    )
    .order_by(_c.next_attempt_at.desc())
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_WAKE = (
    update(connections)
    .where(_c.id.in_(bindparam("ids", expanding=True)))
    .values(next_attempt_at=bindparam("woken_at", type_=_c.next_attempt_at.type))
)


def schedule_probes(connection: Connection, now: datetime, horizon_at: datetime) -> int:
    """For each provider whose connections all back off beyond ``horizon_at``, make the one due soonest due
    now (see ``core.policy.probe_horizon``); returns how many probes were scheduled.

    One index probe per provider (``ix_connections_transient`` keeps only failing rows, by provider and time).
    """
    probed = 0
    for provider_id in connection.scalars(select(providers.c.id)):
        earliest = (
            select(_c.id, _c.next_attempt_at)
            .where(
                _c.provider_id == provider_id,
                _c.consecutive_transient_failures > 0,
                _c.status == ConnectionStatus.CONNECTED.value,
            )
            .order_by(_c.next_attempt_at)
            .limit(1)
        )
        row = connection.execute(earliest).first()
        if row is None or row.next_attempt_at is None or row.next_attempt_at <= horizon_at:
            continue
        connection.execute(update(connections).where(_c.id == row.id).values(next_attempt_at=now))
        probed += 1
    return probed


def clear_provider_flag(connection: Connection, provider_id: str) -> None:
    """A refresh that succeeded proves the client credentials work again; the next failure of ours is news
    (and another ``provider.config_error``)."""
    connection.execute(
        update(providers)
        .where(providers.c.id == provider_id, providers.c.flagged_at.is_not(None))
        .values(flagged_at=None, flag_reason=None)
    )


def flag_provider(connection: Connection, provider_id: str, reason: str, at: datetime) -> bool:
    """Mark our client credentials as suspect; ``flagged_at`` keeps when the trouble began.

    Returns True only when this call raised the flag, so one outage of our credentials makes one
    ``provider.config_error`` event, not one per connection that ran into it."""
    newly = connection.execute(
        update(providers)
        .where(providers.c.id == provider_id, providers.c.flagged_at.is_(None))
        .values(flagged_at=at, flag_reason=reason)
    ).rowcount
    if not newly:
        connection.execute(update(providers).where(providers.c.id == provider_id).values(flag_reason=reason))
    return bool(newly)


def reconnect(
    connection: Connection,
    cipher: FieldCipher,
    tenant_id: str,
    connection_id: str,
    tokens: TokenSet,
    transition: Transition,
    now: datetime,
    *,
    notifications: Sequence[NotificationContent] = (),
    digest_hour: int = DEFAULT_DIGEST_HOUR,
) -> list[str] | None:
    """Store the new grant's tokens and the fresh state; bumping ``version`` makes any in-flight attempt with
    the old refresh token fail its fenced commit instead of overwriting the new tokens. A grant without a
    refresh token keeps the stored one, as a refresh without rotation does. Returns the names of the
    workflows resumed, None when the tenant has no such connection.

    A grant that names its provider account (``tokens.account_id``) is stored only on a connection that has
    none yet (which learns it) or the same one; another raises ``AccountMismatchError``, checked in the same
    statement, so two flows finishing at once cannot both pass."""
    values = state_values(transition.state) | _token_values(cipher, connection_id, tokens)
    condition = and_(_c.tenant_id == tenant_id, _c.id == connection_id)
    if tokens.account_id is not None:
        values["account_id"] = tokens.account_id
        condition = and_(condition, or_(_c.account_id.is_(None), _c.account_id == tokens.account_id))
    statement = (
        update(connections)
        .where(condition)
        .values(values | _lease_cleared(now))
        .returning(_c.provider_id, _c.user_id, _c.email)
    )
    row = connection.execute(statement).first()
    if row is None:
        if tokens.account_id is not None and connection.scalar(
            select(_c.id).where(_c.tenant_id == tenant_id, _c.id == connection_id)
        ):
            raise AccountMismatchError(connection_id)
        return None
    provider_id, user_id, email = row
    effects = transition.effects
    if not any(isinstance(effect, ResumeWorkflows) for effect in effects):
        effects = (*effects, ResumeWorkflows())
    provider_name = str(connection.scalar(select(providers.c.name).where(providers.c.id == provider_id)))
    fanout = Fanout(connection, tenant_id, now, digest_hour)
    recipient = Recipient(tenant_id, connection_id, user_id, email, provider_name)
    insert_notifications(connection, recipient, notifications, fanout)
    resumed = apply_effects(connection, effects, connection_id, (provider_id, provider_name), fanout)
    fanout.flush()
    return resumed

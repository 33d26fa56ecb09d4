"""The outbox dispatcher SIGKILLed a few hundred times mid-run: no notification lost, and every duplicate a
receiver gets comes from the documented window (issue 4's crash fault test, on SQLite and PostgreSQL).

Delivery is at least once. A dispatcher killed after a receiver got a row but before the delivery was recorded
leaves the row leased; when the lease runs out another dispatcher sends it again with the same idempotency key
(``webhook-id``; the email's ``Message-ID`` is derived from it). This test runs real dispatcher processes
(``tests/e2e/chaos_dispatcher.py`` forks them with the production wiring) against the real store, a real
HTTP receiver (Slack and webhook paths) and a real SMTP server on loopback that answer after a random
0-30 ms so kills land mid-send. It keeps three dispatchers running and kills each 0-300 ms after it is ready
(one in ten 0-300 ms after its fork, so some die while starting), 300 kills in all, then lets one last
dispatcher finish.

What it holds the dispatcher to:
- nothing lost: every outbox row delivered (none pending or failed) and received at least once;
- webhooks: every request verifies (Standard Webhooks), the copies of one row carry the same ``webhook-id``
  and the same bytes, and a receiver deduplicating on ``webhook-id`` sees each event exactly once;
- emails: every copy of one row carries the same ``Message-ID``, so each person has exactly as many distinct
  Message-IDs as email rows;
- duplicates only in the window: the children's journal says which child sent each copy. Whenever a row was
  sent again, the child that sent it before had recorded nothing for that send and had been killed (and was
  dead) before the next send began; or it had recorded a failed attempt, which is retried by design. A re-send
  for any other reason (a live dispatcher whose lease ran out, a double lease) fails the test. An email
  duplicate must come from a kill.
The duplicates per channel are printed and attached to the test report (``record_property``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer  # noqa: N811
from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import Engine, select
from standardwebhooks.webhooks import Webhook

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.tables import notifications, outbox
from grantkeeper.adapters.notify.email_message import message_id
from grantkeeper.adapters.notify.webhook import webhook_body
from grantkeeper.core.model import ConnectionState, Outcome
from grantkeeper.core.model import NotificationType as Kind
from grantkeeper.core.model import OutcomeClass as Klass
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import NotificationContent, ProviderConfig
from tests.e2e.chaos_dispatcher import Ended, ForkServer, JournalEvent, read_journal
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, new_connection
from tests.fixtures.receivers import HttpReceiver
from tests.fixtures.smtp import free_port

USERS = 50
NOTICES = 200  # one notification per commit, the users in turn: four each
CHILDREN = 3  # dispatcher processes at once
CONCURRENCY = 10  # deliveries in flight per dispatcher (GRANTKEEPER_DELIVERY_CONCURRENCY)
KILLS = 300
MAX_LIFETIME = 0.3  # a child is killed 0-300 ms after its dispatcher is ready ...
EARLY_KILLS = 0.1  # ... or, one in ten, 0-300 ms after its fork: maybe while it is still starting
RECEIVER_DELAY = 0.03  # receivers answer 0-30 ms after the request arrived
DRAIN_TIMEOUT = 180.0  # for the last dispatcher, which usually needs a few seconds
EMAIL_FROM = "grantkeeper@example.test"
SLACK_PATH = "/services/T0CHAOS/B0CHAOS/chaos-slack-path-secret"
WEBHOOK_PATH = "/hooks/grantkeeper"
CHANNELS = ("email", "slack", "webhook")


@dataclass
class SlowMailbox:
    """The aiosmtpd handler: takes each message, then waits 0-30 ms before saying so, so a dispatcher killed
    meanwhile has delivered a message without knowing it (the duplicate window).

    Not ``tests.fixtures.smtp.Mailbox``: aiosmtpd runs ``inspect.getmembers`` on its handler for every
    connection, which evaluates that class's ``messages`` property, parsing every message received so far;
    with hundreds of emails that costs seconds per connection. Parse once, at the end, with ``messages()``."""

    rng: random.Random = field(default_factory=random.Random)
    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        await asyncio.sleep(self.rng.uniform(0, RECEIVER_DELAY))
        return "250 Message accepted"

    def messages(self) -> list[EmailMessage]:
        parser = BytesParser(policy=policy.default)
        return [parser.parsebytes(envelope.original_content or b"") for envelope in self.envelopes]


@pytest.fixture
def slow_smtp() -> Iterator[tuple[int, SlowMailbox]]:
    mailbox = SlowMailbox()
    # server_hostname: else aiosmtpd calls socket.getfqdn() on its event loop for every connection
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(), server_hostname="smtp.chaos.test"
    )
    controller.start()
    try:
        yield controller.port, mailbox
    finally:
        controller.stop()


@dataclass(frozen=True)
class Row:
    outbox_id: str
    channel: str
    status: str
    recipient: str | None
    payload: Any
    title: str


@pytest.mark.slow
@pytest.mark.timeout(420)
# record_property still writes the summary into a junit report of the default family (xunit2); it only warns
@pytest.mark.filterwarnings("ignore:record_property is incompatible:pytest.PytestWarning")
def test_dispatcher_killed_hundreds_of_times_loses_nothing_and_duplicates_only_in_the_window(
    database_url: str,
    key_line: str,
    engine: Engine,
    store: SqlStore,
    tenant_id: str,
    provider: ProviderConfig,
    http_receiver: HttpReceiver,
    slow_smtp: tuple[int, SlowMailbox],
    tmp_path: Path,
    record_property: Any,
) -> None:
    started = time.monotonic()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    smtp_port, mailbox = slow_smtp
    mailbox.rng.seed(seed)
    for _ in range(4000):  # more than the requests of a run; after these, answers come at once
        http_receiver.respond_with(200, "ok", times=1, delay=rng.uniform(0, RECEIVER_DELAY))
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode("ascii")
    store.add_destination(tenant_id, DestinationKind.SLACK, http_receiver.url(SLACK_PATH), T0)
    store.add_destination(
        tenant_id, DestinationKind.WEBHOOK, http_receiver.url(WEBHOOK_PATH), T0, secret=secret
    )
    users = [f"chaos{n:02d}" for n in range(USERS)]
    connection_ids = store.import_connections(tenant_id, [new_connection(user) for user in users], T0)
    for n in range(NOTICES):
        commit_notice(
            store, tenant_id, connection_ids[n % USERS], f"Chaos notice {n:03d} for {users[n % USERS]}"
        )

    env = {key: value for key, value in os.environ.items() if not key.startswith("GRANTKEEPER_")} | {
        "GRANTKEEPER_DATABASE_URL": database_url,
        "GRANTKEEPER_ENCRYPTION_KEYS": key_line,
        "GRANTKEEPER_PUBLIC_URL": "https://app.example.test",
        "GRANTKEEPER_SMTP_HOST": "127.0.0.1",
        "GRANTKEEPER_SMTP_PORT": str(smtp_port),
        "GRANTKEEPER_SMTP_SECURITY": "none",
        "GRANTKEEPER_EMAIL_FROM": EMAIL_FROM,
        "GRANTKEEPER_DELIVERY_LEASE_SECONDS": "1",
        "GRANTKEEPER_DELIVERY_SEND_TIMEOUT_SECONDS": "0.4",
        "GRANTKEEPER_DELIVERY_BASE_DELAY_SECONDS": "0.2",
        "GRANTKEEPER_DELIVERY_CONCURRENCY": str(CONCURRENCY),
    }
    journal = tmp_path / "journal.txt"
    with ForkServer(env=env, cwd=tmp_path, journal=journal, log=tmp_path / "dispatchers.log") as server:
        chaos_started = time.monotonic()
        kills = kill_repeatedly(server, rng)
        chaos_seconds = time.monotonic() - chaos_started

        drain_started = time.monotonic()
        last = server.spawn(None)
        while store.outbox_counts(tenant_id)["pending"] and time.monotonic() - drain_started < DRAIN_TIMEOUT:
            time.sleep(0.1)
        final = server.stop(last)
        drain_seconds = time.monotonic() - drain_started
        log = server.log_tail(20_000)

    assert all(ended.was_killed for ended in kills), ([e for e in kills if not e.was_killed][:5], log)
    assert final.status == "exit:0", log
    assert "Traceback" not in log, log
    rows = outbox_rows(engine, tenant_id)
    counts = Counter(row.channel for row in rows.values())
    assert counts == dict.fromkeys(CHANNELS, NOTICES)
    assert store.outbox_counts(tenant_id) == {"pending": 0, "delivered": len(rows), "failed": 0}, (
        stuck_rows(engine, tenant_id),
        log,
    )
    deliveries = store.list_deliveries(tenant_id, limit=100_000)
    assert Counter(d.outbox_id for d in deliveries if d.is_delivered) == dict.fromkeys(rows, 1)
    failed_attempts = [d for d in deliveries if not d.is_delivered]

    received = receipts(rows, http_receiver, mailbox, secret)
    assert set(received) == set(rows), "a notification never reached its receiver"

    written = read_journal(journal)
    assert len(written.torn) <= len(kills), written.torn[:10]
    window = duplicate_window(written.events, kills)
    duplicates = dict.fromkeys(CHANNELS, 0)
    emails_per_person: Counter[str] = Counter()
    for outbox_id, copies in received.items():
        duplicates[rows[outbox_id].channel] += copies - 1
        if rows[outbox_id].channel == "email":
            emails_per_person[rows[outbox_id].recipient or ""] += copies - 1
    summary = {
        "backend": engine.dialect.name,
        "seed": seed,
        "kills": len(kills),
        "kills_while_starting": window.kills_while_starting,
        "kills_mid_send": window.kills_mid_send,
        "kills_after_send_before_record": window.kills_in_gap,
        "rows": dict(counts),
        "duplicates": duplicates,
        "max_copies_of_a_row": max(received.values()),
        "max_duplicate_emails_per_person": max(emails_per_person.values()),
        "resends_after_kills": sum(window.killed_resends.values()),
        "torn_journal_records": len(written.torn),
        "failed_attempts_retried": len(failed_attempts),
        "chaos_seconds": round(chaos_seconds, 1),
        "drain_seconds": round(drain_seconds, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(f"\ndelivery chaos: {json.dumps(summary)}")
    record_property("delivery_chaos", json.dumps(summary))

    assert window.outside == [], "re-sends outside the documented window:\n" + "\n".join(window.outside[:40])
    timed_out = Counter(d.outbox_id for d in failed_attempts if may_have_arrived(d.error))
    for outbox_id, copies in received.items():
        row = rows[outbox_id]
        assert copies <= len(window.sends[outbox_id]), f"{outbox_id}: received more often than sent"
        # A retry explains a duplicate when the failed try may have reached the receiver. An email can only
        # have been taken when the try timed out (the relay took the message, its "250" came too late); an
        # email refused with a reply must never arrive as well.
        retried = window.retries[outbox_id]
        explained = window.killed_resends[outbox_id] + (
            min(retried, timed_out[outbox_id]) if row.channel == "email" else retried
        )
        assert copies - 1 <= explained, f"{outbox_id} ({row.channel}): {copies} copies, {explained} explained"
    assert len(kills) >= KILLS
    assert window.kills_mid_send + window.kills_in_gap >= KILLS // 10, "too few kills landed mid-delivery"


def kill_repeatedly(server: ForkServer, rng: random.Random) -> list[Ended]:
    """Keep CHILDREN dispatchers running, each killed at its moment (the server times the kills) and
    replaced, until KILLS have been killed."""
    kills: list[Ended] = []
    live = spawned = 0
    while len(kills) < KILLS:
        while live < CHILDREN and spawned < KILLS:
            early = rng.random() < EARLY_KILLS
            server.spawn(rng.uniform(0, MAX_LIFETIME), after="fork" if early else "ready")
            live, spawned = live + 1, spawned + 1
        kills.append(server.next_ended())
        live -= 1
    return kills


def commit_notice(store: SqlStore, tenant_id: str, connection_id: str, title: str) -> None:
    """One refresh attempt leaving one warning (email, the Slack channel, the webhook), due now."""
    at = datetime.now(UTC) - timedelta(seconds=1)
    [claim] = store.claim_ids(tenant_id, [connection_id], at, "seeder", LEASE_TTL)
    content = NotificationContent(Kind.WARNING, title, f"{title}: the provider keeps failing", {}, ("email",))
    commit = attempt_commit(
        claim,
        Outcome(Klass.TRANSIENT, http_status=429),
        ConnectionState(next_attempt_at=at + timedelta(minutes=5)),
        notifications=(content,),
        attempted_at=at,
    )
    assert store.commit_attempt(commit)


def outbox_rows(engine: Engine, tenant_id: str) -> dict[str, Row]:
    o, n = outbox.c, notifications.c
    query = (
        select(o.id, o.channel, o.status, o.recipient, o.payload, n.title)
        .join(notifications, n.id == o.notification_id)
        .where(o.tenant_id == tenant_id)
    )
    with engine.connect() as connection:
        return {row.id: Row(*row) for row in connection.execute(query)}


def stuck_rows(engine: Engine, tenant_id: str) -> list[dict[str, Any]]:
    """The rows still pending, with their schedule and lease, for the failure message."""
    o = outbox.c
    query = select(
        o.id, o.channel, o.attempts, o.next_attempt_at, o.lease_owner, o.lease_expires_at, o.last_error
    ).where(o.tenant_id == tenant_id, o.status == "pending")
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def receipts(
    rows: dict[str, Row], receiver: HttpReceiver, mailbox: SlowMailbox, secret: str
) -> dict[str, int]:
    """How many copies of each outbox row arrived, checking what identifies and signs them on the way."""
    by_title = {row.title: row for row in rows.values() if row.channel == "slack"}
    by_message_id = {
        message_id(row.outbox_id, "example.test"): row for row in rows.values() if row.channel == "email"
    }
    copies: Counter[str] = Counter()
    webhook_bodies: dict[str, set[bytes]] = defaultdict(set)
    verifier = Webhook(secret)
    for request in receiver.requests:
        if request.path == WEBHOOK_PATH:
            webhook_id = request.headers["webhook-id"]
            verifier.verify(request.body, dict(request.headers))  # raises on a bad signature or timestamp
            row = rows[webhook_id]
            assert row.channel == "webhook"
            assert request.body == webhook_body(row.payload), f"{webhook_id}: the body changed"
            webhook_bodies[webhook_id].add(request.body)
            copies[webhook_id] += 1
        elif request.path == SLACK_PATH:
            copies[by_title[request.json()["text"]].outbox_id] += 1
        else:
            raise AssertionError(f"a request to an unexpected path: {request.path}")
    assert all(len(bodies) == 1 for bodies in webhook_bodies.values())
    every_body = [body for bodies in webhook_bodies.values() for body in bodies]
    assert len(set(every_body)) == len(every_body), "two webhook-ids carry the same event"
    deduped = set(webhook_bodies)  # what a receiver deduplicating on webhook-id keeps
    assert deduped == {row.outbox_id for row in rows.values() if row.channel == "webhook"}
    message_ids: dict[str, set[str]] = defaultdict(set)  # person -> the Message-IDs they got
    for message in mailbox.messages():
        row = by_message_id[message["Message-ID"]]  # a KeyError: a Message-ID no row explains
        assert message["To"] == row.recipient
        message_ids[message["To"]].add(message["Message-ID"])
        copies[row.outbox_id] += 1
    email_rows = Counter(row.recipient for row in rows.values() if row.channel == "email")
    # a mail client threading on Message-ID shows each person each notification once
    assert {person: len(ids) for person, ids in message_ids.items()} == email_rows
    return dict(copies)


def may_have_arrived(error: str | None) -> bool:
    """A failed attempt cut off while waiting for the receiver's answer (``dispatch``'s send timeout, or the
    SMTP client's own, but not its connect timeout): the receiver may have taken the message."""
    return error == "send timeout" or (
        error is not None and error.startswith("SMTP timeout (") and "Connect" not in error
    )


@dataclass
class Window:
    """What the journal says about re-sends, per row: ``killed_resends`` after a kill in the window,
    ``retries`` after a recorded failure; ``outside`` describes any other."""

    sends: dict[str, list[tuple[float, int]]]
    killed_resends: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    outside: list[str] = field(default_factory=list)
    kills_while_starting: int = 0
    kills_mid_send: int = 0
    kills_in_gap: int = 0


def duplicate_window(events: list[JournalEvent], kills: list[Ended]) -> Window:
    """Check that each row was sent again only because the child that sent it before died in the window
    (after or while sending, before recording, and dead before the next send began) or recorded a failure."""
    sends: dict[str, list[tuple[float, int]]] = defaultdict(list)
    started: dict[int, set[str]] = defaultdict(set)  # child -> rows whose send began
    returned: dict[int, set[str]] = defaultdict(set)  # child -> rows whose send returned
    records: dict[tuple[int, str], list[tuple[float, str, str]]] = defaultdict(list)
    ready: set[int] = set()
    for event in events:
        if event.kind == "S":
            sends[event.fields[0]].append((event.at, event.index))
            started[event.index].add(event.fields[0])
        elif event.kind == "E":
            returned[event.index].add(event.fields[0])
        elif event.kind == "D":  # (when, recorded, delivered)
            records[event.index, event.fields[0]].append((event.at, event.fields[1], event.fields[2]))
        elif event.kind == "Y":
            ready.add(event.index)
    window = Window(sends)
    dead_at = {ended.index: ended.dead_at for ended in kills if ended.was_killed}

    def record_of(child: int, outbox_id: str, sent_at: float) -> tuple[str, str] | None:
        """What the child recorded for the send it began at ``sent_at``; None if it recorded nothing."""
        after = [record for record in records[child, outbox_id] if record[0] >= sent_at]
        return min(after)[1:] if after else None

    for outbox_id, row_sends in sends.items():
        row_sends.sort()
        for (sent_at, child), (again_at, other) in pairwise(row_sends):
            record = record_of(child, outbox_id, sent_at)
            if record is None and dead_at.get(child, float("inf")) <= again_at:
                window.killed_resends[outbox_id] += 1  # the documented window
            elif record == ("1", "0"):
                window.retries[outbox_id] += 1  # a failed attempt, recorded and retried
            else:
                if record is None:
                    why = "was still alive: its lease ran out while it was sending"
                elif record[0] == "0":
                    why = "was fenced out when it recorded: its lease ran out while it was sending"
                else:
                    why = "had recorded the delivery"
                window.outside.append(
                    f"{outbox_id}: sent by child {child} at {sent_at:.3f}, again by child {other} at "
                    f"{again_at:.3f}; child {child} {why}"
                )
    for ended in kills:
        index = ended.index
        window.kills_while_starting += index not in ready
        window.kills_mid_send += bool(started[index] - returned[index])
        window.kills_in_gap += any(not records[index, row] for row in returned[index])
    return window


def test_a_record_torn_by_a_kill_is_set_apart_and_the_next_one_still_reads(tmp_path: Path) -> None:
    """A child killed part-way through its journal write leaves a record without its end mark; the record
    written after it by another child must still read whole, and the torn one must not pass for an event."""
    journal = tmp_path / "journal.txt"
    torn = "\nC 3 1700000000.1"
    whole = "\nS 4 1700000000.250000 r1 email .\n"
    journal.write_text("\nY 3 1700000000.000000 .\n" + torn + whole + "\nB 5 1700000001.0 .\n")
    written = read_journal(journal)
    assert written.torn == ["C 3 1700000000.1"]
    assert written.events == [
        JournalEvent("Y", 3, 1700000000.0, ()),
        JournalEvent("S", 4, 1700000000.25, ("r1", "email")),
        JournalEvent("B", 5, 1700000001.0, ()),
    ]

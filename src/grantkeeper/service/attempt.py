"""One refresh attempt for one leased connection: call the provider, apply the policy, commit it all at once.

Expected failures are values all the way through; only a store that stays down makes an attempt give up, and
then it says so in the log (without tokens) and the lease simply expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ParamSpec, TypeVar

from grantkeeper.core.classify import inactive_refresh_token, missing_refresh_token
from grantkeeper.core.machine import step
from grantkeeper.core.model import DisconnectReason, ErrorInfo, Notify, Outcome, OutcomeClass, Transition
from grantkeeper.core.notices import render_notice
from grantkeeper.core.policy import Policy
from grantkeeper.core.quick_init import quick_init
from grantkeeper.ports import (
    AttemptCommit,
    AttemptRecord,
    ClaimedConnection,
    Clock,
    ConnectionStore,
    NotificationContent,
    StoreUnavailableError,
    TokenEndpoint,
    TokenStatus,
    UnreadableSecretError,
)
from grantkeeper.service.starting import StartGate

log = logging.getLogger("grantkeeper.refresh")
P = ParamSpec("P")
R = TypeVar("R")

#: Waits between commit retries while the database does not answer; the last one repeats until
#: ``commit_patience`` runs out, because a rotated refresh token exists only in memory until it lands. Kept
#: well under ``outage.DEFAULT_SETTLE``, so the answer lands before other workers retake the row.
_COMMIT_RETRY_DELAYS = (0.1, 0.2, 0.5)
#: Of the attempt budget, what is not the request's own timeouts (bootstrap adds this to them).
START_MARGIN = timedelta(seconds=5)
#: Once the worker is told to stop, how much longer an answer held in memory may wait for the database. Well
#: inside the grace orchestrators give before SIGKILL (Kubernetes 30 s, systemd 90 s): a SIGTERM during an
#: outage must stop the worker, not leave it retrying for ``commit_patience``.
SHUTDOWN_COMMIT_GRACE = timedelta(seconds=10)


@quick_init
@dataclass(frozen=True)
class AttemptResult:
    """What a cycle report needs to know about one attempt (never a token)."""

    claim: ClaimedConnection
    outcome: Outcome
    transition: Transition
    notifications: tuple[NotificationContent, ...]
    is_committed: bool
    duration: timedelta = timedelta(0)
    started_at: datetime | None = None

    @property
    def lag(self) -> timedelta | None:
        """How late the attempt started after the connection came due: are the workers keeping up?"""
        due_at = self.claim.state.next_attempt_at
        if self.started_at is None or due_at is None:
            return None
        return max(self.started_at - due_at, timedelta(0))

    @property
    def is_lost_rotation(self) -> bool:
        """This attempt found that an earlier one's rotated refresh token was lost with its worker."""
        state = self.transition.state
        return self.claim.state.disconnect_reason is None and (
            state.disconnect_reason is DisconnectReason.LOST_ROTATION
        )

    @property
    def is_recovered_in_flight(self) -> bool:
        """An earlier attempt's answer was lost with its worker, and this retry got fresh tokens anyway."""
        return self.claim.state.in_flight_since is not None and self.outcome.klass is OutcomeClass.SUCCESS


def notification_contents(
    claim: ClaimedConnection, transition: Transition
) -> tuple[NotificationContent, ...]:
    """In-app content for each ``Notify`` effect, and whether the policy asks for an email too."""
    contents = []
    for notify in transition.notifications:
        contents.append(_content(claim, transition, notify))
    return tuple(contents)


def _content(claim: ClaimedConnection, transition: Transition, notify: Notify) -> NotificationContent:
    text = render_notice(notify.type, claim.provider.name, error=transition.state.last_error)
    metadata = {
        "provider": claim.provider.name,
        "connection_id": claim.connection_id,
        "user_id": claim.user_id,
    }
    # the store sends email only where it finds an address (the connection's, else the user record's)
    channels = ("email",) if notify.email else ()
    return NotificationContent(notify.type, text.title, text.message, metadata, channels)


class AttemptRunner:
    """Runs attempts for leased connections; shared by the scheduler, the CLI and (later) token vending."""

    def __init__(
        self,
        store: ConnectionStore,
        endpoint: TokenEndpoint,
        clock: Clock,
        policy: Policy,
        rng: random.Random,
        *,
        max_attempt_duration: timedelta,
        on_attempt: Callable[[AttemptResult], None] | None = None,
        commit_patience: timedelta = timedelta(minutes=10),
        on_store_unavailable: Callable[[], None] | None = None,
    ) -> None:
        self._on_attempt = on_attempt
        self._commit_patience = commit_patience
        # One thread for the refresh path's store writes: on SQLite they never wait on each other's write lock
        # (one writer at a time anyway), and on PostgreSQL batches grow instead of round trips multiplying.
        self.store_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grantkeeper-store")
        self._on_store_unavailable = on_store_unavailable or (lambda: None)
        self._stop_deadline: float | None = None  # monotonic; set once the worker is stopping
        # connections with an attempt of this runner under way, from its claim to its commit (``run``)
        self._running: set[str] = set()
        self.gate = StartGate(
            store, clock, max_attempt_duration, self.store_executor, on_unavailable=self._on_store_unavailable
        )
        self._store = store
        self._endpoint = endpoint
        self._clock = clock
        self._policy = policy
        self._rng = rng
        self._max_attempt_duration = max_attempt_duration
        # the request itself (connect + read timeouts); the rest of the attempt budget covers recording the
        # start and the commit (bootstrap gives the budget 5 s beyond the timeouts)
        self._request_budget = max_attempt_duration - min(START_MARGIN, max_attempt_duration / 5)

    async def run(
        self,
        claim: ClaimedConnection,
        on_answer: Callable[[], None] | None = None,
        before_request: Callable[[], Awaitable[None]] | None = None,
    ) -> AttemptResult | None:
        """Refresh one leased connection; None when its lease ran out before it could start.

        ``on_answer`` is called once the provider has answered, before the commit: a cycle frees the
        attempt's concurrency slot there, so the next start joins this commit's transaction instead of
        waiting for the one after it. ``before_request`` is awaited after the start is recorded and before
        the request leaves: a cycle that starts attempts ahead of their request slot waits for it there.

        A claim of a connection this runner already has an attempt for is skipped (None, nothing written):
        it can only be the same lease again, handed out anew after the database lost the first claim in a
        crash (ADR 18), so its version and owner are the first one's and both would pass the start's fence.
        """
        connection_id = claim.connection_id
        if connection_id in self._running:
            log.warning(
                "connection %s was claimed again while its attempt is under way; skipping the new claim",
                connection_id,
                extra={"action": "claim_duplicate", "connection_id": connection_id},
            )
            return None
        self._running.add(connection_id)
        try:
            return await self._run(claim, on_answer, before_request)
        finally:
            self._running.discard(connection_id)

    async def _run(
        self,
        claim: ClaimedConnection,
        on_answer: Callable[[], None] | None,
        before_request: Callable[[], Awaitable[None]] | None,
    ) -> AttemptResult | None:
        if self._clock.now() >= claim.lease_expires_at:
            # Another worker may have the row by now (nothing to release: it is free). A lease that is still
            # live, however little of it is left, is enough: the start replaces it with the attempt's own
            # deadline, fenced on version and owner, so a claim taken meanwhile makes the start fail (ADR 19).
            return None
        try:
            refresh_token = claim.refresh_token  # opened here, not in the claim (see ``ports.Secret``)
        except UnreadableSecretError:  # the store logs it by id when it sets the row aside
            await self.in_store_thread(self._store.park_unreadable, claim, self._clock.now())
            return None
        started = await self._start(claim)
        if started is None:
            return None
        if before_request is not None:
            try:
                await before_request()
                # the database may have gone since the start: a worker holding answers it cannot store
                # sends nothing new, started ahead or not (``StartGate.hold``)
                await self.gate.wait_open()
            except asyncio.CancelledError:
                # nothing was sent: give the row back as it was, rather than leave it looking like an
                # answer lost in flight (best effort: a second cancellation or a database away skips it)
                with contextlib.suppress(Exception):
                    await self.in_store_thread(self._store.release, started)
                raise
            if self._clock.now() + self._request_budget >= started.lease_expires_at:
                # the wait for the slot (a slow provider) ate the attempt's budget, but nothing was sent:
                # record the start anew, with a whole deadline, instead of giving the row up (ADR 21)
                started = await self._start(claim)
                if started is None:
                    return None
        if self._clock.now() + self._request_budget >= started.lease_expires_at:
            # Recording the start took so long (a slow transaction, a busy loop) that the request could
            # outlive its lease: give it back unsent rather than risk a second worker's refresh beside it.
            await self.in_store_thread(self._store.release, started)
            return None
        return await self._attempt(started, refresh_token, on_answer)

    async def _start(self, claim: ClaimedConnection) -> ClaimedConnection | None:
        """Record the attempt in flight, within the provider's limits; None (logged) if the lease is lost."""
        started = await self.gate.start(claim)
        if started is None:
            # the start's fence failed: another worker took the row after the claim's lease ran out, or a
            # crash of the database undid the claim (ADR 18); either way nothing was sent
            log.warning(
                "lease lost before start for %s; nothing was sent",
                claim.connection_id,
                extra={"action": "start_refused", "connection_id": claim.connection_id},
            )
        return started

    def stop_committing_after(self, grace: timedelta = SHUTDOWN_COMMIT_GRACE) -> None:
        """The worker is stopping: answers held for an unreachable database get ``grace`` more to land, then
        are given up (logged as ``commit_abandoned``; the next attempt tells whether a rotation was lost)."""
        deadline = time.monotonic() + grace.total_seconds()
        self._stop_deadline = deadline if self._stop_deadline is None else min(self._stop_deadline, deadline)

    def close(self) -> None:
        """Let the store thread go (it ends once idle); the runner is not used afterwards."""
        self.store_executor.shutdown(wait=False)

    async def in_store_thread(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store call in the refresh path's store thread (see ``store_executor``)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.store_executor, functools.partial(call, *args, **kwargs))

    async def _attempt(
        self,
        claim: ClaimedConnection,
        refresh_token: str | None,
        on_answer: Callable[[], None] | None = None,
    ) -> AttemptResult:
        started_at = self._clock.now()
        started = time.monotonic()
        outcome = await self._call_provider(claim, refresh_token)
        duration = timedelta(seconds=time.monotonic() - started)
        if on_answer is not None:
            on_answer()
        now = self._clock.now()
        transition = step(claim.state, outcome, self._policy, now, self._rng)
        notifications = notification_contents(claim, transition)
        record = AttemptRecord(
            connection_id=claim.connection_id,
            attempted_at=started_at,
            outcome=outcome.klass,
            http_status=outcome.http_status,
            error_code=outcome.error.code if outcome.error else None,
            duration=duration,
        )
        commit = AttemptCommit(claim, outcome, transition, record, notifications)
        is_committed = await self._commit(commit)
        result = AttemptResult(
            claim, outcome, transition, notifications, is_committed, duration, started_at=started_at
        )
        if is_committed:
            _report_in_flight(result)
        if self._on_attempt is not None:
            try:
                self._on_attempt(result)
            except Exception:  # an observer (metrics) must never fail an attempt that is already committed
                log.exception("attempt observer failed", extra={"action": "observer_failed"})
        return result

    async def _call_provider(self, claim: ClaimedConnection, refresh_token: str | None) -> Outcome:
        if not refresh_token:
            return missing_refresh_token()
        if claim.state.in_flight_since is not None and claim.provider.introspection_url:
            doubt = await self._resolve_doubt(claim, refresh_token)
            if doubt is not None:
                return doubt
        return await self._endpoint.refresh(claim.provider, refresh_token)

    async def _resolve_doubt(self, claim: ClaimedConnection, refresh_token: str) -> Outcome | None:
        """An earlier attempt's answer was lost: ask the provider whether the stored refresh token still
        works before sending it (ADR 12). A dead one is the lost rotation, named without the request that a
        strict provider would take as a reuse; a live one (never rotated, or inside a grace window) is
        refreshed as usual, and so is one the provider could not tell us about (as before introspection).
        Returns the outcome when no refresh may be sent, else None."""
        checked = await self._endpoint.introspect(claim.provider, refresh_token)
        if checked.status is TokenStatus.INACTIVE:
            return inactive_refresh_token()
        deadline = claim.lease_expires_at if claim.started_at is not None else None
        if deadline is not None and self._clock.now() + self._request_budget >= deadline:
            # the introspection ate the attempt's budget: a refresh now could outlive the lease
            error = ErrorInfo("introspection_slow", "introspection took the attempt's time; retrying later")
            return Outcome(OutcomeClass.TRANSIENT, None, error)
        return None

    async def _commit(self, commit: AttemptCommit) -> bool:
        """Commit, retrying while the database is unreachable: a rotated refresh token exists only in memory
        until this succeeds. Meanwhile the start gate is held, so no new refresh starts (and no new answer
        piles up) until the database answers; after ``commit_patience`` the attempt is given up, loudly.
        Any other failure (a bug, a value the database refuses) is this attempt's alone: logged, not retried,
        and the gate stays open for the others."""
        connection_id = commit.claim.connection_id
        give_up_at = time.monotonic() + self._commit_patience.total_seconds()
        failures = 0
        try:
            while True:
                try:
                    is_committed = await self.gate.commit(commit)
                except StoreUnavailableError as exc:
                    self._on_store_unavailable()
                    if failures == 0:
                        self.gate.hold()
                    failures += 1
                    delay = _COMMIT_RETRY_DELAYS[min(failures - 1, len(_COMMIT_RETRY_DELAYS) - 1)]
                    stop_at = self._stop_deadline
                    limit = give_up_at if stop_at is None else min(give_up_at, stop_at)
                    if time.monotonic() + delay > limit:
                        why = "the database stayed away" if stop_at is None else "the worker is stopping"
                        _log_abandoned(connection_id, f"{why}; {failures} tries: {exc}")
                        return False
                    # the first failure and then one line a minute: retries come twice a second per answer
                    level = logging.WARNING if failures == 1 or failures % 120 == 0 else logging.DEBUG
                    log.log(
                        level,
                        "commit failed for %s (database unavailable: %s); keeping the answer in memory and "
                        "retrying in %.1fs (try %d)",
                        connection_id,
                        exc,
                        delay,
                        failures,
                        extra={"action": "commit_failed", "connection_id": connection_id},
                    )
                    await asyncio.sleep(delay)
                    continue
                except Exception as exc:  # not the database being away: retrying would not help
                    _log_abandoned(connection_id, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                    return False
                if failures:
                    log.info(
                        "committed %s after %d failed tries",
                        connection_id,
                        failures,
                        extra={"action": "commit_recovered", "connection_id": connection_id},
                    )
                if not is_committed:
                    log.warning(
                        "lease lost before commit for %s",
                        connection_id,
                        extra={"action": "lease_lost", "connection_id": connection_id},
                    )
                return is_committed
        except asyncio.CancelledError:
            _log_abandoned(connection_id, "the worker is stopping")
            raise
        finally:
            if failures:
                self.gate.release_hold()  # also when cancelled: a held gate would stop this worker for good


def _log_abandoned(connection_id: str, why: str) -> None:
    log.error(
        "gave up committing %s (%s); its answer is lost and the next attempt will tell whether the "
        "provider rotated the token",
        connection_id,
        why,
        extra={"action": "commit_abandoned", "connection_id": connection_id},
    )


def _report_in_flight(result: AttemptResult) -> None:
    """Tell the operator what became of an attempt whose worker died before recording its answer."""
    connection_id = result.claim.connection_id
    if result.is_lost_rotation:
        log.error(
            "lost rotation for %s (%s): a worker died after sending a refresh at %s and the provider now "
            "refuses the stored refresh token; the user must reconnect",
            connection_id,
            result.claim.provider.name,
            result.claim.state.in_flight_since,
            extra={"action": "lost_rotation", "connection_id": connection_id},
        )
    elif result.is_recovered_in_flight:
        log.info(
            "recovered %s: an attempt started at %s ended with its worker, unanswered (it may not have been "
            "sent: a start is recorded before the request waits for a slot), and the retry succeeded",
            connection_id,
            result.claim.state.in_flight_since,
            extra={"action": "in_flight_recovered", "connection_id": connection_id},
        )

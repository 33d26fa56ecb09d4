"""The event loop of the simulation: connections bucketed by the poll that claims them, one ``step`` each.

Per attempt the loop does the least it can (one draw, one ``step``, one append), because a week of one-hour
tokens for 100,000 connections is some 20 million attempts. Everything a report needs is counted in
``Tally``; nothing per attempt is kept.
"""

from __future__ import annotations

import heapq
import math
import random
from datetime import UTC, datetime, timedelta

from grantkeeper.core.machine import step
from grantkeeper.core.model import ConnectionState, ConnectionStatus, Effect, Notify, RetryProviderNow
from grantkeeper.core.policy import probe_horizon
from grantkeeper.service.simulation_config import SimulationConfig
from grantkeeper.service.simulation_faults import ProviderAnswers, success
from grantkeeper.service.simulation_tally import (
    AUTH_CAUSES,
    OUTAGE,
    RATE_LIMITED,
    REVOKED,
    SERVER_ERROR,
    SPURIOUS_INVALID_GRANT,
    SUCCEEDED,
    TIMED_OUT,
    Tally,
    Truth,
)

#: The instant virtual time starts at; any instant would do, the policy only looks at differences.
SIMULATION_START_AT = datetime(2030, 1, 1, tzinfo=UTC)
_CONNECTED = ConnectionStatus.CONNECTED
#: How many refresh periods of healthy history each connection gets before the start.
WARMUP_PERIODS = 3
#: The entry a poll's bucket holds when that poll must also run the scheduler's provider probe.
PROBE = -1


def seeded(seed: int, stream: str) -> random.Random:
    """Independent, reproducible random streams, so turning one fault up leaves the others' draws alone."""
    return random.Random(f"{seed}:{stream}")  # noqa: S311 - simulation, not security


class TickQueue:
    """Connections bucketed by the poll that will claim them; a heap orders the buckets.

    A poll takes every connection due at its instant, so bucketing by poll is exact and makes scheduling
    one append instead of a heap push per attempt.
    """

    def __init__(self, poll_seconds: float) -> None:
        self._poll_seconds = poll_seconds
        self._buckets: dict[int, list[int]] = {}
        self._ticks: list[int] = []

    def push(self, index: int, due_seconds: float, after_tick: int) -> int:
        """File ``index`` under the first poll at or after ``due_seconds`` (and after ``after_tick``)."""
        tick = math.ceil(due_seconds / self._poll_seconds)
        if tick <= after_tick:
            tick = after_tick + 1  # a poll takes only what was due when it began
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = [index]
            heapq.heappush(self._ticks, tick)
        else:
            bucket.append(index)
        return tick

    def pop(self) -> tuple[int, list[int]] | None:
        if not self._ticks:
            return None
        tick = heapq.heappop(self._ticks)
        return tick, self._buckets.pop(tick)


class Simulation:
    """One run: the connections' states, the truth about their grants, the queue and the tally."""

    def __init__(self, config: SimulationConfig, shard: int = 0, count: int | None = None) -> None:
        """Simulate ``count`` connections (all by default) as shard ``shard``, with its share of the fleet."""
        self.config = config
        count = config.simulated_connections if count is None else count
        self._shard = shard
        self._start_at = SIMULATION_START_AT
        self._poll_seconds = config.poll_interval.total_seconds()
        self._end_seconds = config.duration.total_seconds()
        self._answers = ProviderAnswers.build(config.faults, self._start_at)
        self._outages = [
            (o.start.total_seconds(), (o.start + o.duration).total_seconds()) for o in config.faults.outages
        ]
        self._fault_rng = self._rng("faults")
        self._jitter_rng = self._rng("jitter")
        share = count / config.simulated_connections / config.scale
        self._seconds_per_slot, self._rate = _capacity(config, share)
        self._free_at_seconds = 0.0
        self._is_overloaded = False
        self.tally = Tally(config, self._end_seconds, count)
        self._queue = TickQueue(self._poll_seconds)
        self._states: list[ConnectionState] = []
        self._due_seconds: list[float] = []
        self._tick_of: list[int] = []  # the poll each connection is filed under; older filings are stale
        # connections backing off from transient failures, for the scheduler's probes and provider wake-ups
        self._backing_off: set[int] = set()
        self._backoff_heap: list[tuple[float, int]] = []  # soonest retry first, for probes
        self._wake_heap: list[tuple[float, int]] = []  # furthest retry first (due negated), for wake-ups
        self._probe_seconds = probe_horizon(start_at := SIMULATION_START_AT, config.policy) - start_at
        self._cycle_seconds = config.policy.cycle_interval.total_seconds()
        self._is_probe_filed = False
        self._revoked_seconds = self._draw_revocations(count)
        self._first_rejected_seconds: dict[int, float] = {}
        self._populate(count)

    def _rng(self, stream: str) -> random.Random:
        return seeded(self.config.seed, f"{stream}:{self._shard}")

    def _draw_revocations(self, count: int) -> list[float]:
        """When each grant is revoked, in seconds from the start; infinity for never within the run."""
        hazard = self.config.faults.revocation_hazard_per_second()
        if hazard == 0.0:
            return [math.inf] * count
        if math.isinf(hazard):
            return [0.0] * count
        rng = self._rng("revocations")
        draws = (rng.expovariate(hazard) for _ in range(count))
        return [at if at <= self._end_seconds else math.inf for at in draws]

    def _populate(self, count: int) -> None:
        """Start in steady state: each connection as the real policy left it after a few healthy refreshes.

        Everyone starting at once would put the whole fleet into the first poll, and a uniform spread over a
        guessed refresh period still bunches up where the guess and the policy's real (jittered) period
        disagree. So each connection is refreshed successfully by ``step`` from a uniform instant a few
        periods back until its next refresh falls after the start, which is the policy's own steady state.
        """
        policy, start_at = self.config.policy, self._start_at
        rng = self._rng("setup")
        lifetime = self.config.token_lifetime
        first = step(ConnectionState(), success(start_at, lifetime), policy, start_at, rng).state
        warmup = (first.next_attempt_at or start_at + lifetime) - start_at
        for index in range(count):
            at = start_at - WARMUP_PERIODS * warmup * rng.random()
            state = ConnectionState()
            while at < start_at:
                state = step(state, success(at, lifetime), policy, at, rng).state
                at = state.next_attempt_at or start_at
            self._states.append(state)
            due_seconds = (at - start_at).total_seconds()
            self._due_seconds.append(due_seconds)
            self._tick_of.append(self._queue.push(index, due_seconds, after_tick=-1))

    def execute(self) -> None:
        last_tick = math.floor(self._end_seconds / self._poll_seconds)
        while (claimed := self._queue.pop()) is not None:
            tick, filed = claimed
            if tick > last_tick:
                break
            tick_of = self._tick_of
            # a wake-up may file a connection twice in one poll; the poll still takes it once
            batch = list(dict.fromkeys(index for index in filed if index >= 0 and tick_of[index] == tick))
            if PROBE in filed:
                self._probe(tick, batch)
            if not batch:
                continue
            if self._is_overloaded:
                self.tally.backlog_at_end += len(batch)
            else:
                self._run_poll(tick, batch)

    def _run_poll(self, tick: int, batch: list[int]) -> None:
        """Refresh what one poll claimed: all at the poll's instant, or as the fleet's slots free up.

        With a limited fleet or provider the batch is taken a second's worth at a time (the attempts the
        slots start per second at the nominal latency, or the rate allowed if that is lower); a chunk shares
        its start instant, and the next chunk starts when the chunk's slot time (latency per attempt, read
        timeout per timeout) has been served, and no sooner than the rate allows.
        """
        poll_at = tick * self._poll_seconds
        seconds_per_slot, rate = self._seconds_per_slot, self._rate
        if seconds_per_slot is None and rate is None:
            self._attempt(tick, batch, poll_at)
            return
        latency, extra = (
            self.tally.latency_seconds,
            self.tally.read_timeout_seconds - self.tally.latency_seconds,
        )
        # attempts started per second: as many as the slots start at the latency, or all without slots
        per_second = len(batch)
        if seconds_per_slot is not None:
            per_second = max(1, int(1 / (latency * seconds_per_slot)))
        if rate is not None:
            per_second = min(per_second, max(1, int(rate)))
        for position in range(0, len(batch), per_second):
            at = max(poll_at, self._free_at_seconds)
            if at > self._end_seconds:
                self.tally.backlog_at_end += len(batch) - position
                self._is_overloaded = True
                return
            chunk = batch[position : position + per_second]
            timeouts = self._attempt(tick, chunk, at)
            busy = 0.0
            if seconds_per_slot is not None:
                busy = (len(chunk) * latency + timeouts * extra) * seconds_per_slot
            if rate is not None:
                busy = max(busy, len(chunk) / rate)
            self._free_at_seconds = at + busy

    def _attempt(self, tick: int, indices: list[int], at: float) -> int:
        """Refresh ``indices`` at the instant ``at``; returns how many timed out.

        This is the hot loop, so it reads attributes into locals once and leaves rare work to helpers.
        """
        answers, policy, jitter, tally = self._answers, self.config.policy, self._jitter_rng, self.tally
        states, due_seconds, revoked_seconds = self._states, self._due_seconds, self._revoked_seconds
        draw, push, start_at = self._fault_rng.random, self._queue.push, self._start_at
        lags, causes, due_by_minute, timeouts_by_due_minute = (
            tally.lags,
            tally.causes,
            tally.due_by_minute,
            tally.timeouts_by_due_minute,
        )
        rate_limit_bound, server_error_bound, timeout_bound, invalid_grant_bound = answers.bounds
        now = start_at + timedelta(seconds=at)
        succeeded = success(now, self.config.token_lifetime)
        is_outage = any(start <= at < end for start, end in self._outages)
        timeouts_before = causes[TIMED_OUT]
        for index in indices:
            due_at = due_seconds[index]
            lag = at - due_at
            lag_key = int(lag * 10) if lag < 600 else int(lag) * 10
            lags[lag_key] = lags.get(lag_key, 0) + 1
            due_by_minute[int(due_at // 60)] += 1
            roll = draw()
            if is_outage:
                cause, outcome = OUTAGE, answers.server_error
            elif roll >= invalid_grant_bound:
                if revoked_seconds[index] <= at:
                    cause, outcome = REVOKED, answers.rejected
                else:
                    cause, outcome = SUCCEEDED, succeeded
            elif roll < rate_limit_bound:
                cause, outcome = RATE_LIMITED, answers.rate_limited
            elif roll < server_error_bound:
                cause, outcome = SERVER_ERROR, answers.server_error
            elif roll < timeout_bound:
                cause, outcome = TIMED_OUT, answers.timed_out
                timeouts_by_due_minute[int(due_at // 60)] += 1
            else:
                cause, outcome = SPURIOUS_INVALID_GRANT, answers.rejected
            causes[cause] += 1
            transition = step(states[index], outcome, policy, now, jitter)
            state = transition.state
            states[index] = state
            if transition.effects:
                self._record_effects(index, transition.effects, tick, at)
            if cause != SUCCEEDED and not self._record_failure(index, cause, state, at):
                continue
            next_attempt_at = state.next_attempt_at
            if next_attempt_at is not None:
                due = (next_attempt_at - start_at).total_seconds()
                due_seconds[index] = due
                self._tick_of[index] = push(index, due, tick)
                if cause != SUCCEEDED:
                    self._back_off(index, due, tick)
            if cause == SUCCEEDED and index in self._backing_off:
                self._backing_off.discard(index)
        timeouts = causes[TIMED_OUT] - timeouts_before
        tally.attempts_by_minute[int(at // 60)] += len(indices)
        return timeouts

    def _record_failure(self, index: int, cause: int, state: ConnectionState, at: float) -> bool:
        """Count streaks and disconnections; says whether the connection is still attempted (connected)."""
        if state.status is not _CONNECTED:
            self._backing_off.discard(index)
            self._record_disconnection(index, at)
            return False
        if cause in AUTH_CAUSES:
            if state.consecutive_failures == 1:
                self._first_rejected_seconds[index] = at
            return True
        streak = state.consecutive_transient_failures
        if streak == 1:
            self.tally.transient_streaks += 1
        if streak == self.config.policy.rate_limit_notice_threshold:
            self.tally.transient_streaks_reaching_notice += 1
        return True

    def _record_effects(self, index: int, effects: tuple[Effect, ...], tick: int, at: float) -> None:
        for effect in effects:
            if isinstance(effect, Notify):
                self.tally.notify(index, effect)
            elif isinstance(effect, RetryProviderNow):
                self._wake(index, tick, at, effect.limit)

    # --- the scheduler's provider recovery, as the real store does it -----------------------------------

    def _back_off(self, index: int, due: float, tick: int) -> None:
        """A transient failure: remember it for probes, and file a probe check a cycle ahead if none is."""
        self._backing_off.add(index)
        heapq.heappush(self._backoff_heap, (due, index))
        heapq.heappush(self._wake_heap, (-due, index))
        if not self._is_probe_filed:
            self._queue.push(PROBE, tick * self._poll_seconds + self._cycle_seconds, tick)
            self._is_probe_filed = True

    def _wake(self, waker: int, tick: int, at: float, limit: int) -> None:
        """``RetryProviderNow``: up to ``limit`` other connections backing off are due at the next poll, those
        whose retry lies furthest ahead first (``commits.retry_provider_now``)."""
        heap, backing_off, due_seconds = self._wake_heap, self._backing_off, self._due_seconds
        woken = 0
        while heap and woken < limit:
            negated_due, index = heap[0]
            due = -negated_due
            if index not in backing_off or due != due_seconds[index] or index == waker:
                heapq.heappop(heap)  # stale: recovered, disconnected or rescheduled since
                continue
            if due <= at:
                break  # the furthest retry is due already, and so is every other
            heapq.heappop(heap)
            due_seconds[index] = at
            self._tick_of[index] = self._queue.push(index, at, tick)
            woken += 1
        if len(heap) > 4 * len(backing_off) + 1024:  # stale entries pile up below the top; drop them
            self._wake_heap = [(d, i) for d, i in heap if i in backing_off and -d == due_seconds[i]]
            heapq.heapify(self._wake_heap)

    def _probe(self, tick: int, batch: list[int]) -> None:
        """``schedule_probes``: if no backing-off connection retries within the horizon, one does now."""
        self._is_probe_filed = False
        at = tick * self._poll_seconds
        heap, backing_off, due_seconds = self._backoff_heap, self._backing_off, self._due_seconds
        while heap and (heap[0][1] not in backing_off or heap[0][0] != due_seconds[heap[0][1]]):
            heapq.heappop(heap)  # stale: recovered, disconnected or rescheduled since
        if not heap:
            return
        due, index = heap[0]
        if due > at + self._probe_seconds.total_seconds():
            due_seconds[index] = at
            self._tick_of[index] = tick
            batch.append(index)
        self._queue.push(PROBE, at + self._cycle_seconds, tick)
        self._is_probe_filed = True

    def _record_disconnection(self, index: int, at_seconds: float) -> None:
        revoked_seconds = self._revoked_seconds[index]
        if revoked_seconds > at_seconds:
            self.tally.false_disconnections += 1
            return
        first_rejected = self._first_rejected_seconds.pop(index, at_seconds)
        self.tally.record_true_disconnection(at_seconds - revoked_seconds, at_seconds - first_rejected)

    def result(self) -> tuple[Tally, Truth]:
        """The tally, and what only the simulator knows: the grants revoked, and those still connected."""
        revoked = [
            state.status is _CONNECTED
            for state, revoked_seconds in zip(self._states, self._revoked_seconds, strict=True)
            if revoked_seconds <= self._end_seconds
        ]
        return self.tally, Truth(revocations=len(revoked), undetected_revocations=sum(revoked))


def _capacity(config: SimulationConfig, share: float) -> tuple[float | None, float | None]:
    """This shard's share of what bounds refreshing: seconds per slot (None: unbounded slots) and refreshes
    a second (None: no rate bound).

    Slots: the fleet's (``workers x concurrency``) or the provider's concurrency limit, whichever is fewer.
    Rate: the fleet's own (``workers x worker_rate``: each worker's CPU and database session) or the
    provider's rate limit, whichever is lower. The provider's limits hold for all workers together, as
    grantkeeper enforces them, so they bind an unlimited fleet too.
    """
    slots = []
    if config.workers is not None:
        slots.append(config.workers * config.concurrency * share)
    if config.provider_max_concurrency is not None:
        slots.append(config.provider_max_concurrency * share)
    rates = []
    if config.workers is not None and config.worker_rate is not None:
        rates.append(config.workers * config.worker_rate * share)
    if config.provider_rate_limit is not None:
        rates.append(config.provider_rate_limit * share)
    return (1.0 / min(slots) if slots else None), (min(rates) if rates else None)

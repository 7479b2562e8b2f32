"""The backend protocols: small stores, and the backends that bundle them.

- :class:`QueueStore`: deliveries (publish, claim, settle, heartbeat, wait, counts) and dead letters.
- :class:`StateStore`: the flows' key-value state (JSON text under namespace, group and key).
- :class:`LeaseStore`: leases (cron overlap locks) and small framework metadata (cron records).
- :class:`TraceStore`: run records grouped by trace id, with retention.
- :class:`HandleStore`: job handles: each event's status per subscriber, results, progress,
  idempotency keys, cancellation and the list of scheduled deliveries.
- :class:`TxStore`: the commit of a transactional step's attempt: its state writes, its emits and its
  acknowledgement together, fenced by the lease (exactly-once effects).

A :class:`Backend` is these six, :class:`.wait_store.WaitStore`, ``url``, ``open`` and ``close``: what the
router, workers, scheduler and CLI use. A :class:`CoreBackend` is the least a backend implements (queue, state);
:func:`motia_py.backends.compose.compose` (and the registry, on its own) completes one with lease and
trace stores built on its state store, a ``wait_any`` built on its per-step ``wait``, a transactional
store that is not atomic (:mod:`.derived_tx`) and a job-handle store (:mod:`.derived_handles`).

Rules every implementation keeps (the contract suite in ``tests/backends`` checks each of them):

- **Errors**: every method may raise :class:`motia_py.errors.BackendError` and nothing else; a driver's
  exception (sqlite3, redis) is translated at the boundary with ``raise BackendError(...) from exc``.
- **Time** comes from the clock injected through ``BackendOptions.clock`` (``time.time`` without one; the
  Redis backend then uses the server's ``TIME``, so that hosts with skewed clocks agree).
- **Text in, text out**: payloads, state values and metadata are opaque text, stored and compared
  byte for byte; nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from .records import (
    CancelResult,
    DeadLetter,
    Delivery,
    EventHandle,
    FlowControl,
    Outgoing,
    QueueStats,
    ScheduledDelivery,
    StateRead,
    StateWrite,
    StepQueueStats,
    TraceRun,
    TxResult,
)
from .wait_store import WaitStore as WaitStore


@runtime_checkable
class QueueStore(Protocol):
    """Deliveries of events to steps, and the dead-letter queue.

    A delivery is one (event, subscribing step) pair with its own attempts and lease. Its life:
    ``publish`` makes it *ready* (or *delayed* until its target's delay has passed); ``claim`` *leases*
    it to one worker for ``lease_s`` seconds and counts an attempt; then exactly one of ``complete``
    (done, publishing the handler's emits), ``retry`` (ready again after a delay) or ``dead_letter``
    (failed for good) ends the attempt.

    **Fencing.** ``complete``, ``retry``, ``dead_letter`` and ``extend`` act on a delivery only while the
    lease of *that attempt* (``delivery.id`` and ``delivery.attempt``) is held. Once a lease expires, the
    delivery is claimable again with ``attempt + 1`` (its ``first_delivered_at`` unchanged), and the calls
    of the old attempt become no-ops: ``complete`` returns False and publishes nothing, ``retry`` and
    ``dead_letter`` change nothing, ``extend`` skips it. A second ``complete`` of one attempt returns
    False too.

    **Attempts.** ``attempt`` is 1 on the first delivery and grows by one on every claim, whether the
    previous attempt ended by ``retry`` or by its lease expiring (a crashed worker's attempt counts).

    **Order.** ``claim`` hands out, oldest first: deliveries whose lease expired; then due standard
    deliveries in the order they became due, ties in publish order (the items of one ``publish`` call
    keep their order; a delayed or retried delivery joins the order at its due time, or at the first
    claim after it, as the backend's structures allow); then the heads of FIFO message groups, oldest
    head first.

    **FIFO.** Targets with ``fifo=True`` form one queue per (step, ``envelope.group_id``) (no group id is
    one group): only the group's oldest event is ever claimable, and only while no other event of the
    group is leased. A retried head stays the head (the group waits for it, through its delay); a
    dead-lettered head frees the group. A FIFO dead letter that is *replayed* comes back as a standard
    delivery with fresh attempts: it does not wait behind (or block) the group it left.

    **Priorities.** Every delivery has the ``priority`` of its target (an integer, default 0; higher is
    claimed first), kept through retries, hand backs, lease expiry and dead-letter replays. Among due
    standard deliveries a claim takes the highest priority first, and within one priority the order
    above (due time, then publish order). FIFO heads are taken highest head priority first, then oldest
    head first; a group's own order never changes (priorities only choose *between* groups).

    **Flow control** (``claim(..., control=)``, see :class:`~.records.FlowControl`): with a control, the
    claim checks every candidate, in the order above, atomically with the claim (every worker of every
    host shares the limits):

    - ``global_concurrency``: the step's *running* deliveries, i.e. leased with an unexpired lease (a
      delivery whose lease expired frees its slot, so a worker killed while holding one blocks nothing
      past its lease), plus the ones admitted by this claim, stay at or under it; once reached the claim
      stops.
    - ``key_concurrency``: the same count per ``concurrency_key`` value (``None`` counts as ``""``). A
      candidate whose key is at its limit is skipped and the claim goes on with the next one: a busy key
      never blocks other keys (no head-of-line blocking).
    - ``rate_limit``: at most ``rate_limit`` starts (claims) in any window of ``rate_period_s`` seconds
      (a sliding window, ending at the claim's *now*, read inside the claim's transaction), per step, or
      per ``rate_key`` value (``None`` counts as ``""``) when ``rate_keyed``. Every delivery the claim
      hands out counts as a start at the claim's *now*. Over the limit, an unkeyed claim stops; a keyed
      one skips the candidate and goes on.

    A candidate held back stays ready and keeps its place: it is not failed, retried or dead-lettered,
    and its attempt count does not change. Deliveries whose lease expired are still claimed first and
    alone, *without* the checks (they held a slot already, which their expiry freed), but their start is
    counted in the rate window. Every delivery handed out by a claim with a concurrency limit has
    ``limited=True``; ``complete``, ``retry``, ``dead_letter`` and ``hand_back`` of such a delivery wake
    the step's waiters (of every process), since a slot may have freed.
    """

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Enqueue one delivery per target of every item, atomically (all or none).

        A target's ``delay_s`` counts from now, by the backend's clock.
        """

    async def claim(self, step: str, limit: int, lease_s: float, *, control: FlowControl | None = None
                    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries of ``step`` for ``lease_s`` seconds (see the class for the
        order, the priorities and the flow ``control``); ``[]`` for an unknown step or a limit of 0. Two
        claimers never lease one delivery.

        A delivery whose previous lease expired is claimed **alone** (a batch of one, nothing else), with
        ``expired=True`` and ``last_owner`` = the :func:`worker_identity` that held that lease, so the
        worker can run it in isolation: if it kills its worker again, it takes no other delivery with it.
        Each claim records this backend's :func:`worker_identity` as the delivery's owner.
        """

    async def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Hand back claimed deliveries that never started: due at once, not leased, and their attempt
        **not counted** (the next claim gives the same ``attempt`` again). Lost leases are skipped."""

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """Acknowledge a delivery and publish the handler's emits in the same transaction (outbox).

        Returns False when the lease of this attempt was lost (another worker owns the delivery now,
        or it was already completed); nothing is published then.
        """

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """End a failed attempt: the delivery is due again after ``delay_s`` (0: at once), keeping its
        attempt count and ``first_delivered_at``. A no-op when the lease was lost. Publishes nothing:
        a failed attempt's emits are dropped by the caller."""

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str, attempts: int | None = None
                          ) -> None:
        """Move a delivery to the dead-letter queue (a no-op when the lease was lost).

        The dead letter keeps the delivery's id, step, envelope and attempt count (``attempts`` when
        given: the attempts that started, for a delivery dead-lettered without running), with
        ``failed_at`` = now and ``first_attempt_at`` = the delivery's ``first_delivered_at``.
        """

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> None:
        """Heartbeat: the leases of running deliveries expire ``lease_s`` seconds from now (lost
        attempts are skipped)."""

    async def wait(self, step: str, timeout_s: float, *, control: FlowControl | None = None) -> None:
        """Return when ``step`` may have a due delivery, or after ``timeout_s``.

        Consumes nothing and may return early. Returns at once when a delivery is already due, promptly
        after a publish for ``step`` (through any connection, other processes included), and when the
        next delayed delivery or lease expiry of the step falls due.

        With a flow ``control`` (the one the claims use), "due" means "a claim with that control would
        hand it out": deliveries held back by a limit do not make it return at once. It returns when the
        next rate window opens for a waiting delivery, when a lease expires, and promptly (other
        processes included) after a delivery claimed with ``limited=True`` ended.
        """

    async def stats(self) -> QueueStats:
        """Counts across every step: ready (due, not leased), delayed (not due yet; FIFO events behind a
        busy head count by their own due time), leased, dead; ``next_due_at`` is the earliest future
        due time or lease expiry; ``per_step`` counts each step's ready, delayed and leased ones."""

    async def step_stats(self, controls: Mapping[str, FlowControl] | None = None) -> dict[str, StepQueueStats]:
        """Per step that has any delivery or dead letter: ready, delayed, leased and dead counts and the
        time the oldest ready delivery became due (for ``motia-py queue``; not on the hot path).

        With ``controls`` (step -> its flow control), ``throttled`` counts, per limit (a name of
        :data:`~.records.THROTTLE_REASONS`), the ready deliveries that a claim with that control and no
        ``limit`` of its own would hold back now, each under the first limit it fails in the order
        global concurrency, key concurrency, rate (FIFO events behind their group's head are not counted:
        they wait for their group, not for a limit)."""

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, newest (latest ``failed_at``) first."""

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """One dead letter by id (the id of the delivery that failed), or None."""

    async def dlq_replay(self, dead_id: str) -> bool:
        """Put a dead letter back on its step's queue as a new standard delivery (attempt 1 on its next
        claim, even if it came from a FIFO queue) and remove it from the DLQ; False when unknown."""

    async def dlq_purge(self, dead_id: str) -> bool:
        """Delete a dead letter; False when unknown."""


@runtime_checkable
class StateStore(Protocol):
    """Key-value state: JSON text at (namespace, group, key).

    Namespaces are the flows' state namespaces; namespaces whose name starts with ``__motia_py`` are
    reserved for motia-py's own records (see :mod:`motia_py.backends.derived`). Writes are durable as
    the backend is (a memory backend's die with its process) and visible to every process sharing it.
    """

    async def state_get(self, namespace: str, group: str, key: str) -> str | None:
        """The JSON text stored at (namespace, group, key), or None."""

    async def state_set(self, namespace: str, group: str, key: str, value_json: str) -> None:
        """Store JSON text (replacing any value)."""

    async def state_delete(self, namespace: str, group: str, key: str) -> bool:
        """Delete a key; False when it was absent."""

    async def state_items(self, namespace: str, group: str) -> dict[str, str]:
        """Every key of a group with its JSON text (``{}`` for an empty or unknown group)."""

    async def state_groups(self, namespace: str) -> list[str]:
        """The groups of a namespace that hold at least one key, sorted."""

    async def state_clear(self, namespace: str, group: str) -> None:
        """Delete every key of a group."""

    async def state_cas(
        self, namespace: str, group: str, key: str, expected_json: str | None, new_json: str | None
    ) -> bool:
        """Compare-and-set: store ``new_json`` (delete when None) only if the current value is
        ``expected_json`` (None: absent), compared as text. True when it was stored.

        Atomic against every other writer of the key, in this process or any other sharing the
        backend: of many concurrent calls with the same ``expected_json``, exactly one wins.
        """


@runtime_checkable
class LeaseStore(Protocol):
    """Leases (time-limited locks with an owner) and small framework metadata.

    Keys are opaque text built by :mod:`motia_py.meta_keys`. Lease keys and metadata keys are separate
    spaces: a lease named ``k`` and a metadata record named ``k`` never affect each other. Lease expiry
    is measured on the backend's clock. Metadata never expires.
    """

    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take the lease on ``key`` for ``ttl_s`` seconds: True when it was free, expired or already held
        by ``owner`` (then it is refreshed: it expires ``ttl_s`` seconds from now); False while another
        owner holds it. Of many concurrent takers of a free lease, exactly one wins."""

    async def release(self, key: str, owner: str) -> None:
        """Give up a lease held by ``owner`` (a no-op when another owner holds it, or nobody)."""

    async def meta_get(self, key: str) -> str | None:
        """Small framework metadata (e.g. a cron step's last run), as text; None when absent."""

    async def meta_set(self, key: str, value: str) -> None:
        """Store framework metadata (replacing any value)."""

    async def meta_cas(self, key: str, expected: str | None, new: str) -> bool:
        """Compare-and-set: store ``new`` only if the current value is ``expected`` (None: absent),
        compared as text; True when it was stored.

        Atomic against every other writer, in this process or any other sharing the backend: of many
        concurrent calls with the same ``expected``, exactly one wins. The cron scheduler advances each
        step's last fired tick with it, so that a tick fires once however many schedulers race for it.
        """


@runtime_checkable
class TraceStore(Protocol):
    """Run records (JSON text) grouped by trace id, for ``motia-py trace`` and the workbench.

    A trace's *activity* is the latest ``started_at`` among its runs. Traces are diagnostics kept by
    retention, not a record of delivery: ``traces_prune`` need not be atomic with concurrent
    ``traces_add`` calls (a run added to a trace while it is pruned may go with it).
    """

    async def traces_add(self, runs: Sequence[TraceRun]) -> None:
        """Store run records (appended to their traces, in the order given)."""

    async def traces_get(self, trace_id: str) -> list[str]:
        """Every run record of one trace, in the order they were added; ``[]`` when unknown."""

    async def traces_recent(self, limit: int) -> list[str]:
        """Up to ``limit`` trace ids, the most recently active first."""

    async def traces_prune(self, before: float, keep: int) -> int:
        """Drop the traces last active before ``before``, and all but the ``keep`` most recently active;
        return how many traces were dropped."""


@runtime_checkable
class HandleStore(Protocol):
    """Job handles: every event can be looked up, awaited, deduplicated and cancelled.

    A *handle* is an event with one :class:`~.records.StepHandle` per subscribing step (the targets it
    was published to). Rules every implementation keeps:

    - **States.** A delivery that still exists is ``running`` while leased (its lease may have expired
      with its worker), ``retrying`` once an attempt failed, ``scheduled`` while not due and never
      attempted, else ``queued``. Its end (``complete``, ``complete_with_result``, ``complete_tx``,
      ``complete_tx_with_result``, ``dead_letter``, ``cancel_settle``, a cancel before it ran) writes a
      finished record (``succeeded``, ``dead``, ``cancelled``) **in the same transaction**, so at every
      moment each step has either a live delivery or a finished record: ``handle_get`` never shows an
      event between the two. A replayed dead letter is live again (its finished record is superseded).
    - **Retention.** Finished records are kept until ``handles_prune`` drops them; a live delivery's
      handle is never pruned. An unknown, pruned or never-routed event (no subscriber) is ``None``.
    - **Idempotency keys.** An :class:`~.records.Outgoing` with a ``key`` (in ``publish``,
      ``publish_deduped``, ``complete``, ``complete_with_result``, ``complete_tx`` and its twin) is
      published only if no event of the same topic took that key in the last ``key_ttl_s`` seconds; else
      nothing of it is enqueued. The check and the publish are one atomic step: of many concurrent
      publishers of one key (any processes), exactly one event is published.
    - **Cancellation.** ``handle_cancel`` ends, at once and atomically, the deliveries of the event that
      are not running (they never run), and marks the running ones: their workers learn it through
      ``cancel_requests``. A delivery of a cancelled event never starts another attempt: a backend
      drops it, or hands it out of ``claim`` with ``cancelled=True`` for the worker to settle with
      ``cancel_settle`` without running it; a failed attempt of it is not retried.
    - ``result_json`` and ``progress_json`` are JSON text, stored byte for byte (size limits: the caller's).
    """

    async def publish_deduped(self, items: Sequence[Outgoing]) -> list[str]:
        """``publish``, returning per item the id of the event that holds its key: its own envelope id
        when it was published (always, for an item without a key), else the first event's id."""

    async def complete_with_result(self, delivery: Delivery, outgoing: Sequence[Outgoing],
                                   result_json: str | None) -> bool:
        """``complete``, storing ``result_json`` (the handler's return value) in the finished record."""

    async def complete_tx_with_result(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                                      writes: Sequence[StateWrite], reads: Sequence[StateRead],
                                      result_json: str | None) -> TxResult:
        """``complete_tx``, storing ``result_json`` in the finished record; outbox keys are taken only on ``"ok"``."""

    async def retry_with_error(self, delivery: Delivery, delay_s: float, error: str) -> None:
        """``retry``, keeping ``error`` as the delivery's last error (shown while it is ``retrying``).
        A delivery whose event was cancelled is ended as ``cancelled`` instead."""

    async def cancel_settle(self, delivery: Delivery) -> bool:
        """End a leased delivery as ``cancelled`` (no retry, dead letter or outbox); False when its lease was lost."""

    async def handle_get(self, event_id: str) -> EventHandle | None:
        """The handle of one event (exact id), or None when unknown or pruned."""

    async def handle_find(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` ids of known events (live or finished) that start with ``prefix``, sorted."""

    async def handle_progress(self, delivery: Delivery, progress_json: str) -> None:
        """Store the latest progress of a delivery (replacing the previous one)."""

    async def handle_cancel(self, event_id: str) -> CancelResult | None:
        """Cancel an event (see the class docstring); None when the event is unknown or pruned."""

    async def cancel_requests(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The ids of those ``deliveries`` whose event was cancelled (polled by workers; cheap when none was)."""

    async def scheduled_list(self, topic: str | None, limit: int) -> list[ScheduledDelivery]:
        """Up to ``limit`` scheduled deliveries (not due, never attempted, not cancelled), of ``topic``
        only when given, the earliest due first."""

    async def handles_prune(self, before: float, keep: int) -> int:
        """Drop the finished handles whose last delivery ended before ``before``, and all but the
        ``keep`` most recently finished; also forget expired keys, and the cancellations of events with
        no delivery left in a queue. Return how many handles were dropped."""


@runtime_checkable
class TxStore(Protocol):
    """Transactional commits: an attempt's state writes, its emits and its acknowledgement, all or nothing.

    A transactional step's attempt buffers its ``ctx.state`` writes and records what it read; when its
    handler returns, :meth:`complete_tx` commits everything at once. The rules (the contract suite
    ``tests/backends/test_tx_contract.py`` checks each of them):

    - **Atomic.** Either every effect happens (the delivery is acknowledged as by ``complete``, the
      ``outgoing`` events are published as by ``publish``, every write is applied) or none does. A crash
      at any point leaves one or the other, never a part. Other readers never see a part either.
    - **Fenced.** With a ``delivery``, the commit happens only while the lease of *that attempt* is held,
      by the very test ``complete`` uses (same ``delivery.id`` and ``delivery.attempt``, not yet
      completed, retried or dead-lettered; a lease past its expiry that nobody claimed again still
      counts as held). Otherwise the result is ``"lost"`` and nothing changes: a worker whose lease went
      to another worker commits nothing. The lease is checked first: a lost lease is ``"lost"`` even when
      a read also changed.
    - **Validated.** Every read must still hold when the commit happens: a key read must hold the same
      text (``StateRead.value_json``, None: still absent); a group read (``key`` None) must hold exactly
      the same keys with the same texts (``StateRead.items``). Values are compared as text, byte for
      byte. If any differs the result is ``"conflict"`` and nothing changes; the delivery stays leased
      by the same attempt (the caller runs the attempt again, then commits, retries or dead-letters it).
    - **Serialisable.** The check and the changes are one step against every other writer of the
      backend, in this process or any other: ``state_set``, ``state_cas``, ``state_delete``,
      ``state_clear`` and other ``complete_tx`` calls never interleave with it. Two commits that read
      a key and both write it: one commits, the other gets ``"conflict"``.
    - **Order of writes.** ``writes`` are applied in the order given: a group clear (``key`` None)
      removes every key of the group, including ones written earlier in the same list, and the later
      writes apply after it. A write with ``value_json`` None deletes the key (absent already: no
      error). Any namespace may be written, the reserved ones included.
    - **Without a delivery** (``delivery`` None: an API request, which has nothing to acknowledge) the
      commit is the same, without the fence and the acknowledgement; the result is ``"ok"`` or
      ``"conflict"``.
    - ``complete_tx(d, outgoing, (), ())`` is ``complete(d, outgoing)`` (``"ok"`` for True, ``"lost"``
      for False).
    - **Changes published with the commit.** A backend that tells others about state changes (state
      triggers, streams) publishes those of a transactional write with the commit, in the same
      transaction, and never for a commit that ended ``"lost"`` or ``"conflict"``.

    How the built-in backends keep these rules: memory checks and applies in one event-loop step;
    SQLite runs the lease check, the read checks, the writes, the acknowledgement and the inserts of the
    outbox in one ``BEGIN IMMEDIATE`` transaction; Redis runs them in one Lua script whose lease test is
    the fence (on Redis Cluster every key of the script, the state hashes included, must hash to one
    slot: use a prefix with a hash tag such as ``{motia}``). PostgreSQL (:mod:`.postgres_tx`) does it in
    one transaction, as a SQL backend would: lock the delivery row (with the attempt as fence), read the
    keys read with ``FOR UPDATE`` (group reads: lock the group's rows, or run the transaction SERIALIZABLE
    so that an insert into the group aborts it) and compare, then write, delete the delivery row and
    insert the outbox rows; a serialisation failure rolls back (PostgreSQL tries again, then answers
    ``"conflict"``).

    A backend without this store gets a non-atomic stand-in from :mod:`.derived_tx`, and ``motia-py
    validate`` reports transactional steps as unsupported on it.
    """

    async def complete_tx(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                          writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> TxResult:
        """Commit an attempt: validate ``reads``, apply ``writes``, acknowledge ``delivery`` (when given)
        and publish ``outgoing``, atomically; ``"ok"``, ``"lost"`` or ``"conflict"`` (see the class)."""


@runtime_checkable
class CoreBackend(QueueStore, StateStore, Protocol):
    """The least a backend implements: the queue and state stores, a URL, ``open`` and ``close``.

    The registry completes one with lease and trace stores built on its state store
    (:mod:`motia_py.backends.derived`).
    """

    url: str

    async def open(self) -> None:
        """Connect / create files and schema. Raises BackendUnavailableError."""

    async def close(self) -> None:
        """Release connections; queued deliveries stay queued."""


@runtime_checkable
class Backend(CoreBackend, LeaseStore, TraceStore, TxStore, HandleStore, WaitStore, Protocol):
    """Queue, state, leases with metadata, traces, transactional commits, job handles and the multi-step
    wait behind one object: what motia-py runs on."""


from .stores_realtime import PubSubStore as PubSubStore  # noqa: E402  (re-exported)
from .stores_realtime import StateChangeStore as StateChangeStore  # noqa: E402

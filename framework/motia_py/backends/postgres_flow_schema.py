"""Version 2 of the PostgreSQL schema: priorities and flow control (see :mod:`.postgres_schema`).

Deliveries and dead letters get ``priority``, ``rate_key`` and ``conc_key`` (a :class:`~.records.Target`'s
flow attributes); the due index orders by priority first; ``flow_starts`` holds the starts of each step's
rate windows. The ``claim`` function is replaced by one that takes the highest priority first and returns
the flow attributes; ``claim_flow`` is the claim under a :class:`~.records.FlowControl`: it takes the
step's advisory lock (the one FIFO claims take), so that the controlled claims of one step run one after
the other and each sees the slots and starts committed before it, counts the running deliveries and the
starts still in the window, then admits candidates in claim order (a busy key is left out of the next
query, so it never blocks the others) and leases the ones admitted with ``FOR UPDATE SKIP LOCKED``.
The rules are :class:`~.stores.QueueStore`'s.
"""

from __future__ import annotations

_LEASED = ("attempts = d.attempts + 1, lease_until = t + p_lease, available_at = t + p_lease, "
           "first_delivered_at = COALESCE(d.first_delivered_at, t), owner = p_owner")
_OUT = ("u.id, u.attempts, u.first_delivered_at, u.event_id, u.topic, u.data, u.trace_id, u.emitted_at, "
        "u.group_id, u.source, u.traceparent")
_FLOW_OUT = "u.priority, u.rate_key, u.conc_key"
_RET = ("d.seq, d.id, d.attempts, d.first_delivered_at, d.event_id, d.topic, d.data, d.trace_id, "
        "d.emitted_at, d.group_id, d.source, d.traceparent, d.priority, d.rate_key, d.conc_key")
_RETURNS = """RETURNS TABLE (r_id text, r_attempt integer, r_first_delivered_at float8, r_event_id text,
               r_topic text, r_data text, r_trace_id text, r_emitted_at float8, r_group_id text,
               r_source text, r_traceparent text, r_expired boolean, r_last_owner text, r_priority integer,
               r_rate_key text, r_conc_key text)"""


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def flow_ddl(s: str, schema: str, lock_class: int) -> str:
    """Version 2's DDL; ``s`` is the quoted schema, ``lock_class`` the first key of motia-py's advisory
    locks."""
    lock = f"pg_advisory_xact_lock({lock_class}, hashtext({_lit(schema + ':')} || p_step))"
    return f"""
ALTER TABLE {s}.deliveries ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN rate_key text COLLATE "C", ADD COLUMN conc_key text COLLATE "C";
ALTER TABLE {s}.dead_letters ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN rate_key text COLLATE "C", ADD COLUMN conc_key text COLLATE "C";
DROP INDEX {s}.deliveries_due;
CREATE INDEX deliveries_ready ON {s}.deliveries (step, priority DESC, available_at, seq)
    WHERE fifo_group IS NULL AND lease_until IS NULL;
CREATE TABLE {s}.flow_starts (step text COLLATE "C" NOT NULL, bucket text COLLATE "C", at float8 NOT NULL);
CREATE INDEX flow_starts_step ON {s}.flow_starts (step, at);
DROP FUNCTION {s}.claim(text, integer, float8, float8, text);
{_claim(s, lock)}
{_claim_flow(s, lock)}
"""


def _expired(s: str) -> str:
    """The statement that leases the oldest expired lease of ``p_step`` (alone)."""
    return f"""RETURN QUERY
    WITH e AS (
        SELECT d.seq, d.owner FROM {s}.deliveries d
        WHERE d.step = p_step AND d.lease_until IS NOT NULL AND d.available_at <= t
        ORDER BY d.available_at, d.seq LIMIT 1 FOR UPDATE SKIP LOCKED
    ), u AS (
        UPDATE {s}.deliveries d SET {_LEASED} FROM e WHERE d.seq = e.seq RETURNING {_RET}, e.owner AS last_owner
    )
    SELECT {_OUT}, true, u.last_owner, {_FLOW_OUT} FROM u;"""


def _heads(s: str) -> str:
    """The free heads of ``p_step``'s FIFO groups that are due, highest priority then oldest first
    (a skip-scan of the FIFO index, one probe per group)."""
    return f"""WITH RECURSIVE grp(g) AS (
        (SELECT d.fifo_group FROM {s}.deliveries d WHERE d.step = p_step AND d.fifo_group IS NOT NULL
         ORDER BY d.fifo_group LIMIT 1)
        UNION ALL
        SELECT (SELECT d.fifo_group FROM {s}.deliveries d WHERE d.step = p_step AND d.fifo_group > grp.g
                ORDER BY d.fifo_group LIMIT 1)
        FROM grp WHERE grp.g IS NOT NULL
    ), head AS (
        SELECT grp.g, (SELECT d.seq FROM {s}.deliveries d WHERE d.step = p_step AND d.fifo_group = grp.g
                       ORDER BY d.seq LIMIT 1) AS seq
        FROM grp WHERE grp.g IS NOT NULL
    )
        SELECT d.seq, d.priority, d.rate_key, d.conc_key FROM {s}.deliveries d JOIN head ON d.seq = head.seq
        WHERE d.lease_until IS NULL AND d.available_at <= t
          AND NOT EXISTS (SELECT 1 FROM {s}.deliveries x WHERE x.step = p_step AND x.lease_until IS NOT NULL
                          AND x.fifo_group = head.g)
        ORDER BY d.priority DESC, d.seq"""


def _claim(s: str, lock: str) -> str:
    """The claim without flow control: version 1's, highest priority first (FIFO heads too)."""
    return f"""
CREATE FUNCTION {s}.claim(p_step text, p_limit integer, p_lease float8, p_now float8, p_owner text)
{_RETURNS}
LANGUAGE plpgsql AS $claim$
DECLARE
    t float8 := COALESCE(p_now, extract(epoch FROM clock_timestamp())::float8);
    n integer;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);  -- a lost claim only delivers again
    {_expired(s)}
    IF FOUND THEN
        RETURN;  -- an expired lease comes alone
    END IF;
    RETURN QUERY
    WITH c AS (
        SELECT d.seq, d.priority, d.available_at FROM {s}.deliveries d
        WHERE d.step = p_step AND d.fifo_group IS NULL AND d.lease_until IS NULL AND d.available_at <= t
        ORDER BY d.priority DESC, d.available_at, d.seq LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), u AS (
        UPDATE {s}.deliveries d SET {_LEASED} FROM c WHERE d.seq = c.seq RETURNING {_RET}, c.available_at AS due
    )
    SELECT {_OUT}, false, NULL::text, {_FLOW_OUT} FROM u ORDER BY u.priority DESC, u.due, u.seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n >= p_limit OR NOT EXISTS (
            SELECT 1 FROM {s}.deliveries d WHERE d.step = p_step AND d.fifo_group IS NOT NULL) THEN
        RETURN;
    END IF;
    PERFORM {lock};
    RETURN QUERY
    WITH c AS ({_heads(s)} LIMIT p_limit - n FOR UPDATE OF d SKIP LOCKED), u AS (
        UPDATE {s}.deliveries d SET {_LEASED} FROM c WHERE d.seq = c.seq RETURNING {_RET}
    )
    SELECT {_OUT}, false, NULL::text, {_FLOW_OUT} FROM u ORDER BY u.priority DESC, u.seq;
END
$claim$;
"""


_ADMIT = """
            bucket := CASE WHEN p_rate_keyed THEN COALESCE(r.rate_key, '') ELSE '' END;
            IF p_global > 0 AND total >= p_global THEN
                closed := true;
                EXIT;
            ELSIF p_key > 0 AND COALESCE((running ->> COALESCE(r.conc_key, ''))::integer, 0) >= p_key THEN
                cb := cb || COALESCE(r.conc_key, '');
                more := true;
            ELSIF p_rate > 0 AND COALESCE((starts ->> bucket)::integer, 0) >= p_rate THEN
                IF NOT p_rate_keyed THEN
                    closed := true;
                    EXIT;
                END IF;
                rb := rb || bucket;
                more := true;
            ELSE
                chosen := chosen || r.seq;
                total := total + 1;
                running := running || jsonb_build_object(COALESCE(r.conc_key, ''),
                    COALESCE((running ->> COALESCE(r.conc_key, ''))::integer, 0) + 1);
                starts := starts || jsonb_build_object(bucket, COALESCE((starts ->> bucket)::integer, 0) + 1);
                EXIT WHEN cardinality(chosen) >= p_limit;
            END IF;"""
"""One candidate ``r`` through the checks (global, key, rate), as :class:`~.flow.Admission` does."""


_DECLARE = """DECLARE
    t float8;
    r record;
    running jsonb;  -- the running deliveries per concurrency key ('' for none)
    starts jsonb;  -- the starts in the rate window per rate key ('' for none, or for the step's one window)
    total integer;  -- the step's running deliveries
    chosen bigint[] := '{}';  -- the seqs admitted, in claim order
    cb text[] := '{}';  -- the concurrency keys found busy
    rb text[] := '{}';  -- the rate keys found at their limit
    got integer;
    more boolean;
    closed boolean := false;
    bucket text;
    e_seq bigint;
    e_owner text;
    e_rate_key text;"""


def _claim_flow(s: str, lock: str) -> str:
    """The claim under flow control (see the module docstring)."""
    return f"""
CREATE FUNCTION {s}.claim_flow(p_step text, p_limit integer, p_lease float8, p_now float8, p_owner text,
    p_rate integer, p_period float8, p_rate_keyed boolean, p_global integer, p_key integer)
{_RETURNS}
LANGUAGE plpgsql AS $claim$
{_DECLARE}
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM {lock};  -- the controlled claims of a step, one at a time; t is read after it
    t := COALESCE(p_now, extract(epoch FROM clock_timestamp())::float8);
    IF p_rate > 0 THEN
        DELETE FROM {s}.flow_starts WHERE step = p_step AND at <= t - p_period;
    END IF;
    SELECT d.seq, d.owner, d.rate_key INTO e_seq, e_owner, e_rate_key FROM {s}.deliveries d
    WHERE d.step = p_step AND d.lease_until IS NOT NULL AND d.available_at <= t
    ORDER BY d.available_at, d.seq LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN  -- alone and past the limits; its start counts
        IF p_rate > 0 THEN
            INSERT INTO {s}.flow_starts VALUES (p_step, CASE WHEN p_rate_keyed THEN COALESCE(e_rate_key, '') END, t);
        END IF;
        RETURN QUERY
        WITH u AS (UPDATE {s}.deliveries d SET {_LEASED} WHERE d.seq = e_seq RETURNING {_RET})
        SELECT {_OUT}, true, e_owner, {_FLOW_OUT} FROM u;
        RETURN;
    END IF;
    SELECT COALESCE(jsonb_object_agg(k, n), '{{}}'), COALESCE(sum(n), 0) INTO running, total FROM (
        SELECT COALESCE(d.conc_key, '') AS k, count(*) AS n FROM {s}.deliveries d
        WHERE d.step = p_step AND d.lease_until IS NOT NULL AND d.available_at > t GROUP BY 1) x;
    SELECT COALESCE(jsonb_object_agg(k, n), '{{}}') INTO starts FROM (
        SELECT COALESCE(f.bucket, '') AS k, count(*) AS n FROM {s}.flow_starts f
        WHERE f.step = p_step AND f.at > t - p_period AND (f.bucket IS NOT NULL) = p_rate_keyed GROUP BY 1) x;
    LOOP
        got := 0;
        more := false;
        FOR r IN SELECT d.seq, d.rate_key, d.conc_key FROM {s}.deliveries d
            WHERE d.step = p_step AND d.fifo_group IS NULL AND d.lease_until IS NULL AND d.available_at <= t
              AND COALESCE(d.conc_key, '') <> ALL(cb) AND COALESCE(d.rate_key, '') <> ALL(rb)
              AND d.seq <> ALL(chosen)
            ORDER BY d.priority DESC, d.available_at, d.seq LIMIT p_limit - cardinality(chosen)
        LOOP
            got := got + 1;{_ADMIT}
        END LOOP;
        EXIT WHEN closed OR cardinality(chosen) >= p_limit OR (NOT more AND got < p_limit - cardinality(chosen));
    END LOOP;
    IF NOT closed AND cardinality(chosen) < p_limit THEN
        FOR r IN {_heads(s)}
        LOOP{_ADMIT}
        END LOOP;
    END IF;
    IF p_rate > 0 THEN
        INSERT INTO {s}.flow_starts SELECT p_step, CASE WHEN p_rate_keyed THEN COALESCE(d.rate_key, '') END, t
        FROM {s}.deliveries d WHERE d.seq = ANY(chosen);
    END IF;
    RETURN QUERY
    WITH c AS (SELECT x.seq, x.ord FROM unnest(chosen) WITH ORDINALITY AS x(seq, ord)), l AS (
        SELECT d.seq, c.ord FROM {s}.deliveries d JOIN c ON d.seq = c.seq WHERE d.lease_until IS NULL
        FOR UPDATE OF d SKIP LOCKED
    ), u AS (
        UPDATE {s}.deliveries d SET {_LEASED} FROM l WHERE d.seq = l.seq RETURNING {_RET}, l.ord
    )
    SELECT {_OUT}, false, NULL::text, {_FLOW_OUT} FROM u ORDER BY u.ord;
END
$claim$;
"""

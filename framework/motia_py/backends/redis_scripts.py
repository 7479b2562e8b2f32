"""What the Lua scripts of the redis backend share: their conventions and the clock prelude.

Every operation that must be atomic (claim, complete with its outbox, retry, hand back, dead letter,
state CAS, leases, metadata CAS) is one script, so two workers never interleave inside it. The scripts
of each store live in their own module (:mod:`.redis_scripts_queue` with the read-only
:mod:`.redis_scripts_inspect`, :mod:`.redis_scripts_state`, :mod:`.redis_scripts_lease`) and are
registered once per client (``register_script``: EVALSHA, loaded again by redis-py after NOSCRIPT, e.g.
after a Redis restart).

Time: ARGV[1] of every script that reads the clock is "now", the injected clock's reading, or ``""`` to
use Redis's own ``TIME`` so that every host measures leases and delays on one clock. Timestamps are kept
as text formatted with ``%.17g`` (Lua's ``tostring`` keeps only 14 digits), so they come back
bit-identical.

Keys come from :mod:`.redis_keys`; the only keys a script builds itself are FIFO group lists
(``fifo_prefix .. escaped group``), whose group names it finds in the step's FIFO sorted sets.
"""

from __future__ import annotations

from typing import Final

CLOCK: Final = r"""
local function clock(v)
  if v ~= '' then return tonumber(v), v end
  local t = redis.call('TIME')
  local n = tonumber(t[1]) + tonumber(t[2]) / 1000000
  return n, string.format('%.17g', n)
end
local function fmt(x) return string.format('%.17g', x) end
"""
"""Lua: ``clock(ARGV[1])`` -> (now as a number, now as text) and ``fmt(x)`` (``%.17g``)."""

"""The Lua script of the redis backend's trace store: a batch of run records written in one call.

redis-py's transaction pipeline (one ``RPUSH`` per trace, then a ``ZADD``) cost a worker about as much
Python per run record as the rest of the run's bookkeeping; a script takes the batch as one command.
"""

from __future__ import annotations

from typing import Final

# KEYS: the traces ZSET, then one run list per trace. ARGV, per trace in KEYS' order: its record count,
# its latest run's start (the ZSET's score, only ever raised), its id, then its records (appended in order).
TRACES_ADD: Final = r"""
local a = 1
for k = 2, #KEYS do
  local n = tonumber(ARGV[a])
  redis.call('ZADD', KEYS[1], 'GT', ARGV[a + 1], ARGV[a + 2])
  local first = a + 3
  for i = first, first + n - 1, 1000 do  -- unpack() stays within Lua's stack
    redis.call('RPUSH', KEYS[k], unpack(ARGV, i, math.min(i + 999, first + n - 1)))
  end
  a = first + n
end
return 1
"""

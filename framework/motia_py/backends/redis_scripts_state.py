"""The Lua scripts of the redis backend's state store (see :mod:`.redis_scripts` for the conventions)."""

from __future__ import annotations

from typing import Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# KEYS: hash groups. ARGV: key group.
_STATE_DELETE: Final = r"""
local n = redis.call('HDEL', KEYS[1], ARGV[1])
if n == 1 and redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return n
"""

# KEYS: hash groups. ARGV: key group has_expected expected has_new new.
_STATE_CAS: Final = r"""
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '1' then
  if cur ~= ARGV[4] then return 0 end
elseif cur then
  return 0
end
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[6])
  redis.call('SADD', KEYS[2], ARGV[2])
elseif redis.call('HDEL', KEYS[1], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
end
return 1
"""


class StateScripts:
    """The state store's scripts, registered on one client."""

    def __init__(self, client: Redis) -> None:
        self.delete: AsyncScript = client.register_script(_STATE_DELETE)
        self.cas: AsyncScript = client.register_script(_STATE_CAS)

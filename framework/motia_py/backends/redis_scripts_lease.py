"""The Lua scripts of the redis backend's lease and metadata store (see :mod:`.redis_scripts`)."""

from __future__ import annotations

from typing import Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from .redis_scripts import CLOCK

# KEYS: lock. ARGV: now owner ttl_s. The value carries the expiry by the backend's clock; the real TTL
# removes locks nobody releases.
_ACQUIRE: Final = CLOCK + r"""
local now = clock(ARGV[1])
local held = redis.call('GET', KEYS[1])
if held then
  local owner, expiry = string.match(held, '^(.*)|([^|]*)$')
  if owner ~= ARGV[2] and tonumber(expiry) > now then return 0 end
end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. fmt(now + ttl), 'PX', math.max(1, math.ceil(ttl * 1000)))
return 1
"""

# KEYS: lock. ARGV: owner.
_RELEASE: Final = r"""
local held = redis.call('GET', KEYS[1])
if held and string.match(held, '^(.*)|[^|]*$') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: meta. ARGV: key has_expected expected new.
_META_CAS: Final = r"""
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if cur ~= ARGV[3] then return 0 end
elseif cur then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1
"""


class LeaseScripts:
    """The lease store's scripts, registered on one client."""

    def __init__(self, client: Redis) -> None:
        self.acquire: AsyncScript = client.register_script(_ACQUIRE)
        self.release: AsyncScript = client.register_script(_RELEASE)
        self.meta_cas: AsyncScript = client.register_script(_META_CAS)

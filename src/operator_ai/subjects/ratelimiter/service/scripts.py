"""The Lua scripts the service runs in Redis. Each runs atomically, so a decision and the
state it is based on cannot be separated by another node's request.

Times are milliseconds on the *calling node's* clock, passed in as arguments: a node whose
clock is skewed decides with its own idea of the window, as a real deployment would.
"""

from __future__ import annotations

# The sliding-window check. KEYS: log, override. ARGV: now_ms, member, declared limit,
# declared window_ms, margin_ms.
# Returns {allowed (0|1), count after the request, limit, window_ms, overridden (0|1),
# Redis TIME seconds, Redis TIME microseconds}.
CHECK = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local margin = tonumber(ARGV[5])
local overridden = 0
local o = redis.call('HMGET', KEYS[2], 'limit', 'window_ms')
if o[1] and o[2] then
  limit = tonumber(o[1])
  window = tonumber(o[2])
  overridden = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window - margin)
-- Exclusive lower bound and no upper bound: an entry stamped slightly in the future by a
-- node whose clock runs a little ahead still counts against the limit.
local count = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  count = count + 1
  allowed = 1
end
redis.call('PEXPIRE', KEYS[1], window + margin)
local t = redis.call('TIME')
return {allowed, count, limit, window, overridden, tonumber(t[1]), tonumber(t[2])}
"""

# Read-only: the count a check would see now, without recording anything.
# KEYS: log, override. ARGV: now_ms, declared limit, declared window_ms.
# Returns {count, limit, window_ms, overridden (0|1)}.
PEEK = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local overridden = 0
local o = redis.call('HMGET', KEYS[2], 'limit', 'window_ms')
if o[1] and o[2] then
  limit = tonumber(o[1])
  window = tonumber(o[2])
  overridden = 1
end
local count = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
return {count, limit, window, overridden}
"""

# One registry entry, stamped with both clocks so readers can tell a node's skew from its
# liveness. KEYS: node. ARGV: node, address, started_at, heartbeat_ms, interval_ms, ttl_ms.
HEARTBEAT = """
local t = redis.call('TIME')
local redis_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'address', ARGV[2], 'started_at', ARGV[3],
  'heartbeat_ms', ARGV[4], 'interval_ms', ARGV[5], 'redis_ms', redis_ms)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return redis_ms
"""

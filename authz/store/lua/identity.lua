-- authz: has the server behind this replay shard changed since authz last looked?
--
-- Run on a new connection, once per replay shard. A Redis that restarted (even one that reloaded
-- its data from disk, which may miss the last claims) or a replica promoted by a failover (which
-- may miss the last replicated claims) has another run id than the one recorded next to the
-- shard's epoch: the shard then starts a new epoch, so claims made before it are refused rather
-- than possibly replayed.
--
-- KEYS[1] the shard's server marker, KEYS[2] the shard's epoch
-- ARGV[1] the server's run id, ARGV[2] now (ms), ARGV[3] the keys' TTL (ms)
-- Returns 2 when the server changed and a new epoch began, 1 when the shard had no epoch yet
-- (empty data: one begins now), 0 otherwise.
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
local now = tonumber(ARGV[2])
local epoch = tonumber(redis.call('GET', KEYS[2]))
if epoch == nil then
  redis.call('SET', KEYS[2], now, 'PX', ARGV[3])
  return 1
end
if old and old ~= ARGV[1] and now > epoch then
  redis.call('SET', KEYS[2], now, 'PX', ARGV[3])
  return 2
end
return 0

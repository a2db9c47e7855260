-- authz: undo the spending of operations whose batch was refused or failed on another slot
-- (Redis Cluster only: a request's keys may live in several slots, each run as its own batch).
--
-- KEYS[1] this compensation's marker (in the operations' slot), so that sending it again after a
--         lost reply undoes nothing twice; then the keys of every operation, in operation order
-- ARGV[1] now, ms; ARGV[2] the batch id; ARGV[3] the number of operations;
-- then, per operation: its function name, its number of keys, its number of arguments, its arguments
--
-- take:  give the tokens back (the bucket's theoretical arrival time moves back by interval * cost)
-- claim: remove the claim, only if this batch made it
-- Returns the number of operations undone.

local now = tonumber(ARGV[1])
local batch = ARGV[2]
local count = tonumber(ARGV[3])

local UNDO = {}

UNDO.take = function(k, a)
  local tat = tonumber(redis.call('GET', k[1]))
  if tat == nil then return 0 end
  local back = tat - tonumber(a[1]) * tonumber(a[2])
  if back <= now then
    redis.call('DEL', k[1])
  else
    redis.call('SET', k[1], string.format('%.17g', back), 'PX', math.max(math.floor(back + 0.999) - now, 1) + 10000)
  end
  return 1
end

UNDO.claim = function(k, a)
  local held = redis.call('GET', k[1])
  if held and string.sub(held, -(#batch + 1)) == '|' .. batch then
    redis.call('DEL', k[1])
    return 1
  end
  return 0
end

if not redis.call('SET', KEYS[1], 1, 'NX', 'PX', 60000) then return 0 end

local undone = 0
local ki, ai = 2, 4
for i = 1, count do
  local name, nk, na = ARGV[ai], tonumber(ARGV[ai + 1]), tonumber(ARGV[ai + 2])
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[ki + j - 1] end
  for j = 1, na do args[j] = ARGV[ai + 2 + j] end
  ki = ki + nk
  ai = ai + 3 + na
  local fn = UNDO[name]
  if fn ~= nil then undone = undone + fn(keys, args) end
end
return undone

-- authz: every stateful check of one request, in one script, all-or-nothing for what it spends.
--
-- KEYS    the keys of every operation, in operation order (each operation's keys share a hash slot)
-- ARGV[1] now, ms since the epoch (the engine's clock, never Redis's)
-- ARGV[2] the batch id (the value a claim is stored with, so a compensation removes only its own)
-- ARGV[3] the mode: 0 apply, 1 dry run (compute every reply, write nothing)
-- ARGV[4] the number of operations
-- then, per operation: its function name, its number of keys, its number of arguments, its arguments
--
-- Returns {refused, reply_1, ..., reply_n}: refused is 1 when an enforced operation refused, in
-- which case no spending write of the batch was applied (observations were).
--
-- Every command goes through read() or write(). Applying, both are redis.call itself. In a dry
-- run, write() changes nothing in Redis: it records its effect in a table of this script, and
-- read() answers from that table for the keys the batch wrote, so each operation sees the writes
-- of the operations before it exactly as when applying. The one effect that cannot be computed
-- without Redis is a HyperLogLog's count after PFADD: a dry run adds the member to a copy of the
-- HyperLogLog (same key name plus '~dry', so the same hash slot; never the name of a real key,
-- which ends in its window's index) and deletes every copy before it returns. The copy lives
-- only inside this atomic script (and expires within a minute if the script were cut short).
--
-- Each function mirrors the Python operation of the same name in authz/store/ops.py line by line;
-- the store contract tests run both on the same pinned clock. A function returns its reply, whether
-- it refuses, and the spending writes to apply if the whole batch is accepted (closures).
--
-- Time is the caller's: every decision compares stored times with ARGV[1]. Redis key expiry only
-- collects garbage, GC_MARGIN after the caller's clock says a value no longer matters (so jitter
-- between authz's clock and Redis's never drops a value early).

local now = tonumber(ARGV[1])
local batch = ARGV[2]
local dry = ARGV[3] == '1'
local count = tonumber(ARGV[4])

local read, write = redis.call, redis.call
-- dry run: the HyperLogLog copies to delete before returning
local copies = {}

if dry then
  -- key -> false (deleted), {v = string value}, {f = hash fields} or {hll = copy}; and ttl (ms)
  local shadow = {}

  local function fields(key)
    local s = shadow[key]
    if s == false then return {} end
    if s ~= nil then return s.f or {} end
    local raw, f = redis.call('HGETALL', key), {}
    for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
    return f
  end

  local function hll(key)
    local s = shadow[key]
    if s and s.hll then return s.hll end
    local copy = key .. '~dry'
    if s == nil and redis.call('EXISTS', key) == 1 then
      redis.call('COPY', key, copy, 'REPLACE')
    else
      redis.call('DEL', copy)
      redis.call('PFADD', copy)
    end
    redis.call('PEXPIRE', copy, 60000)
    copies[#copies + 1] = copy
    shadow[key] = {hll = copy}
    return copy
  end

  read = function(cmd, key, ...)
    if cmd == 'PFCOUNT' then return redis.call('PFCOUNT', hll(key)) end
    local s = shadow[key]
    if s == nil then return redis.call(cmd, key, ...) end
    if cmd == 'GET' then return s and s.v or false end
    if cmd == 'EXISTS' then return s and 1 or 0 end
    if cmd == 'PTTL' then return s and (s.ttl or -1) or -2 end
    if cmd == 'HGETALL' then
      local out = {}
      for name, v in pairs(fields(key)) do out[#out + 1] = name; out[#out + 1] = v end
      return out
    end
    if cmd == 'HMGET' then
      local f, out = fields(key), {}
      for i, name in ipairs({...}) do out[i] = f[name] or false end
      return out
    end
    error('authz: a dry run cannot read with ' .. cmd)
  end

  write = function(cmd, key, ...)
    local a = {...}
    if cmd == 'SET' then  -- SET key value PX ms
      shadow[key] = {v = tostring(a[1]), ttl = tonumber(a[3])}
    elseif cmd == 'HSET' then
      local f, s = fields(key), shadow[key]
      for i = 1, #a, 2 do f[a[i]] = tostring(a[i + 1]) end
      shadow[key] = {f = f, ttl = s and s.ttl or nil}
    elseif cmd == 'PEXPIRE' then
      if shadow[key] then shadow[key].ttl = tonumber(a[1]) end
    elseif cmd == 'DEL' then
      local deleted = 0
      for _, k in ipairs({key, ...}) do
        if read('EXISTS', k) == 1 then deleted = deleted + 1 end
        shadow[k] = false
      end
      return deleted
    elseif cmd == 'PFADD' then
      return redis.call('PFADD', hll(key), ...)
    else
      error('authz: a dry run cannot write with ' .. cmd)
    end
  end
end

-- values written by earlier operations of this batch that are not applied yet (false: forgotten)
local pending = {}

local function current(key)
  local v = pending[key]
  if v ~= nil then return v end
  return read('GET', key)
end

local function cooldown_ms(strikes, base, factor, max)
  if strikes <= 0 then return 0 end
  return math.floor(math.min(base * factor ^ (strikes - 1), max))
end

local GC_MARGIN = 10000
local EPOCH_TTL = 7 * 86400000
local EPOCH_REFRESH = 6 * 86400000

local OPS = {}

-- TakeTokens. KEYS: bucket, cooldown record. ARGV: interval, capacity, cost, enforce,
-- cooldown after, base, factor, max, memory (after = 0: no cooldown).
-- Reply: {allowed, remaining, retry_after_ms, reset_ms, cooldown_ms, strikes}
OPS.take = function(k, a)
  local interval, capacity, cost = tonumber(a[1]), tonumber(a[2]), tonumber(a[3])
  local enforce = a[4] == '1'
  local after = tonumber(a[5])
  local memory = tonumber(a[9])
  local strikes = 0
  if after > 0 then
    local held = read('HMGET', k[2], 'until', 'strikes', 'last')
    if held[1] and now - tonumber(held[3]) < memory then
      local until_ms = tonumber(held[1])
      strikes = tonumber(held[2])
      if until_ms > now then
        local wait = until_ms - now
        return {0, 0, wait, 0, wait, strikes}, enforce, nil
      end
    end
  end
  local tat = tonumber(current(k[1])) or 0
  -- gcra (authz.store.base.gcra)
  tat = math.max(tat, now)
  local new_tat = tat + interval * cost
  local allow_at = new_tat - interval * capacity
  if allow_at > now then
    local retry = allow_at - now
    local remaining = math.floor((now - (tat - interval * capacity)) / interval)
    if remaining < 0 then remaining = 0 end
    local retry_ms = math.max(math.floor(retry + 0.999), 1)
    local reset_ms = math.floor(tat - now + 0.999)
    local hold = 0
    -- a peek (cost 0) is no offence
    if after > 0 and cost > 0 then
      strikes = strikes + 1
      if strikes >= after then
        hold = cooldown_ms(strikes - after + 1, tonumber(a[6]), tonumber(a[7]), tonumber(a[8]))
      end
      write('HSET', k[2], 'until', now + hold, 'strikes', strikes, 'last', now)
      write('PEXPIRE', k[2], math.max(hold, memory) + GC_MARGIN)
      retry_ms = math.max(retry_ms, hold)
    end
    return {0, remaining, retry_ms, reset_ms, hold, strikes}, enforce, nil
  end
  local remaining = math.floor((now - allow_at) / interval)
  local reply = {1, remaining, 0, math.floor(new_tat - now + 0.999), 0, strikes}
  -- a peek takes nothing and writes nothing
  if cost == 0 then return reply, false, nil end
  local expires = math.floor(new_tat + 0.999)
  local text = string.format('%.17g', new_tat)
  pending[k[1]] = text
  local spend = function()
    write('SET', k[1], text, 'PX', math.max(expires - now, 1) + GC_MARGIN)
  end
  return reply, false, spend
end

-- ClaimOnce. KEYS: claim, its replay shard's epoch. ARGV: ttl, created.
-- Reply: 0 claimed, 1 already claimed, 2 before the epoch.
-- A claim is stored as "<until>|<batch id>": claimed while until > now (the caller's clock).
OPS.claim = function(k, a)
  local ttl, created = tonumber(a[1]), tonumber(a[2])
  local epoch = tonumber(read('GET', k[2]))
  if epoch == nil then
    -- the shard has no epoch: this Redis lost its state (flushed, or restarted without
    -- persistence) or never had any. A new epoch begins now.
    epoch = now
    write('SET', k[2], now, 'PX', EPOCH_TTL)
  elseif read('PTTL', k[2]) < EPOCH_REFRESH then
    write('PEXPIRE', k[2], EPOCH_TTL)
  end
  local held = current(k[1])
  if held and tonumber(string.match(held, '^(%d+)')) > now then return 1, true, nil end
  if created < epoch then return 2, true, nil end
  local value = string.format('%d|%s', now + ttl, batch)
  pending[k[1]] = value
  local spend = function()
    write('SET', k[1], value, 'PX', math.max(ttl, 1) + GC_MARGIN)
  end
  return 0, false, spend
end

-- CountDistinct. KEYS: the HyperLogLog of the current window (its index is in the key name).
-- ARGV: member, limit, window, enforce, window end. Reply: {count, exceeded}.
-- The member is recorded whatever the batch's fate.
OPS.distinct = function(k, a)
  write('PFADD', k[1], a[1])
  if read('PTTL', k[1]) < 0 then
    write('PEXPIRE', k[1], math.max(tonumber(a[5]) - now, 1) + GC_MARGIN)
  end
  local n = read('PFCOUNT', k[1])
  local exceeded = n > tonumber(a[2])
  return {n, exceeded and 1 or 0}, exceeded and a[4] == '1', nil
end

-- Reputation. KEYS: the identity's hash. ARGV: half-life, burst half-life, ttl, arrival (0/1),
-- numeric id (-1: none), route bit (0: none), cadence alpha, cadence min count, cadence max cv,
-- cadence weight, burst rate, burst weight, sequence min run, sequence weight, then name/amount
-- pairs of evidence. Everything decays lazily: on each call by 2^(-elapsed / half-life).
-- Reply: {count, previous route bits, cadence count, name, value, ...}, values x 1000, floored.
-- Always recorded, whatever the batch's fate (evidence is an observation).
OPS.reputation = function(k, a)
  local h, hb, ttl = tonumber(a[1]), tonumber(a[2]), tonumber(a[3])
  local arrival, num, bitv = a[4] == '1', tonumber(a[5]), tonumber(a[6])
  local alpha, cmin, cvmax, cw = tonumber(a[7]), tonumber(a[8]), tonumber(a[9]), tonumber(a[10])
  local brate, bw, smin, sw = tonumber(a[11]), tonumber(a[12]), tonumber(a[13]), tonumber(a[14])
  local raw = read('HGETALL', k[1])
  local st = {}
  for i = 1, #raw, 2 do st[raw[i]] = tonumber(raw[i + 1]) end
  local t = st.t or now
  local dt = math.max(now - t, 0)
  local f, fb = 2 ^ (-dt / h), 2 ^ (-dt / hb)
  local out = {}
  local sig = {}
  for name, v in pairs(st) do
    if string.sub(name, 1, 2) == 's.' then sig[string.sub(name, 3)] = v * f end
  end
  local n = (st.n or 0) * f
  local b = (st.b or 0) * fb
  local c, m, var = st.c or 0, st.m or 0, st.v or 0
  local r = st.r or 0
  local add = function(name, amount) sig[name] = (sig[name] or 0) + amount end
  if arrival then
    n = n + 1
    b = b + 1
    if st.a then
      local iat = now - st.a
      if c == 0 then
        m, var = iat, 0
      else
        local d = iat - m
        m = m + alpha * d
        var = (1 - alpha) * (var + alpha * d * d)
      end
      c = c + 1
    end
    st.a = now
    if c >= cmin and m > 0 and math.sqrt(var) / m < cvmax then add('cadence', cw) end
    if b >= brate then add('burst', bw) end
  end
  local sq = st.q or 0
  if num >= 0 then
    if st.i and math.abs(num - st.i) == 1 then sq = sq + 1 else sq = 0 end
    st.i = num
    if sq >= smin then add('sequence', sw) end
  end
  for i = 15, #a, 2 do add(a[i], tonumber(a[i + 1])) end
  local prev = r
  if bitv > 0 and bit.band(r, bitv) == 0 then r = r + bitv end
  write('DEL', k[1])
  local fields = {'t', now, 'n', string.format('%.17g', n), 'b', string.format('%.17g', b), 'c', c,
                  'm', string.format('%.17g', m), 'v', string.format('%.17g', var), 'r', r, 'q', sq}
  if st.a then fields[#fields + 1] = 'a'; fields[#fields + 1] = st.a end
  if st.i then fields[#fields + 1] = 'i'; fields[#fields + 1] = st.i end
  local reply = {math.floor(n * 1000), prev, c}
  local names = {}
  for name in pairs(sig) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local v = sig[name]
    if v >= 0.001 then
      fields[#fields + 1] = 's.' .. name
      fields[#fields + 1] = string.format('%.17g', v)
      reply[#reply + 1] = name
      reply[#reply + 1] = math.floor(v * 1000)
    end
  end
  write('HSET', k[1], unpack(fields))
  write('PEXPIRE', k[1], ttl + GC_MARGIN)
  return reply, false, nil
end

-- Forget. KEYS: the state another operation keeps for its identity (never a replay shard's
-- epoch). ARGV: none. Reply: the number of keys removed. Applied whatever the batch's fate (an
-- observation-like write); the operations after it in the batch see the keys gone.
OPS.forget = function(k, a)
  local removed = 0
  for _, key in ipairs(k) do
    -- a value an earlier operation of the batch will write counts as there
    local p = pending[key]
    if p ~= nil then
      if p then removed = removed + 1 end
    elseif read('EXISTS', key) == 1 then
      removed = removed + 1
    end
    pending[key] = false
  end
  write('DEL', unpack(k))
  return removed, false, nil
end

local function finish(reply)
  if dry then
    for _, copy in ipairs(copies) do redis.call('DEL', copy) end
  end
  return reply
end

local replies = {0}
local spends = {}
local refused = false
local ki, ai = 1, 5
for i = 1, count do
  local name, nk, na = ARGV[ai], tonumber(ARGV[ai + 1]), tonumber(ARGV[ai + 2])
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[ki + j - 1] end
  for j = 1, na do args[j] = ARGV[ai + 2 + j] end
  ki = ki + nk
  ai = ai + 3 + na
  local fn = OPS[name]
  if fn == nil then return finish(redis.error_reply('authz: unknown operation ' .. tostring(name))) end
  local reply, refuses, spend = fn(keys, args)
  replies[i + 1] = reply
  if refuses then refused = true end
  if spend then spends[#spends + 1] = spend end
end
if refused then
  replies[1] = 1
elseif not dry then
  for _, spend in ipairs(spends) do spend() end
end
return finish(replies)

-- ratewise exact sliding-window log over chained windows, all or nothing, with a shared cooldown.
-- KEYS[1]      cooldown key (see gcra.lua)
-- KEYS[2..n+1] one sorted set per window: members unique per admitted unit, scored by arrival
-- ARGV[1]      cost (a positive integer)
-- ARGV[2]      time override in rebased microseconds, or "" to use Redis TIME
-- ARGV[3]      a token unique to this call (members are "<token>:<unit>")
-- ARGV[2i+2], ARGV[2i+3]  limit and window length (microseconds) of window i
-- A unit admitted at t counts in every window (t - W, t]; it stops counting at t + W exactly.
-- Memory per window is bounded by its limit: we never hold more members than that.
-- Returns { allowed (1/0), retry_after_us (string), remaining (integer), reason }.
-- (fmt and now come from prelude.lua)
local cost = tonumber(ARGV[1])
local token = ARGV[3]

local cooldown = tonumber(redis.call('GET', KEYS[1]) or '')
if cooldown and cooldown > now then
  return { 0, fmt(cooldown - now), 0, 'cooldown' }
end

local n = #KEYS - 1
local retry_after = 0
local remaining = nil
for i = 1, n do
  local limit = tonumber(ARGV[2 * i + 2])
  local window = tonumber(ARGV[2 * i + 3])
  local key = KEYS[i + 1]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  local left = limit - count
  if count + cost > limit then
    -- The unit that must leave before `cost` more fit is the (count + cost - limit)-th oldest.
    local oldest = redis.call('ZRANGE', key, count + cost - limit - 1, count + cost - limit - 1, 'WITHSCORES')
    local wait = tonumber(oldest[2]) + window - now
    if wait > retry_after then
      retry_after = wait
    end
  else
    left = left - cost
  end
  if left < 0 then
    left = 0
  end
  if remaining == nil or left < remaining then
    remaining = left
  end
end

if retry_after > 0 then
  return { 0, fmt(retry_after), remaining, 'quota' }
end

if cost == 0 then
  return { 1, '0', remaining, 'ok' }
end
-- ZADD in chunks: unpack() of more than about 8000 values fails (Lua's C stack limit), and a
-- token budget's cost can be tens of thousands of units.
local CHUNK = 1000
local stamp = fmt(now)
for i = 1, n do
  local window = tonumber(ARGV[2 * i + 3])
  local key = KEYS[i + 1]
  local first = 1
  while first <= cost do
    local last = math.min(cost, first + CHUNK - 1)
    local args = {}
    for unit = first, last do
      args[#args + 1] = stamp
      args[#args + 1] = token .. ':' .. unit
    end
    redis.call('ZADD', key, unpack(args))
    first = last + 1
  end
  redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1)
end
return { 1, '0', remaining, 'ok' }

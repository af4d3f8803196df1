-- ratewise GCRA over chained quotas, all or nothing, with a shared cooldown.
-- KEYS[1]      cooldown key: "until" in rebased microseconds, written by the cooldown script
-- KEYS[2..n+1] one TAT key per quota (a float, rebased microseconds)
-- ARGV[1]      cost (a positive integer)
-- ARGV[2]      time override in rebased microseconds, or "" to use Redis TIME (always "" in
--              production; tests replay arrival times through it)
-- ARGV[2i+1], ARGV[2i+2]  emission interval T (microseconds, float) and burst of quota i
-- Returns { allowed (1/0), retry_after_us (string), remaining (integer), reason }.
-- Floats travel as strings: Redis truncates Lua numbers to integers.
-- (fmt and now come from prelude.lua)
local cost = tonumber(ARGV[1])

local cooldown = tonumber(redis.call('GET', KEYS[1]) or '')
if cooldown and cooldown > now then
  return { 0, fmt(cooldown - now), 0, 'cooldown' }
end

local n = #KEYS - 1
local new_tats = {}
local retry_after = 0
local remaining = nil
for i = 1, n do
  local interval = tonumber(ARGV[2 * i + 1])
  local burst = tonumber(ARGV[2 * i + 2])
  local tat = tonumber(redis.call('GET', KEYS[i + 1]) or '') or now
  if tat < now then
    tat = now
  end
  local new_tat = tat + interval * cost
  local diff = now - (new_tat - interval * burst)
  if diff < 0 then
    if -diff > retry_after then
      retry_after = -diff
    end
    -- What is left without this request.
    diff = diff + interval * cost
  end
  local left = math.floor(diff / interval)
  if left < 0 then
    left = 0
  end
  if remaining == nil or left < remaining then
    remaining = left
  end
  new_tats[i] = new_tat
end

if retry_after > 0 then
  -- Denials write nothing.
  return { 0, fmt(retry_after), remaining, 'quota' }
end

for i = 1, n do
  -- The key lives until its TAT is back to "now": then it holds no information.
  local ttl_ms = math.ceil((new_tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i + 1], fmt(new_tats[i]), 'PX', ttl_ms)
end
return { 1, '0', remaining, 'ok' }

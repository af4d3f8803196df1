-- ratewise drain: a shared cooldown. Every acquire of this limiter key is denied until
-- now + duration, and each GCRA quota then restarts with one unit available and refills at its
-- rate (no burst right after a cooldown): tat = max(tat, until + (b - 1) * T).
-- KEYS[1]      cooldown key ("until" in rebased microseconds)
-- KEYS[2..n+1] GCRA TAT keys (none for the sliding window)
-- ARGV[1]      duration in microseconds
-- ARGV[2]      time override in rebased microseconds, or "" to use Redis TIME
-- ARGV[2i+1], ARGV[2i+2]  emission interval T (microseconds) and burst of quota i
-- Never shortens a longer cooldown. Returns the remaining cooldown in microseconds (string).
-- (fmt and now come from prelude.lua)
local target = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '')
if current and current > target then
  target = current
end
redis.call('SET', KEYS[1], fmt(target), 'PX', math.ceil((target - now) / 1000) + 1)
for i = 1, #KEYS - 1 do
  local interval = tonumber(ARGV[2 * i + 1])
  local burst = tonumber(ARGV[2 * i + 2])
  local pushed = target + (burst - 1) * interval
  local tat = tonumber(redis.call('GET', KEYS[i + 1]) or '')
  if tat == nil or tat < pushed then
    redis.call('SET', KEYS[i + 1], fmt(pushed), 'PX', math.ceil((pushed - now) / 1000) + 1)
  end
end
return fmt(target - now)

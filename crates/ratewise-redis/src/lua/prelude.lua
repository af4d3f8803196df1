-- ratewise: the prelude of every script (prepended at build time, see scripts.rs).
-- ARGV[2] is a time override in rebased microseconds, or "" to use Redis TIME (always "" in
-- production; tests replay arrival times through it).
-- tostring keeps 14 digits only: 17 keep every bit of a double.
local function fmt(x)
  return string.format('%.17g', x)
end
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  -- Numeric, never string concatenation: TIME's microseconds are not zero padded.
  -- Rebased to 2017-01-01 so that fractional microseconds keep their precision in a double.
  now = (tonumber(t[1]) - 1483228800) * 1000000 + tonumber(t[2])
end

-- The hot path in one round trip: key check, burst limit, quota or sandbox cap, metering.
-- Every key is passed in (Redis Cluster routes a script by its keys), and all of them carry the
-- key's account's hash tag, so they share one slot (metering.counters.tag).
-- KEYS[1]  cached key record (hash), written by gate.py on a miss
-- KEYS[2]  the key's burst counter for this second
-- KEYS[3]  the account's usage counter for the period ARGV[8]
-- KEYS[4]  the key's day counter          KEYS[5] its sandbox day counter
-- KEYS[6]  the key's day base (what this server's life found in KEYS[4] and KEYS[5]), and the ids
--          of the key's last 64 metered calls of the day in each area (fields v0..v63 and
--          s0..s63, the call's number in the day counter modulo 64: '<call id> <number>')
-- KEYS[7]  the bucket's dirty set (pairs the next flush persists)
-- KEYS[8]  the bucket's life on this server (set on its first metered call: gone if Redis was
--          flushed or restarted empty)
-- KEYS[9], KEYS[10], a job poll only: the job's held answer and its generation
--          (levqor_core.apijobs.poll_cache)
-- ARGV[1]  area: v1 | sandbox | meta
-- ARGV[2]  now, unix seconds
-- ARGV[3]  calendar period id (YYYY-MM)      ARGV[4] its end, unix seconds
-- ARGV[5]  UTC day (YYYY-MM-DD)              ARGV[6] its end, unix seconds
-- ARGV[7]  sandbox calls per key per day
-- ARGV[8]  the period KEYS[3] counts: when the key's period is another, {'period', its id} asks
--          the caller to run again with that period's counter
-- ARGV[9]  the call's id: should its reply be lost, the gate asks later whether this server
--          holds it (metering.counters.count_unless_held), so a call counted here and admitted
--          by the outage mode is not counted twice. A replica holds it iff it holds the count.
-- Returns {verdict, limit, remaining, reset, burst_limit, burst_remaining[, account_id, key_id
--          [, epoch, key's day counter after this call, period id]]}: the account and key on an
--          admitted call and on a refusal by the key's limits (the request log shows both); the
--          last three on a metered call, for gate.py's journal (what to replay should this
--          server's life end: its epoch is the server's replication id, which a restart or a
--          failover to a replica changes, and KEYS[8], which an emptied Redis loses); and on a
--          metered job poll, what poll_cache.py calls the gate's offer: the answer held on this
--          epoch, else 'g' and the job's generation (the fill checks the writes in flight).
local r = redis.call('HMGET', KEYS[1], 'acct', 'kid', 'quota', 'burst', 'pid', 'pend', 'exp')
if not r[1] then return {'miss'} end
if r[1] == '' then return {'unknown'} end
local now = tonumber(ARGV[2])
local acct, kid = r[1], r[2]
-- A rotated key past its grace period: refused, but still its account's call (the request log).
if r[7] and r[7] ~= '' and now >= tonumber(r[7]) then return {'expired', 0, 0, 0, 0, 0, acct, kid} end
local area, day = ARGV[1], ARGV[5]
local pid, pend = ARGV[3], ARGV[4]
if area == 'v1' then
  if r[5] and r[5] ~= '' and now < tonumber(r[6]) then pid, pend = r[5], r[6] end
  if pid ~= ARGV[8] then return {'period', pid} end
end
local sec = math.floor(now)

local burst = tonumber(r[4])
local b = redis.call('INCR', KEYS[2])
if b == 1 then redis.call('EXPIRE', KEYS[2], 2) end
if b > burst then return {'burst', burst, 0, sec + 1, burst, 0, acct, kid} end

if area == 'meta' then
  return {'ok', burst, burst - b, sec + 1, burst, burst - b, acct, kid}
end

local dirty = kid .. '|' .. acct .. '|' .. day
-- This server's life (metering.counters._EPOCH, the same lines).
local life = redis.call('GET', KEYS[8])
if not life then
  local t = redis.call('TIME')
  life = t[1] .. '.' .. t[2]
  redis.call('SET', KEYS[8], life)
end
local epoch = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') .. ':' .. life
if redis.call('HGET', KEYS[6], 'epoch') ~= epoch then
  redis.call('HSET', KEYS[6], 'epoch', epoch, 'calls', redis.call('GET', KEYS[4]) or 0,
    'sandbox', redis.call('GET', KEYS[5]) or 0)
  redis.call('EXPIRE', KEYS[6], 8 * 86400)
end
if area == 'sandbox' then
  local cap = tonumber(ARGV[7])
  local n = tonumber(redis.call('GET', KEYS[5]) or '0')
  if n >= cap then return {'sandbox', cap, 0, ARGV[6], burst, burst - b, acct, kid} end
  n = redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], 8 * 86400)
  redis.call('HSET', KEYS[6], 's' .. n % 64, ARGV[9] .. ' ' .. n)
  redis.call('SADD', KEYS[7], dirty)
  return {'ok', cap, cap - n, ARGV[6], burst, burst - b, acct, kid, epoch, n, ''}
end

local quota = tonumber(r[3])
local n = tonumber(redis.call('GET', KEYS[3]) or '0')
if quota >= 0 and n >= quota then return {'quota', quota, 0, pend, burst, burst - b, acct, kid} end
n = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], 70 * 86400)
local d = redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], 8 * 86400)
redis.call('HSET', KEYS[6], 'v' .. d % 64, ARGV[9] .. ' ' .. d)
redis.call('SADD', KEYS[7], dirty)
local reply
if quota < 0 then
  reply = {'ok', -1, -1, pend, burst, burst - b, acct, kid, epoch, d, pid}
else
  reply = {'ok', quota, quota - n, pend, burst, burst - b, acct, kid, epoch, d, pid}
end
if KEYS[10] then
  local held = redis.call('HMGET', KEYS[9], 'body', 'epoch')
  if held[1] and held[2] == epoch then
    reply[12] = held[1]
  else
    reply[12] = 'g' .. (redis.call('GET', KEYS[10]) or '0')
  end
end
return reply

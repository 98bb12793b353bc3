-- The hot path in one round trip: key check, burst limit, quota or sandbox cap, metering.
-- KEYS[1]  cached key record (hash), written by gate.py on a miss
-- KEYS[2]  (optional) the caller's address's count of failed authentications this minute
-- ARGV[1]  area: v1 | sandbox | meta
-- ARGV[2]  now, unix seconds
-- ARGV[3]  calendar period id (YYYY-MM)      ARGV[4] its end, unix seconds
-- ARGV[5]  UTC day (YYYY-MM-DD)              ARGV[6] its end, unix seconds
-- ARGV[7]  sandbox calls per key per day
-- ARGV[8]  failed authentications allowed per address per window   ARGV[9] the window's end
-- Returns {verdict, limit, remaining, reset, burst_limit, burst_remaining[, account_id, key_id
--          [, epoch, key's day counter after this call, period id]]}: the account and key on an
--          admitted call and on a refusal by the key's limits (the request log shows both); the
--          last three on a metered call, for gate.py's journal (what to replay should this Redis
--          be lost).
local r = redis.call('HMGET', KEYS[1], 'acct', 'kid', 'quota', 'burst', 'pid', 'pend', 'exp')
if not r[1] or r[1] == '' then
  -- Not a known key: an address that failed too often is refused before the database is asked
  -- (a miss) and without telling it whether the key exists. A valid cached key never gets here.
  if KEYS[2] then
    local failed
    if r[1] then
      failed = redis.call('INCR', KEYS[2]) - 1
      if failed == 0 then redis.call('EXPIRE', KEYS[2], 120) end
    else
      failed = tonumber(redis.call('GET', KEYS[2]) or '0')
    end
    if failed >= tonumber(ARGV[8]) then return {'guessing', ARGV[8], 0, ARGV[9]} end
  end
  if not r[1] then return {'miss'} end
  return {'unknown'}
end
local now = tonumber(ARGV[2])
local acct, kid = r[1], r[2]
-- A rotated key past its grace period: refused, but still its account's call (the request log).
if r[7] and r[7] ~= '' and now >= tonumber(r[7]) then return {'expired', 0, 0, 0, 0, 0, acct, kid} end
local sec = math.floor(now)

local burst = tonumber(r[4])
local bkey = 'lvq:b:' .. kid .. ':' .. sec
local b = redis.call('INCR', bkey)
if b == 1 then redis.call('EXPIRE', bkey, 2) end
if b > burst then return {'burst', burst, 0, sec + 1, burst, 0, acct, kid} end

local area, day = ARGV[1], ARGV[5]
if area == 'meta' then
  return {'ok', burst, burst - b, sec + 1, burst, burst - b, acct, kid}
end

local dirty = kid .. '|' .. acct .. '|' .. day
-- This server's life: set on its first metered call, so an empty restarted Redis gets a new one.
local epoch = redis.call('GET', 'lvq:epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. '.' .. t[2]
  redis.call('SET', 'lvq:epoch', epoch)
end
if area == 'sandbox' then
  local cap = tonumber(ARGV[7])
  local skey = 'lvq:s:' .. kid .. ':' .. day
  local n = tonumber(redis.call('GET', skey) or '0')
  if n >= cap then return {'sandbox', cap, 0, ARGV[6], burst, burst - b, acct, kid} end
  n = redis.call('INCR', skey)
  redis.call('EXPIRE', skey, 8 * 86400)
  redis.call('SADD', 'lvq:dirty', dirty)
  return {'ok', cap, cap - n, ARGV[6], burst, burst - b, acct, kid, epoch, n, ''}
end

local pid, pend = ARGV[3], ARGV[4]
if r[5] and r[5] ~= '' and now < tonumber(r[6]) then pid, pend = r[5], r[6] end
local quota = tonumber(r[3])
local ukey = 'lvq:u:' .. acct .. ':' .. pid
local n = tonumber(redis.call('GET', ukey) or '0')
if quota >= 0 and n >= quota then return {'quota', quota, 0, pend, burst, burst - b, acct, kid} end
n = redis.call('INCR', ukey)
redis.call('EXPIRE', ukey, 70 * 86400)
local dkey = 'lvq:d:' .. kid .. ':' .. day
local d = redis.call('INCR', dkey)
redis.call('EXPIRE', dkey, 8 * 86400)
redis.call('SADD', 'lvq:dirty', dirty)
if quota < 0 then return {'ok', -1, -1, pend, burst, burst - b, acct, kid, epoch, d, pid} end
return {'ok', quota, quota - n, pend, burst, burst - b, acct, kid, epoch, d, pid}

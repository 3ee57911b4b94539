"""Lua scripts of the Redis state backend: every change that must be atomic is one script.

Keys share one hash tag (`{...}` in the prefix), so a Redis Cluster keeps them in one slot and
the scripts stay atomic there too. Every key a script touches is passed in KEYS, except the
per-channel indexes below, which a script names from the prefix (the last ARGV) because which
channels an agent change touches is only known inside it; they carry the same hash tag.

Agent data: `status` (agent -> status), `since` (agent -> status_since), `idle` (agent ->
idle since), `cap` and `load` (agent + US + channel -> count), `busy` (agent -> load over all
channels). Waiting set: `waiting` (contact -> entry JSON), `queue:<channel>` (sorted set by
arrival sequence), `ranks:<channel>` (queue rank -> count), `checks` (contact -> next check).
Reservations: `res` (id -> JSON), `res_exp` (id -> expiry), `res_agent:<agent>` (set of ids).
Per-channel indexes, kept by every script that changes presence, capacity or load, so that a
dispatch reads them in one go: `freevec:<channel>` (free slots of every agent as little-endian
int32, 0 unless available, at the agent's place in `agent_order`), `idlevec` (idle since, as
little-endian float64, same places; every script that sets `idle` refreshes the indexes after
it) and `staffed:<channel>` (available agents with capacity
on the channel).
"""

from __future__ import annotations

# refresh(prefix, agent, channel): the agent's entries in the channel's indexes, from its
# status, capacity, load and idle time. An agent's place in the vectors is its score in
# `agent_order` (0, 1, 2, ... in the order agents were first stored).
_INDEX = """
local function refresh(p, agent, channel)
  local field = agent .. '\\31' .. channel
  local free = 0
  local cap = tonumber(redis.call('HGET', p .. 'cap', field) or '0')
  if cap > 0 and redis.call('HGET', p .. 'status', agent) == 'available' then
    redis.call('SADD', p .. 'staffed:' .. channel, agent)
    free = cap - tonumber(redis.call('HGET', p .. 'load', field) or '0')
  else
    redis.call('SREM', p .. 'staffed:' .. channel, agent)
  end
  if free < 0 then free = 0 end
  local place = tonumber(redis.call('ZSCORE', p .. 'agent_order', agent))
  if not place then return end
  redis.call('SETRANGE', p .. 'freevec:' .. channel, place * 4, struct.pack('<i', free))
  local idle = tonumber(redis.call('HGET', p .. 'idle', agent) or '0')
  redis.call('SETRANGE', p .. 'idlevec', place * 8, struct.pack('<d', idle))
end
local function refresh_all(p, agent, profile)
  if not profile then return end
  for channel, _ in pairs(cjson.decode(profile)['capacity']) do refresh(p, agent, channel) end
end
"""

# KEYS: waiting, queue, ranks, checks, seq
# ARGV: contact_id, entry_json, queue_rank, next_check_at ("" = never)
ADD_WAITING = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1]) end
return seq
"""

# A changed next check time is scheduled; an unchanged one is not scheduled again (it may have
# been taken by DUE_FOR_CHECK already), as in the in-process backend.
# KEYS: waiting, checks
# ARGV: contact_id, entry_json, next_check_at ("" = never)
UPDATE_WAITING = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
if not previous then return 0 end
local old = cjson.decode(previous)['next_check_at']
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '' then
  if old ~= cjson.null then redis.call('ZREM', KEYS[2], ARGV[1]) end
elseif old == cjson.null or tonumber(ARGV[3]) ~= old then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
"""

# KEYS: waiting, queue, ranks, checks
# ARGV: contact_id, queue_rank
REMOVE_WAITING = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
redis.call('ZREM', KEYS[4], ARGV[1])
return entry
"""

# KEYS: checks, waiting
# ARGV: now
DUE_FOR_CHECK = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #due == 0 then return {} end
redis.call('ZREM', KEYS[1], unpack(due))
local out = {}
for _, id in ipairs(due) do
  local entry = redis.call('HGET', KEYS[2], id)
  if entry then table.insert(out, entry) end
end
return out
"""

# The claim: the contact still waits, the agent is available with a free slot on the channel.
# KEYS: waiting, queue, ranks, checks, status, cap, load, busy, idle, res, res_exp, res_agent
# ARGV: contact_id, queue_rank, agent_id, agent+US+channel, reservation_id, reservation_json,
#       expires_at, created_at, channel, prefix
CLAIM = (
    _INDEX
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[5], ARGV[3]) ~= 'available' then return 0 end
local cap = tonumber(redis.call('HGET', KEYS[6], ARGV[4]) or '0')
local load = tonumber(redis.call('HGET', KEYS[7], ARGV[4]) or '0')
if load >= cap then return 0 end
redis.call('HINCRBY', KEYS[7], ARGV[4], 1)
redis.call('HINCRBY', KEYS[8], ARGV[3], 1)
redis.call('HSET', KEYS[9], ARGV[3], ARGV[8])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[10], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[11], ARGV[7], ARGV[5])
redis.call('SADD', KEYS[12], ARGV[5])
refresh(ARGV[10], ARGV[3], ARGV[9])
return 1
"""
)

# Free one slot; the agent's idle time restarts when nothing is left on any channel.
# KEYS: load, busy, idle   ARGV: agent_id, agent+US+channel, now, channel, prefix
_RELEASE_BODY = (
    _INDEX
    + """
local function release(load_key, busy_key, idle_key, agent, field, now)
  local load = tonumber(redis.call('HGET', load_key, field) or '0')
  if load > 0 then
    redis.call('HINCRBY', load_key, field, -1)
    redis.call('HINCRBY', busy_key, agent, -1)
  end
  if tonumber(redis.call('HGET', busy_key, agent) or '0') <= 0 then
    redis.call('HSET', idle_key, agent, now)
  end
end
"""
)

RELEASE = (
    _RELEASE_BODY
    + """
release(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
refresh(ARGV[5], ARGV[1], ARGV[4])
return 1
"""
)

# KEYS: res, res_exp, res_agent, load, busy, idle
# ARGV: reservation_id, keep_load ("1"/"0"), agent_id, agent+US+channel, now, channel, prefix
END_RESERVATION = (
    _RELEASE_BODY
    + """
local reservation = redis.call('HGET', KEYS[1], ARGV[1])
if not reservation then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
if ARGV[2] == '0' then
  release(KEYS[4], KEYS[5], KEYS[6], ARGV[3], ARGV[4], ARGV[5])
  refresh(ARGV[7], ARGV[3], ARGV[6])
end
return reservation
"""
)

# KEYS: status, since, idle, busy, profiles
# ARGV: agent_id, status, at, prefix
SET_STATUS = (
    _INDEX
    + """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if current ~= ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  if ARGV[2] == 'available' and tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0') <= 0 then
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
  end
  refresh_all(ARGV[4], ARGV[1], redis.call('HGET', KEYS[5], ARGV[1]))
end
return 1
"""
)

# A new agent joins the end of `agent_order` (the floor's order, which breaks ties as the
# in-process backend's insertion order does).
# KEYS: profiles, status, since, idle, cap, profile_version, agent_order
# ARGV: agent_id, profile_json, status, status_since, then pairs (agent+US+channel, capacity)
#       for every channel of the new profile, then "--", then the old profile's cap fields,
#       then "--", then the prefix
PUT_AGENT = (
    _INDEX
    + """
local agent = ARGV[1]
local previous = redis.call('HGET', KEYS[2], agent)
if redis.call('HEXISTS', KEYS[1], agent) == 0 then
  redis.call('ZADD', KEYS[7], redis.call('ZCARD', KEYS[7]), agent)
end
redis.call('HSET', KEYS[1], agent, ARGV[2])
if previous ~= ARGV[3] then
  redis.call('HSET', KEYS[2], agent, ARGV[3])
  redis.call('HSET', KEYS[3], agent, ARGV[4])
  redis.call('HSET', KEYS[4], agent, ARGV[4])
end
local i = 5
while ARGV[i] ~= '--' do
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1])
  i = i + 2
end
i = i + 1
local dropped = {}
while ARGV[i] ~= '--' do
  redis.call('HDEL', KEYS[5], ARGV[i])
  table.insert(dropped, string.sub(ARGV[i], string.len(agent) + 2))
  i = i + 1
end
local p = ARGV[i + 1]
refresh_all(p, agent, ARGV[2])
for _, channel in ipairs(dropped) do refresh(p, agent, channel) end
return redis.call('INCR', KEYS[6])
"""
)

# Recovery: one more connected contact on an agent.
# KEYS: load, busy   ARGV: agent_id, agent+US+channel, channel, prefix
ADD_LOAD = (
    _INDEX
    + """
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
refresh(ARGV[4], ARGV[1], ARGV[3])
return 1
"""
)

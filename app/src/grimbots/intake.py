"""Take a Telegram update in one atomic step: the dedup locks and the RQ job together.

One Lua script on the queue Redis checks the intake locks (layers 1-3), and for a new update
writes the RQ job hash, pushes the job id on the `webhook` queue and takes the locks, all or
nothing. There is no moment at which an update is locked but not queued, so a delivery that
failed for any reason (Redis away, reply lost, the web worker killed) is accepted again when
Telegram repeats it; and a repeat whose first attempt did get through finds the lock and the
job together, so it is answered 200 without queueing twice.

The job id is derived from (bot, update_id): while the job exists (queued, running, waiting for
a retry, failed) the same update is a duplicate even after its 20 s lock expired.

With replicas behind the queue Redis (phase 3: a Sentinel primary and its replicas), `WAIT`
follows the script in the same pipeline (one round trip). An update is answered 200 only once
a replica holds it; when none acknowledges in time the caller answers 503, Telegram repeats
the update, and the repeat waits for the replica again: a duplicate also writes (it re-arms
the update lock), so its `WAIT` covers whatever the first attempt left on the primary.

The RQ job is built by RQ's own Job class and written field for field as `Queue.enqueue`
writes it, so workers run it unchanged.
"""

from __future__ import annotations

import hashlib
import zlib
from datetime import timedelta

from redis.exceptions import NoScriptError, RedisError
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import DefaultSerializer
from rq.utils import now, utcformat

from grimbots.queues import DEFAULT_RETRY, WEBHOOK
from grimbots.redis_pool import get_pools

JOB_FUNC = "grimbots.jobs.process_update"
# A job that failed for good stays a week in RQ's failed registry, for the operator.
FAILURE_TTL = int(timedelta(days=7).total_seconds())
QUEUES_KEY = Queue.redis_queues_keys

# KEYS: 1 job hash, 2 queue list, 3 RQ's set of queues, 4 the update-id lock, 5.. other locks.
# ARGV: 1 job id, 2 queue key, 3..2+n the n lock TTLs (update id first), then the values of the
# job's fields that differ per update (VARYING, in that order). The fields every job of this
# process shares are written into the script itself (`script()`): fewer arguments to pack per
# request, the same hash, field for field and in RQ's order.
# Returns 0 when the update was taken, else the 1-based index of the layer that held it.
SCRIPT = """
local job_id = ARGV[1]
local nlocks = #KEYS - 3
local v = 2 + nlocks
local function seen(layer)
  -- A write even for a duplicate: it moves this client's replication offset to the present,
  -- so a WAIT after it covers what an earlier attempt of the same update wrote.
  redis.call('SET', KEYS[4], job_id, 'EX', ARGV[3])
  return layer
end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then
  return seen(1)
end
for i = 2, nlocks do
  if redis.call('EXISTS', KEYS[3 + i]) == 1 then
    return seen(i)
  end
end
redis.call('HSET', KEYS[1], @FIELDS@)
redis.call('RPUSH', KEYS[2], job_id)
redis.call('SADD', KEYS[3], ARGV[2])
for i = 1, nlocks do
  redis.call('SET', KEYS[3 + i], job_id, 'EX', ARGV[2 + i])
end
return 0
"""
# The job fields computed per update; every other field is the same for all of this process's jobs.
VARYING = ("created_at", "data", "description", "enqueued_at")


def _redis_bytes(value) -> bytes:
    """A value as redis-py's encoder sends it (str as UTF-8, numbers as their repr)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise TypeError("redis-py refuses booleans")
    if isinstance(value, (int, float)):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def _lua_string(raw: bytes) -> str:
    """A Lua string literal holding exactly these bytes (decimal escapes for anything unusual)."""
    plain = (chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\{b:03d}" for b in raw)
    return '"' + "".join(plain) + '"'


def script(fixed: dict) -> tuple[str, str]:
    """The intake script for jobs sharing ``fixed`` (field -> value, in RQ's order, VARYING
    fields at their place with any value) and its SHA-1, Redis' name for it."""
    parts, position = [], 0
    for field, value in fixed.items():
        parts.append(_lua_string(field.encode()))
        if field in VARYING:
            position += 1
            parts.append(f"ARGV[v + {VARYING.index(field) + 1}]")
        else:
            parts.append(_lua_string(_redis_bytes(value)))
    assert position == len(VARYING), "every varying field is in RQ's hash"
    text = SCRIPT.replace("@FIELDS@", ", ".join(parts))
    # Redis names a script by its SHA-1; not a security use.
    return text, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


# Requeue a queued intake job that is neither in its queue nor in the started registry: a worker
# killed right after it popped the job took it with it, or left it in RQ's intermediate list
# (moved there by the pop, never registered as started). Confirmed on two passes CONFIRM seconds
# apart, so a job popped a moment ago by a live worker is left alone. A job taken out of the
# intermediate list leaves it here, with RQ's first-seen mark, so RQ's own cleanup of that list
# (fail and retry, after a minute) cannot run it a second time; never while that cleanup holds
# the queue's maintenance lock. Run only for the few jobs a pass found missing, so its LPOS and
# ZRANGE stay rare.
# KEYS: 1 job hash, 2 queue, 3 intermediate list, 4 started registry, 5 candidate marker,
# 6 RQ's maintenance lock of the queue, 7 RQ's first-seen mark of the job in the intermediate list.
# ARGV: 1 job id, 2 latest enqueued_at considered, 3 seconds between the two sightings.
# Returns 0 (not lost), 1 (pushed again) or 2 (lost so far: look again on a later pass).
LOST_SCRIPT = """
local job_id = ARGV[1]
local function settled()
  redis.call('DEL', KEYS[5])
  return 0
end
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return settled() end
local enqueued = redis.call('HGET', KEYS[1], 'enqueued_at')
if not enqueued or enqueued > ARGV[2] then return settled() end
if redis.call('LPOS', KEYS[2], job_id) then return settled() end
local prefix = job_id .. ':'
for _, entry in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if entry == job_id or string.sub(entry, 1, #prefix) == prefix then return settled() end
end
local now = tonumber(redis.call('TIME')[1])
local first = redis.call('GET', KEYS[5])
if not first then
  redis.call('SET', KEYS[5], now, 'EX', 86400)
  return 2
end
if now - tonumber(first) < tonumber(ARGV[3]) then return 2 end
if redis.call('LPOS', KEYS[3], job_id) then
  if redis.call('EXISTS', KEYS[6]) == 1 then return 2 end
  redis.call('LREM', KEYS[3], 0, job_id)
  redis.call('DEL', KEYS[7])
end
redis.call('RPUSH', KEYS[2], job_id)
redis.call('DEL', KEYS[5])
return 1
"""
# Where the scan of intake job hashes stopped (it goes on from there next pass, so every job is
# examined eventually), and the jobs seen lost once and waiting for their second sighting.
LOST_CURSOR = "gb:intake:lost:cursor"
LOST_CANDIDATES = "gb:intake:lost:candidates"
_JOB_PREFIX = Job.redis_job_namespace_prefix


def _members(conn, queue_key: str, started: str) -> set[bytes]:
    """Every job id in the queue or the started registry, read once per pass (one LRANGE and
    one ZRANGE), so membership costs O(1) per job examined. Not the intermediate list: a job
    left there by a dead worker is lost as well."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.lrange(queue_key, 0, -1)
        pipe.zrange(started, 0, -1)
        queued, running = pipe.execute()
    return {*queued, *(entry.split(b":", 1)[0] for entry in running)}


def _scan_batch(conn, cursor: int, limit: int) -> tuple[int, list[bytes]]:
    """Job ids of intake jobs from `cursor` on, about `limit` of them; returns the next cursor
    (0 once the keyspace has been walked through)."""
    ids: list[bytes] = []
    pattern = _JOB_PREFIX + "tg-*"
    while True:
        cursor, keys = conn.scan(cursor, match=pattern, count=min(500, limit))
        ids += [k[len(_JOB_PREFIX) :] for k in keys if b":" not in k[len(_JOB_PREFIX) :]]
        if cursor == 0 or len(ids) >= limit:
            return int(cursor), ids


def requeue_lost(grace: float = 60.0, confirm: float = 10.0, limit: int = 10_000) -> dict:
    """Reconciler: put intake jobs that a dying worker took with it back on their queue.

    A job enqueued more than `grace` seconds ago, still `queued`, and found neither in its
    queue nor in the started registry on two passes `confirm` seconds apart is pushed again,
    once (RQ moves a popped job into the started registry within milliseconds); one left in
    RQ's intermediate list is taken out of it, so RQ's own cleanup does not run it again.
    Telegram does not repeat an update it got a 200 for, and the job's existence makes the
    intake answer "duplicate", so without this the update would wait for ever.

    One pass examines about `limit` job hashes (one pipelined HMGET each), going on from where
    the last pass stopped, so a backlog or a week of failed jobs larger than `limit` delays a
    lost job by a few passes but never hides it; jobs seen lost once are looked at every pass.
    """
    conn = get_pools().queue()
    cutoff = utcformat(now() - timedelta(seconds=grace)).encode()
    queue_key = Queue.redis_queue_namespace_prefix + WEBHOOK
    intermediate = IntermediateQueue.get_intermediate_queue_key(queue_key)
    started = StartedJobRegistry(WEBHOOK, connection=conn).key
    present = _members(conn, queue_key, started)
    rq_queue = Queue(WEBHOOK, connection=conn)
    moving = IntermediateQueue(queue_key, connection=conn)
    cursor, ids = _scan_batch(conn, int(conn.get(LOST_CURSOR) or 0), limit)
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(_JOB_PREFIX.encode() + job_id, "status", "enqueued_at")
        fields = pipe.execute()
    suspects = {
        job_id
        for job_id, (status, enqueued) in zip(ids, fields, strict=True)
        if status == b"queued" and enqueued and enqueued <= cutoff and job_id not in present
    }
    suspects |= set(conn.smembers(LOST_CANDIDATES))
    script = conn.register_script(LOST_SCRIPT)
    requeued = 0
    for raw in suspects:
        job_id = raw.decode()
        keys = [
            *(Job.key_for(job_id), queue_key, intermediate, started, f"gb:intake:lost:{job_id}"),
            *(rq_queue.registry_cleaning_key, moving.get_first_seen_key(job_id)),
        ]
        outcome = int(script(keys=keys, args=[job_id, cutoff, confirm]))
        requeued += outcome == 1
        if outcome == 2:
            conn.sadd(LOST_CANDIDATES, job_id)
        else:
            conn.srem(LOST_CANDIDATES, job_id)
    conn.set(LOST_CURSOR, cursor)
    return {"checked": len(ids), "requeued": requeued}


class NotReplicated(RedisError):
    """The update is on the queue primary, but no replica acknowledged it in time."""


def job_id_for(bot_id: int, update_id: int) -> str:
    return f"tg-{bot_id}-{update_id}"


def _job_template() -> dict:
    """The hash RQ writes for one of these jobs, built once by RQ's own Job class."""
    global _template
    if _template is None:
        job = Job.create(
            JOB_FUNC,
            args=(0, {}),
            connection=get_pools().queue(),  # not used: to_dict() sends nothing
            id=job_id_for(0, 0),
            origin=WEBHOOK,
            result_ttl=0,
            failure_ttl=FAILURE_TTL,
            timeout=Queue.DEFAULT_TIMEOUT,
            description="",
            status=JobStatus.QUEUED,
        )
        job.retries_left = DEFAULT_RETRY.max
        job.retry_intervals = DEFAULT_RETRY.intervals
        job.enqueue_at_front_on_retry = DEFAULT_RETRY.enqueue_at_front
        job.enqueued_at = now()
        _template = job.to_dict()
    return _template


_template: dict | None = None


def job_fields(bot_id: int, update: dict) -> tuple[str, dict]:
    """The RQ job id and hash for one update, as `Queue.enqueue` would write them.

    Only what differs per update is computed here (RQ's Job object costs more than the rest
    of the request): the pickled call, the timestamps and the description.
    """
    update_id = update["update_id"]
    stamp = utcformat(now())
    call = (JOB_FUNC, None, (bot_id, update), {})
    return job_id_for(bot_id, update_id), {
        **_fixed_fields(),
        "data": zlib.compress(DefaultSerializer.dumps(call)),
        "created_at": stamp,
        "enqueued_at": stamp,
        # RQ logs the description; its default would carry the user's message.
        "description": f"process_update(bot={bot_id}, update={update_id})",
    }


def _fixed_fields() -> dict:
    return {**_job_template(), "timeout": get_pools().settings.job_timeout}


# (fixed fields, script text, its SHA-1) of this process; rebuilt if the fields change.
_script: tuple[dict, str, str] | None = None


def current_script() -> tuple[str, str]:
    """This process's intake script and its SHA-1."""
    global _script
    fixed = _fixed_fields()
    if _script is None or _script[0] != fixed:
        _script = (fixed, *script(fixed))
    return _script[1], _script[2]


def take(bot_id: int, update: dict, locks: list[tuple[str, str, int]]) -> str | None:
    """Lock and queue the update atomically. None when taken, else the layer that held it.

    Raises RedisError when Redis cannot be reached (nothing or everything was written: a
    repeat of the update is safe either way), NotReplicated when a replica did not confirm.
    """
    pools = get_pools()
    settings = pools.settings
    conn = pools.queue()
    job_id, fields = job_fields(bot_id, update)
    text, sha = current_script()
    queue_key = Queue.redis_queue_namespace_prefix + WEBHOOK
    keys = [Job.key_for(job_id), queue_key, QUEUES_KEY, *(key for _, key, _ in locks)]
    args = [job_id, queue_key, *(ttl for _, _, ttl in locks), *(fields[f] for f in VARYING)]
    replicas = settings.queue_min_replicas

    def run() -> list:
        if not replicas:  # one command: no pipeline object needed
            try:
                return [conn.execute_command("EVALSHA", sha, len(keys), *keys, *args)]
            except NoScriptError as exc:
                return [exc]
        pipe = conn.pipeline(transaction=False)
        pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        pipe.execute_command("WAIT", replicas, settings.queue_wait_timeout_ms)
        return pipe.execute(raise_on_error=False)

    results = run()
    if isinstance(results[0], NoScriptError):
        # First use on this server (or after a failover or restart): load it, run again.
        conn.script_load(text)
        results = run()
    for result in results:
        if isinstance(result, Exception):
            raise result
    if replicas and int(results[1]) < replicas:
        raise NotReplicated(f"{int(results[1])} of {replicas} replicas acknowledged in time")
    held = int(results[0])
    return None if held == 0 else locks[held - 1][0]

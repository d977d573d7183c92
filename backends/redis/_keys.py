"""The Redis key scheme of monoq.

Every key of a queue carries the queue's name as a hash tag, ``<prefix>:{<queue>}:<part>``, so
that all keys one queue-scoped script touches hash to one slot and the scripts could run on
Redis Cluster. A job's hash and its attempt list live under the tag of the job's queue too
(``<prefix>:{<queue>}:job:<id>``), which lets queue-scoped scripts (claim, finish, promote,
purge) reach them.

Per queue ``q`` (``P`` is the ``key_prefix`` option, default ``monoq``):

``P:{q}:job:<id>``      HASH   the job (fields in ``FIELDS`` below)
``P:{q}:att:<id>``      LIST   attempt records, oldest first, each a small JSON object
``P:{q}:ready``         ZSET   QUEUED ids, score ``priority * 10**13 + run_at_ms`` (exact in a
                               double until the year 2286); equal scores sort by id, and ids
                               are time-ordered, so claims go by (priority, run_at, id)
``P:{q}:scheduled``     ZSET   SCHEDULED ids by run_at_ms
``P:{q}:retrying``      ZSET   RETRYING ids by run_at_ms
``P:{q}:running``       ZSET   RUNNING ids by lease expiry ms
``P:{q}:completed`` / ``P:{q}:dead`` / ``P:{q}:cancelled``
                        ZSET   terminal ids by finished_at ms (what purge walks)
``P:{q}:ids:<state>``   ZSET   one per state (``queued``, ``scheduled``, ``retrying``,
                               ``running``, ``completed``, ``dead``, ``cancelled``: the values of
                               the ``st`` field): the ids of the queue's jobs in that state, score
                               0, so ZREVRANGEBYLEX gives them newest first. Every id is in
                               exactly the index of its job's ``st``: each script that sets
                               ``st`` (enqueue, claim, finish, promote, cancel, requeue) ZREMs the
                               id from the old state's index and ZADDs it to the new one in the
                               same step, and purge and purge_schedule_runs remove it with the
                               job. list_jobs merges the indexes of the states asked for, newest
                               first; its cursor is simply the last id of a page
``P:{q}:idem``          HASH   idempotency key -> id (written by the enqueue script)
``P:{q}:paused``        STRING present while the queue is paused
``P:{q}:wake``          LIST   wake tokens for workers (BLPOP), capped with LTRIM
``P:{q}:changes``       LIST   wake token for schedulers (next_wakeup may have moved), cap 1
``P:{q}:tput``          HASH   throughput counters: epoch minute (``epoch_ms // 60000``, in
                               decimal) -> ``"<completed>:<failed>:<dead>"``, written by the
                               finish script in the same step as the state change. When a new
                               minute makes the hash hold more than 1560 minutes, the script
                               deletes those older than 25 h, so it stays bounded.
``P:{q}:waits``         LIST   the waits (ms from run_at to the claim) of the queue's last 1000
                               first attempts, newest first: LPUSH + LTRIM in the claim script

Global keys (no queue tag; each is a slot of its own on a cluster):

``P:queues``            SET    known queue names
``P:jobq``              HASH   job id -> queue name, so ``get(id)`` finds the job's hash in one
                               lookup. Ids are chosen by the client (``NewJob.id``) and carry no
                               queue, and probing every queue per ``get`` costs O(queues); a
                               hash field per job is ~30 bytes. Enqueue writes a job's entry
                               before the job (HSETNX), and a delete removes it after the job
                               (only while it still names the job's queue): an entry whose job
                               is not there (yet, or any more) answers None, so ``get`` never
                               misses a stored job.
``P:changes``           LIST   scheduler wake token for a queue the scheduler does not yet know,
                               and for schedule changes
``P:workers``           ZSET   worker id -> expiry ms (last_seen + ttl)
``P:workerinfo``        HASH   worker id -> JSON of WorkerInfo
``P:beats``             HASH   component name (``scheduler:<id>``) -> epoch ms of its latest
                               beat; the beat script deletes entries older than 24 h
``P:audit``             ZSET   the audit log: each entry's JSON (``AuditEntry.encode``, its id
                               first, so equal scores sort by id) scored by its time in epoch
                               ms. One key, so every audit call touches one slot; ``list_audit``
                               walks it newest first (ZREVRANGEBYSCORE), ``purge_audit`` reads
                               the oldest entries before its horizon and ZREMs them

Schedules (global keys: a schedule is not tied to one queue, and its runs may span queues when
its ``queue`` is edited):

``P:schedules``         SET    every schedule id (the index list_schedules reads)
``P:schedule:<id>``     HASH   one schedule (fields in ``SCHEDULE_FIELDS`` below); times are
                               epoch microseconds, so every datetime round-trips exactly and
                               ``advance_schedule`` compares integers (exact in a double)
``P:schedruns:<id>``    ZSET   the ids of the schedule's runs, score 0 (lex order = id order,
                               newest last), as the ``ids:<state>`` indexes are per queue.
                               Enqueue adds a run once its job is stored; every path that
                               deletes a job (purge, purge_schedule_runs) removes it after the
                               job. The index outlives ``delete_schedule`` (the runs keep their
                               ``schedule_id``). Readers skip an id whose job is gone, and
                               purge_schedule_runs drops such an entry when it meets one.
                               list_jobs with ``schedule_id`` walks it newest first, looking
                               each run's queue up in ``jobq``.

Before the per-state id indexes, a queue had one id index of every job, ``P:{q}:ids`` (ZSET,
score 0). ``connect`` moves what such a key still holds into the per-state indexes, 1000 ids per
script call (read the job's ``st``, ZADD to ``ids:<st>``, ZREM from ``ids``; an id whose job is
gone is dropped), until the key is gone. Every process of a deployment must run a version with
the per-state indexes: an older process would write ``P:{q}:ids`` again and leave the per-state
indexes stale until the next ``connect`` of a newer one.

Hash slots (Redis Cluster): every script call touches the keys of one slot: those it is given
in KEYS, and keys it derives from a prefix given in KEYS that carries the same hash tag (a
script that picks jobs by score cannot know their ids in advance: the BullMQ approach). Queue
scripts (enqueue, claim, extend, finish, promote, cancel, requeue, expired, purge, drop, list,
pause, the id index migration) stay in their queue's slot; the others (index, unindex,
register, workers, schedule, advance, beat) each touch one global key. What spans slots is a
sequence of such steps, ordered so that nothing is lost and ``get(id)`` never misses a stored
job:

- enqueue: HSETNX of each id in ``jobq`` (one pipeline), then per queue one enqueue script (a
  batch is atomic per queue, no longer across queues) with SADD of the queues that get new
  jobs, then, when needed, the schedulers' wake, the run indexes and reads of ids stored in
  other queues (see ``RedisBackend._enqueue_chunk``);
- pause: SADD of the queue (a wake of the schedulers when it is new), then the pause script;
- purge and purge_schedule_runs: the jobs are deleted by queue scripts, then their ``jobq`` and
  ``schedruns`` entries go;
- list_jobs over several queues: one read-only script per queue in one pipeline, pages merged
  by id in Python (a page is no longer one snapshot of every queue); with ``schedule_id``: the
  run index, ``jobq`` and the jobs' hashes, read in turn;
- report_worker: the worker's info, then its expiry (the script also forgets expired ones),
  then the info of those; put_schedule: the hash (one script), then the index and the wake.

Two operations keep spanning slots on one server, because the protocol promises them there: a
claim across several queues is one script (one atomic step), and a wait across queues is one
BLPOP. On a cluster a claim is one script per run of consecutive queues in one slot, tried in
order, and a wait is one BLPOP per slot, concurrently (see ``RedisBackend.claim`` and
``_blpop``).

Wakeups are lists rather than pub/sub because a token outlives the moment nobody listens: a
worker that finds nothing, and then blocks, still sees the job enqueued in between.
"""

from __future__ import annotations

from typing import Final

# Job hash fields. Short names keep a million jobs' hashes small.
FIELDS: Final = {
    "id": "id",
    "queue": "q",
    "handler": "h",
    "payload": "p",
    "priority": "pr",
    "state": "st",
    "attempt": "a",
    "max_retries": "mr",
    "timeout": "to",
    "run_at": "ra",
    "created_at": "ca",
    "started_at": "sa",
    "finished_at": "fa",
    "idempotency_key": "ik",
    "schedule_id": "si",
    "result": "r",
    "error": "e",
    "cancel_requested": "cr",
    "worker_id": "w",
    "lease_expires_at": "le",
    "token": "tk",
    "trace_context": "tc",
    "progress": "pg",
    "progress_message": "pm",
    "stack_requested": "sr",  # "1" while `monoq job stack` waits for the worker's answer
    "stack": "sk",
    "stack_at": "sx",
}

# Schedule hash fields. Absent field = None.
SCHEDULE_FIELDS: Final = {
    "id": "id",
    "handler": "h",
    "cron": "c",
    "every": "ev",
    "timezone": "tz",
    "payload": "p",
    "queue": "q",
    "priority": "pr",
    "max_retries": "mr",
    "timeout": "to",
    "enabled": "en",
    "overlap": "ov",
    "misfire": "mf",
    "origin": "or",
    "created_at": "ca",
    "updated_at": "ua",
    "last_fire_at": "lf",
}

# The per-queue ZSET that holds a job in each state, scored (see the module docstring).
STATE_INDEX: Final = {
    "queued": "ready",
    "scheduled": "scheduled",
    "retrying": "retrying",
    "running": "running",
    "completed": "completed",
    "dead": "dead",
    "cancelled": "cancelled",
}


class Keys:
    """Builds the keys of one key prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    # -- global -------------------------------------------------------------------------------

    @property
    def queues(self) -> str:
        """SET of known queue names."""
        return f"{self.prefix}:queues"

    @property
    def jobq(self) -> str:
        """HASH job id -> queue."""
        return f"{self.prefix}:jobq"

    @property
    def changes(self) -> str:
        """Global scheduler wake list (a new queue appeared)."""
        return f"{self.prefix}:changes"

    @property
    def workers(self) -> str:
        """ZSET worker id -> expiry ms."""
        return f"{self.prefix}:workers"

    @property
    def workerinfo(self) -> str:
        """HASH worker id -> WorkerInfo JSON."""
        return f"{self.prefix}:workerinfo"

    @property
    def beats(self) -> str:
        """HASH component name -> epoch ms of its latest beat."""
        return f"{self.prefix}:beats"

    @property
    def audit(self) -> str:
        """ZSET of audit entries (JSON) by epoch ms."""
        return f"{self.prefix}:audit"

    @property
    def schedules(self) -> str:
        """SET of schedule ids."""
        return f"{self.prefix}:schedules"

    def schedule(self, schedule_id: str) -> str:
        """The hash of one schedule."""
        return f"{self.prefix}:schedule:{schedule_id}"

    @property
    def runs_prefix(self) -> str:
        """The prefix of the schedules' run indexes; scripts append the schedule id."""
        return f"{self.prefix}:schedruns:"

    def runs(self, schedule_id: str) -> str:
        """ZSET of the run ids of one schedule."""
        return self.runs_prefix + schedule_id

    # -- per queue ----------------------------------------------------------------------------

    def q(self, queue: str, part: str) -> str:
        """A key of ``queue``: ``<prefix>:{<queue>}:<part>``."""
        return f"{self.prefix}:{{{queue}}}:{part}"

    def job_prefix(self, queue: str) -> str:
        """The prefix of the queue's job hashes; scripts append the id."""
        return self.q(queue, "job:")

    def att_prefix(self, queue: str) -> str:
        """The prefix of the queue's attempt lists; scripts append the id."""
        return self.q(queue, "att:")

    def job(self, queue: str, job_id: str) -> str:
        """The hash of one job."""
        return self.q(queue, "job:" + job_id)

    def att(self, queue: str, job_id: str) -> str:
        """The attempt list of one job."""
        return self.q(queue, "att:" + job_id)

    def ids(self, queue: str, state: str) -> str:
        """ZSET (score 0) of the ids of the queue's jobs in ``state`` (a ``st`` value)."""
        return self.q(queue, "ids:" + state)

    def ids_prefix(self, queue: str) -> str:
        """The prefix of the queue's per-state id indexes; scripts append the state."""
        return self.q(queue, "ids:")

    def old_ids(self, queue: str) -> str:
        """The single id index of every job of the queue, of the layout before the per-state
        indexes: only the migration in ``connect`` reads it (and deletes it)."""
        return self.q(queue, "ids")

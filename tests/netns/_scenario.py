"""monoq's roles on separate hosts under network faults.

Hosts: Redis (AOF, fsync always) on one, the api on one, three workers on three, two schedulers
on two. The test process, outside, submits jobs over HTTP at a steady rate, and a cron schedule
fires every second. Faults are injected one at a time; after each the scenario waits for the
system to settle and reports:

- acknowledged jobs lost (an HTTP 201 whose job never completed): must be 0;
- duplicate runs, each of which must be explained by a recorded reclaim (an attempt that ended
  ``LeaseExpired``);
- cron fires per one-second slot: exactly one;
- the time the system took to recover.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx

from monoq.client import Client, connect
from monoq.core.cron import fire_time_text
from monoq.core.models import AttemptOutcome, JobState
from monoq.errors import BackendError

from ._hosts import Host, Network

TOKEN = "netns-test-token-0123456789abcdef"  # noqa: S105 - the test api's own token
HANDLERS_DIR = Path(__file__).parent
REDIS_PORT = 6379
API_PORT = 8080


@attrs.frozen
class Run:
    """One line of the runs file: a handler run as the worker recorded it."""

    job_id: str
    attempt: int
    worker: str
    run_at_ms: int
    kind: str
    wall: float  # when it started, epoch seconds
    key: str  # the idempotency key: cron:<schedule>:<fire time> for a cron run


@attrs.define
class FaultReport:
    """What one fault did to the system."""

    fault: str
    acked: int = 0  # submits answered 201 so far
    lost: int = 0  # of those, jobs that did not complete
    refused: int = 0  # submits answered otherwise during this fault (the producer would retry)
    duplicate_runs: int = 0  # jobs that ran more than once so far
    unexplained_duplicates: int = 0  # of those, without a recorded reclaim
    cron_slots: int = 0  # one-second slots covered so far
    cron_missed: int = 0  # slots with no fire
    cron_doubled: int = 0  # slots with more than one fire
    recover_seconds: float = 0.0
    detail: str = ""

    def line(self) -> str:
        return (f"{self.fault:<22} acked {self.acked:>5}  lost {self.lost}  refused "
                f"{self.refused:>3}  duplicates {self.duplicate_runs} (unexplained "
                f"{self.unexplained_duplicates})  cron slots {self.cron_slots} missed "
                f"{self.cron_missed} doubled {self.cron_doubled}  recovered in "
                f"{self.recover_seconds:.2f}s  {self.detail}")


class Scenario:
    """Builds the hosts, starts every role, drives the load and injects the faults."""

    def __init__(self, workdir: Path, *, lease: float = 3.0, rate: float = 20.0) -> None:
        self.dir = workdir
        self.lease = lease
        self.rate = rate
        self.runs_file = workdir / "runs.txt"
        self.net = Network()
        self.redis = self.net.add_host("redis")
        self.api = self.net.add_host("api")
        self.workers = [self.net.add_host(f"w{n}") for n in (1, 2, 3)]
        self.schedulers = [self.net.add_host(f"s{n}") for n in (1, 2)]
        self.redis_url = f"redis://{self.redis.ip}:{REDIS_PORT}/0"
        self.api_url = f"http://{self.api.ip}:{API_PORT}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.acked: list[str] = []
        self.refused = 0
        self.codes: dict[int, int] = defaultdict(int)

    # -- starting ------------------------------------------------------------------------------

    def _config(self, name: str, extra: str = "") -> Path:
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        path = self.dir / f"{name}.toml"
        path.write_text(
            '[monoq]\nimports = ["monoq_netns_handlers"]\nlog_level = "INFO"\n'
            f'[backend]\nurl = "{self.redis_url}"\n'
            # Calls to an unreachable Redis must fail fast so that roles notice and retry.
            "[backend.options]\nsocket_timeout = 0.5\nconnect_timeout = 0.5\n"
            f"[worker]\nconcurrency = 4\nlease_seconds = {self.lease}\n"
            f"heartbeat_seconds = {self.lease / 4}\ngrace_seconds = 2\n"
            "[scheduler]\nreap_margin_seconds = 0\nmisfire_grace_seconds = 10\n"
            "[retention]\nruns_per_schedule = 100000\n"
            f'[api]\nhost = "0.0.0.0"\nport = {API_PORT}\nallow_public_bind = true\n'
            f'[[api.tokens]]\nname = "netns"\nscope = "admin"\nsha256 = "{digest}"\n'
            '[[schedules]]\nid = "tick"\nhandler = "netns.record"\ncron = "* * * * * *"\n'
            'payload = {kind = "cron"}\n' + extra)
        return path

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MONOQ_") and k not in ("REDIS_URL", "QUEUE_NAME", "PORT")}
        pythonpath = os.pathsep.join([str(HANDLERS_DIR), env.get("PYTHONPATH", "")])
        return {**env, "PYTHONPATH": pythonpath.rstrip(os.pathsep),
                "NETNS_RUNS_FILE": str(self.runs_file)}

    def start_redis(self) -> None:
        data = self.dir / "redis"
        data.mkdir(exist_ok=True)
        binary = shutil.which("redis-server") or "redis-server"
        self.processes["redis"] = self.redis.popen(
            [binary, "--bind", self.redis.ip, "--port", str(REDIS_PORT), "--protected-mode",
             "no", "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", str(data)],
            env=self._env(), log=self.dir / "redis.log")

    def start_role(self, host: Host, role: str) -> None:
        config = self._config(host.name)
        self.processes[host.name] = host.popen(
            [sys.executable, "-m", "monoq", "run", "--roles", role, "--config", str(config)],
            env={**self._env(), "MONOQ_WORKER_ID": f"worker-{host.name}"},
            log=self.dir / f"{host.name}.log", cwd=self.dir)

    async def start(self) -> None:
        self.start_redis()
        await self._until(self._redis_answers, "Redis to answer", 20)
        self.start_role(self.api, "api")
        for host in self.workers:
            self.start_role(host, "worker")
        for host in self.schedulers:
            self.start_role(host, "scheduler")
        await self._until(self._api_ready, "the api to be ready", 60)

    async def _redis_answers(self) -> bool:
        try:
            async with connect(self.redis_url, options={"socket_timeout": 0.5,
                                                        "connect_timeout": 0.5}) as client:
                await client.backend.ping()
            return True
        except BackendError:
            return False

    async def _api_ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                return (await http.get(f"{self.api_url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    @staticmethod
    async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> float:
        """Poll ``check`` until true; answers the seconds it took."""
        began = time.monotonic()
        with anyio.fail_after(timeout):
            while not await check():
                await anyio.sleep(0.05)
        return time.monotonic() - began

    # -- the load ------------------------------------------------------------------------------

    async def _submit(self, http: httpx.AsyncClient, payload: dict[str, Any] | None = None
                      ) -> tuple[int, float]:
        began = time.monotonic()
        try:
            response = await http.post(f"{self.api_url}/api/v1/jobs",
                                       json={"handler": "netns.record",
                                             "payload": payload or {"kind": "submit"}})
        except httpx.HTTPError:
            return 0, time.monotonic() - began
        took = time.monotonic() - began
        if response.status_code == 201:
            self.acked.append(response.json()["id"])
        return response.status_code, took

    async def load(self) -> None:
        """Submit jobs at ``rate`` per second until cancelled; count every answer."""
        async with httpx.AsyncClient(timeout=5.0,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            while True:
                code, _ = await self._submit(http)
                self.codes[code] += 1
                if code != 201:
                    self.refused += 1
                await anyio.sleep(1 / self.rate)

    # -- faults --------------------------------------------------------------------------------

    async def worker_link_down(self) -> FaultReport:
        """A worker host's link goes down for longer than the lease, then comes back. The cut
        comes while the host runs a job, so that job must be reclaimed and run again."""
        host = self.workers[0]
        began = time.time()
        async with httpx.AsyncClient(timeout=5.0,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for _ in range(12):  # slow jobs: some land on the host about to be cut
                await self._submit(http, {"kind": "slow", "sleep": 1.5})
        await self._until(lambda: self._running_slow_on(f"worker-{host.name}", began),
                          f"{host.name} to start a slow job", 30)
        host.link_down()
        await anyio.sleep(self.lease * 2 + 1)  # the outage's length is the fault itself
        host.link_up()
        since = time.time()
        took = await self._until(lambda: self._ran_on(f"worker-{host.name}", since),
                                 f"{host.name} to run jobs again", 60)
        return FaultReport("worker link down", recover_seconds=took,
                           detail=f"({host.name} cut for {self.lease * 2 + 1:g}s)")

    async def scheduler_down(self) -> FaultReport:
        """A scheduler host goes down: the other one keeps the schedule firing."""
        host = self.schedulers[0]
        process = self.processes[host.name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        since = time.time()
        took = await self._until(lambda: self._cron_fired_after(since + 1),
                                 "the other scheduler to fire", 30)
        await anyio.sleep(3)  # a few more slots on one scheduler
        self.start_role(host, "scheduler")  # the host comes back
        return FaultReport("scheduler host down", recover_seconds=took,
                           detail=f"({host.name} killed)")

    async def api_cut_from_redis(self) -> FaultReport:
        """The api host loses its route to Redis: it answers 503 fast, then recovers."""
        self.api.cut_from(self.redis)
        async with httpx.AsyncClient(timeout=5.0,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            await anyio.sleep(0.2)
            codes, slowest = [], 0.0
            for _ in range(3):
                code, took = await self._submit(http)
                codes.append(code)
                slowest = max(slowest, took)
            self.api.reconnect_to(self.redis)
            since = time.monotonic()

            async def answers_201() -> bool:
                code, _ = await self._submit(http)
                return code == 201

            took = await self._until(answers_201, "the api to accept submits again", 30)
        return FaultReport("api cut off from Redis", recover_seconds=took,
                           detail=f"(answers while cut: {codes}, slowest {slowest:.2f}s; "
                                  f"recovered {time.monotonic() - since:.2f}s after the link)")

    async def redis_restart(self) -> FaultReport:
        """Redis dies (SIGKILL) and restarts from its append-only file."""
        process = self.processes["redis"]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        await anyio.sleep(1)
        self.start_redis()
        since = time.time()
        took = await self._until(lambda: self._ran_on("", since), "a job to run again", 60)
        return FaultReport("Redis restart (AOF)", recover_seconds=took)

    # -- accounting ----------------------------------------------------------------------------

    def runs(self) -> list[Run]:
        """Every recorded run, in the order they started."""
        if not self.runs_file.exists():
            return []
        out = []
        for line in self.runs_file.read_text().splitlines():
            job_id, attempt, worker, run_at, kind, wall, key = line.split()
            out.append(Run(job_id, int(attempt), worker, int(run_at), kind, int(wall) / 1000,
                           key))
        return out

    async def _ran_on(self, worker: str, since: float) -> bool:
        """Whether ``worker`` (any worker when empty) started a run after ``since``."""
        return any(run.wall >= since and worker in run.worker for run in self.runs()[-200:])

    async def _running_slow_on(self, worker: str, since: float) -> bool:
        """Whether ``worker`` started a slow job after ``since`` that is still running."""
        now = time.time()
        return any(run.kind == "slow" and run.worker == worker and since <= run.wall
                   and now - run.wall < 1.0 for run in self.runs()[-200:])

    async def _cron_fired_after(self, after: float) -> bool:
        return any(run.kind == "cron" and run.wall >= after for run in self.runs()[-200:])

    async def settle(self, report: FaultReport, timeout: float = 90) -> FaultReport:
        """Wait until every acknowledged job completed (or ``timeout``), then fill ``report``."""
        acked = list(self.acked)
        async with connect(self.redis_url) as client:
            pending: list[str] = list(acked)
            with anyio.move_on_after(timeout):
                while pending:
                    pending = await self._not_completed(client, pending)
                    if pending:
                        await anyio.sleep(0.2)
            report.acked, report.lost = len(acked), len(pending)
            await self._duplicates(client, report)
        self._cron(report)
        report.refused = self.refused
        self.refused = 0
        return report

    @staticmethod
    async def _not_completed(client: Client, ids: list[str]) -> list[str]:
        out: list[str] = []
        for first in range(0, len(ids), 500):
            chunk = ids[first : first + 500]
            try:
                jobs = await client.backend.get_many(chunk)
            except BackendError:
                return ids
            out += [i for i, job in zip(chunk, jobs, strict=True)
                    if job is None or job.state is not JobState.COMPLETED]
        return out

    async def _duplicates(self, client: Client, report: FaultReport) -> None:
        per_job: dict[str, int] = defaultdict(int)
        for run in self.runs():
            per_job[run.job_id] += 1
        repeated = [job_id for job_id, n in per_job.items() if n > 1]
        report.duplicate_runs = len(repeated)
        for job_id in repeated:
            attempts = await client.attempts(job_id)
            reclaimed = any(a.outcome is AttemptOutcome.FAILED
                            and a.error_type == "LeaseExpired" for a in attempts)
            if not reclaimed:
                report.unexplained_duplicates += 1

    def _cron(self, report: FaultReport) -> None:
        # A cron run's slot is its fire time, from its key (a retried run keeps its key but not
        # its run_at).
        slots: dict[int, set[str]] = defaultdict(set)
        for run in self.runs():
            text = fire_time_text("tick", run.key)
            if run.kind == "cron" and text is not None:
                fired_at = datetime.fromisoformat(text)
                slots[int(fired_at.timestamp())].add(run.job_id)
        if not slots:
            return
        first, last = min(slots), max(slots)
        report.cron_slots = last - first + 1
        report.cron_missed = sum(1 for s in range(first, last + 1) if not slots.get(s))
        report.cron_doubled = sum(1 for ids in slots.values() if len(ids) > 1)

    # -- the whole run -------------------------------------------------------------------------

    async def run(self, faults: list[str], *, warmup: float = 3.0,
                  on_report: Callable[[FaultReport], Any] = print) -> list[FaultReport]:
        reports: list[FaultReport] = []
        await self.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.load)
            await anyio.sleep(warmup)  # steady load before the first fault
            reports.append(await self.settle(FaultReport("steady load")))
            on_report(reports[-1])
            for name in faults:
                report = await getattr(self, name)()
                reports.append(await self.settle(report))
                on_report(reports[-1])
            tg.cancel_scope.cancel()
        return reports

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.dir.glob("*.log")))

    def close(self) -> None:
        self.net.close()


FAULTS = ["worker_link_down", "scheduler_down", "api_cut_from_redis", "redis_restart"]

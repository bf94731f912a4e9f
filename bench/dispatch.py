"""Benchmark: the dispatcher against a sandbox in another process, as ratios of one run.

    python bench/dispatch.py [--quick] [--only STEP ...] [--seconds S] [--throughput-rows N]
                             [--rounds N] [--memory-rows N] [--resume-rows N] [--keep]

Every figure is measured in this one run on this machine and given as a ratio (the machine is
small and noisy, so no absolute time is judged). The sandbox always runs in its own process
(``python -m dialer sandbox --port 0``), so arrival times are the provider's, read from its
``/_stats``. Both processes use CLOCK_MONOTONIC, so the bench can compare its own clock to
arrival times.

1. pacing: for R = 10, 200, 2000, the worst 1-s sliding window / R (target <= 1.0) and the
   achieved rate over the steady part (first and last second left out) / R (target >= 0.98);
2. throughput: ``dialer run --rate 1000000`` vs a raw aiohttp loop posting the same Formant
   bodies with the same connection limit, both as requests/s at the sandbox, best of
   ``--rounds`` rounds, each a dialer run then a raw run; the figure is the median over rounds
   of dialer / raw within a round (target >= 0.5), so that a moment of other work on the
   machine, which moves both runs of a round alike, does not decide it;
3. latency hiding: sandbox ``--delay 0.2``, R = 200, C = 64: achieved / R (target >= 0.95);
4. memory: peak RSS of a run of ``--memory-rows`` rows vs one of a tenth as many, each in its
   own spawn process (target: ratio < 1.5, and < 1 GB);
5. resume cost: a ``--resume-rows`` run is killed (SIGKILL) after about 1,000 calls; the re-run
   of the same command is timed from process start to its first request at the sandbox
   (target < 5 s), then killed too.

Prints a table and, last, one JSON line with every figure. ``--quick`` shrinks every size.
Default sizes take a few minutes; the memory step (200,000 calls) is the longest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import write_contacts  # noqa: E402  (bench/load.py)

from dialer.sandbox import max_per_second  # noqa: E402

PYTHON = sys.executable
PACING_RATES = (10.0, 200.0, 2000.0)
VALID_SHARE = 0.9  # write_contacts rows that are valid and not duplicates (about 0.93)
CONCURRENCY = 64
UNLIMITED = "1000000"
KILL_AFTER_CALLS = 1000
STEPS = ("pacing", "throughput", "latency", "memory", "resume")


# --- processes -------------------------------------------------------------------------------


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group led by ``process`` (started with ``start_new_session``) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class SandboxProcess:
    """``python -m dialer sandbox`` on a free port of 127.0.0.1, in its own process group."""

    def __init__(self, folder: Path, token: str, *, delay: float = 0.0) -> None:
        self.token, self.delay = token, delay
        self.log = folder / f"sandbox-{secrets.token_hex(4)}.log"
        self.url = ""
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> SandboxProcess:
        command = [PYTHON, "-m", "dialer", "sandbox", "--port", "0", f"--token={self.token}",
                   "--delay", str(self.delay)]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=log, start_new_session=True)
        try:
            self.url = self._wait_for_url()
        except BaseException:
            kill_group(self.process)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None:
            kill_group(self.process)

    def _wait_for_url(self, timeout: float = 30.0) -> str:
        """The URL the sandbox prints to stderr once it listens."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"http://127\.0\.0\.1:\d+", self.log.read_text())
            if found:
                return found.group(0)
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"the sandbox did not start: {self.log.read_text()[-2000:]}")

    def stats(self) -> dict[str, Any]:
        """``GET /_stats``: requests, created, responses, arrivals (monotonic seconds)..."""
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=60) as response:
            return json.load(response)


def cli_command(contacts: Path, out: Path, url: str, rate: str, concurrency: int) -> list[str]:
    """The ``dialer run`` command line for a Formant campaign against ``url``."""
    return [PYTHON, "-m", "dialer", "run", str(contacts), "--provider", "formant", "--base-url", url,
            "--agent-id", "1", "--rate", rate, "--concurrency", str(concurrency), "--out", str(out), "--quiet"]


def start_cli(command: list[str], token: str, log: Path) -> subprocess.Popen:
    """Start ``command`` in its own process group with the API key set; stderr goes to ``log``."""
    env = dict(os.environ, DIALER_API_KEY=token)
    with log.open("a") as handle:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=handle, start_new_session=True)


def run_cli(command: list[str], token: str, log: Path, timeout: float = 900.0) -> float:
    """Run ``command`` to the end; return its wall time. Raise if it fails."""
    started = time.monotonic()
    process = start_cli(command, token, log)
    try:
        code = process.wait(timeout=timeout)
    finally:
        kill_group(process)
    if code != 0:
        raise RuntimeError(f"dialer exited {code}: {log.read_text()[-2000:]}")
    return time.monotonic() - started


def in_spawned_child(target: Callable[..., None], *args: Any, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``target(*args, queue)`` in a fresh spawn process and return what it put on the queue."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    try:
        return queue.get(timeout=timeout)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


def wait_until(condition: Callable[[], bool], what: str, timeout: float, every: float = 0.01) -> None:
    """Poll ``condition`` until true; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)


# --- figures from arrival times --------------------------------------------------------------


def steady_rate(arrivals: list[float], trim: float = 1.0) -> float:
    """Arrivals per second between the first and last arrival, ``trim`` s cut off at each end."""
    times = sorted(arrivals)
    middle = [at for at in times if times[0] + trim <= at <= times[-1] - trim]
    if len(middle) < 2:
        middle = times
    return (len(middle) - 1) / (middle[-1] - middle[0])


def longest_gap(arrivals: list[float]) -> float:
    """The longest silence between two arrivals, in seconds: a stall on either side shows here."""
    times = sorted(arrivals)
    return max((later - earlier for earlier, later in zip(times, times[1:])), default=0.0)


def span_rate(arrivals: list[float]) -> float:
    """Arrivals per second from the first to the last arrival."""
    times = sorted(arrivals)
    return (len(times) - 1) / (times[-1] - times[0])


def rows_for(rate: float, seconds: float) -> int:
    """Contacts rows that give about ``seconds`` of calls at ``rate``."""
    return math.ceil(rate * seconds / VALID_SHARE)


# --- results ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a figure, its target, and whether it is met."""

    name: str
    value: float
    unit: str
    target: str
    met: bool
    note: str = ""


@dataclass
class Bench:
    """Where the bench works and what it found."""

    folder: Path
    token: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def contacts(self, rows: int) -> Path:
        """A contacts CSV of ``rows`` rows (written once per size)."""
        path = self.folder / f"contacts-{rows}.csv"
        if not path.exists():
            write_contacts(path, rows)
        return path

    def sandbox(self, delay: float = 0.0) -> SandboxProcess:
        """A new sandbox process (use with ``with``), answering after ``delay`` s."""
        return SandboxProcess(self.folder, self.token, delay=delay)

    def out(self, name: str) -> Path:
        """The report path of run ``name`` (its journal goes beside it)."""
        return self.folder / f"{name}.csv"

    def log(self, name: str) -> Path:
        """Where the stderr of run ``name`` goes."""
        return self.folder / f"{name}.log"


def progress(message: str) -> None:
    """A line on stderr, so stdout holds only the table and the JSON line."""
    print(f"[dispatch bench] {message}", file=sys.stderr, flush=True)


# --- 1. pacing -------------------------------------------------------------------------------


def bench_pacing(bench: Bench, seconds: float) -> None:
    """Worst 1-s window and steady achieved rate at each of ``PACING_RATES``."""
    for rate in PACING_RATES:
        rows = 60 if rate == 10 else rows_for(rate, seconds)
        progress(f"pacing R={rate:g}: {rows:,} rows")
        with bench.sandbox() as sandbox:
            name = f"pacing-{rate:g}"
            run_cli(cli_command(bench.contacts(rows), bench.out(name), sandbox.url, f"{rate:g}", CONCURRENCY),
                    bench.token, bench.log(name))
            arrivals = sandbox.stats()["arrivals"]
        worst, achieved = max_per_second(arrivals) / rate, steady_rate(arrivals) / rate
        gap = longest_gap(arrivals)
        bench.figures[f"pacing_{rate:g}"] = {"requests": len(arrivals), "worst_window_over_r": round(worst, 4),
                                             "achieved_over_r": round(achieved, 4), "longest_gap_ms": round(gap * 1000),
                                             "seconds": round(max(arrivals) - min(arrivals), 2)}
        bench.rows.append(Row(f"R={rate:g}: worst 1-s window / R", worst, "", "<= 1.0", worst <= 1.0,
                              f"{len(arrivals):,} requests, longest arrival gap {gap * 1000:.0f} ms (1/R {1000 / rate:g} ms)"))
        bench.rows.append(Row(f"R={rate:g}: achieved / R (steady)", achieved, "", ">= 0.98", achieved >= 0.98))


# --- 2. throughput ---------------------------------------------------------------------------


def _raw_child(contacts: str, url: str, token: str, concurrency: int, queue: multiprocessing.Queue) -> None:
    """Spawn target: post the dialer's own Formant bodies with a bare aiohttp loop."""
    requests = formant_requests(Path(contacts), url, token)
    started = time.monotonic()
    statuses = asyncio.run(raw_loop(requests, token, concurrency))
    queue.put({"seconds": time.monotonic() - started, "requests": len(requests), "statuses": dict(statuses)})


def formant_requests(contacts: Path, url: str, token: str) -> list[tuple[str, dict[str, Any]]]:
    """(URL, JSON body) of every ready row, built by the dialer's own code (before any timing)."""
    from dialer.contacts import load_contacts
    from dialer.dispatch import CallFactory
    from dialer.journal import PendingRow
    from dialer.plan import plan_contacts
    from dialer.providers.formant import FormantProvider

    table = load_contacts(contacts)
    plan = plan_contacts(table, "US")
    factory = CallFactory(table, campaign_id="raw-baseline", agent_id=1)
    provider = FormantProvider(base_url=url, api_key=token, agent_id=1)
    return [provider.request(factory(PendingRow(int(row), plan.e164[row], 0, None))) for row in plan.ready_rows()]


async def raw_loop(requests: list[tuple[str, dict[str, Any]]], token: str, concurrency: int) -> Counter[int]:
    """``concurrency`` workers share one iterator of requests over one connection pool."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    statuses: Counter[int] = Counter()
    pending: Iterator[tuple[str, dict[str, Any]]] = iter(requests)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            """Post requests until the shared iterator is exhausted."""
            for url, body in pending:
                async with session.post(url, json=body, headers=headers) as response:
                    json.loads(await response.read())
                    statuses[response.status] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def dialer_throughput(bench: Bench, contacts: Path, name: str) -> float:
    """Requests/s at a fresh sandbox of one ``dialer run`` with no real rate limit."""
    with bench.sandbox() as sandbox:
        run_cli(cli_command(contacts, bench.out(name), sandbox.url, UNLIMITED, CONCURRENCY),
                bench.token, bench.log(name))
        return span_rate(sandbox.stats()["arrivals"])


def raw_throughput(bench: Bench, contacts: Path) -> float:
    """Requests/s at a fresh sandbox of the raw aiohttp loop (in a spawn process)."""
    with bench.sandbox() as sandbox:
        run = in_spawned_child(_raw_child, str(contacts), sandbox.url, bench.token, CONCURRENCY)
        stats = sandbox.stats()
    if stats["responses"] != {"200": run["requests"]}:
        raise RuntimeError(f"the raw loop got {stats['responses']}, expected {run['requests']} answers 200")
    return span_rate(stats["arrivals"])


def bench_throughput(bench: Bench, rows: int, rounds: int) -> None:
    """Requests/s at the sandbox: dialer with no real rate limit vs the raw aiohttp loop.

    The two alternate for ``rounds`` rounds; the figure is the median of the rounds' ratios
    (the best of each side is shown beside it).
    """
    contacts = bench.contacts(rows)
    dialer: list[float] = []
    raw: list[float] = []
    for round_ in range(rounds):
        progress(f"throughput round {round_ + 1}/{rounds}: {rows:,} rows, dialer then raw aiohttp loop")
        dialer.append(dialer_throughput(bench, contacts, f"throughput-{round_}"))
        raw.append(raw_throughput(bench, contacts))
    ratio = statistics.median(d / r for d, r in zip(dialer, raw))
    best = max(dialer) / max(raw)
    bench.figures["throughput"] = {"dialer_per_s": [round(x) for x in dialer], "raw_per_s": [round(x) for x in raw],
                                   "ratio_median_of_rounds": round(ratio, 3), "ratio_best_over_best": round(best, 3)}
    bench.rows.append(Row("throughput dialer / raw aiohttp", ratio, "", ">= 0.5", ratio >= 0.5,
                          f"median of {rounds} rounds; best {max(dialer):,.0f} vs {max(raw):,.0f} req/s ({best:.2f})"))


# --- 3. latency hiding -----------------------------------------------------------------------


def bench_latency(bench: Bench, seconds: float, rate: float = 200.0, delay: float = 0.2) -> None:
    """Achieved rate when every answer takes ``delay`` s: concurrency must hide the latency."""
    rows = rows_for(rate, seconds)
    progress(f"latency hiding: delay {delay} s, R={rate:g}, C={CONCURRENCY}, {rows:,} rows")
    with bench.sandbox(delay=delay) as sandbox:
        run_cli(cli_command(bench.contacts(rows), bench.out("latency"), sandbox.url, f"{rate:g}", CONCURRENCY),
                bench.token, bench.log("latency"))
        arrivals = sandbox.stats()["arrivals"]
    achieved = steady_rate(arrivals) / rate
    bench.figures["latency"] = {"requests": len(arrivals), "achieved_over_r": round(achieved, 4),
                                "worst_window_over_r": round(max_per_second(arrivals) / rate, 4)}
    bench.rows.append(Row(f"delay {delay} s, R={rate:g}: achieved / R", achieved, "", ">= 0.95", achieved >= 0.95))


# --- 4. memory -------------------------------------------------------------------------------


def _memory_child(contacts: str, out: str, url: str, token: str, queue: multiprocessing.Queue) -> None:
    """Spawn target: one real run through the CLI's ``main``; report its peak RSS."""
    os.environ["DIALER_API_KEY"] = token
    from dialer.cli import main

    started = time.monotonic()
    code = main(["run", contacts, "--provider", "formant", "--base-url", url, "--agent-id", "1",
                 "--rate", UNLIMITED, "--concurrency", str(CONCURRENCY), "--out", out, "--quiet"])
    queue.put({"exit": code, "seconds": time.monotonic() - started,
               "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def bench_memory(bench: Bench, big_rows: int) -> None:
    """Peak RSS of a ``big_rows`` run vs a run of a tenth as many rows."""
    runs: dict[int, dict[str, Any]] = {}
    for rows in (big_rows // 10, big_rows):
        progress(f"memory: {rows:,} rows")
        with bench.sandbox() as sandbox:
            runs[rows] = in_spawned_child(_memory_child, str(bench.contacts(rows)), str(bench.out(f"memory-{rows}")),
                                          sandbox.url, bench.token)
            runs[rows]["requests"] = sandbox.stats()["requests"]
        if runs[rows]["exit"] != 0:
            raise RuntimeError(f"the {rows:,}-row memory run exited {runs[rows]['exit']}")
    small, big = runs[big_rows // 10], runs[big_rows]
    ratio = big["rss_mb"] / small["rss_mb"]
    bench.figures["memory"] = {str(rows): {k: round(v, 1) if isinstance(v, float) else v for k, v in run.items()}
                               for rows, run in runs.items()} | {"ratio": round(ratio, 3)}
    bench.rows.append(Row(f"peak RSS {big_rows:,} / {big_rows // 10:,} rows", ratio, "", "< 1.5", ratio < 1.5,
                          f"{small['rss_mb']:.0f} -> {big['rss_mb']:.0f} MB"))
    bench.rows.append(Row(f"peak RSS {big_rows:,} rows", big["rss_mb"], "MB", "< 1024", big["rss_mb"] < 1024,
                          f"run took {big['seconds']:.0f} s"))


# --- 5. resume -------------------------------------------------------------------------------


def bench_resume(bench: Bench, rows: int) -> None:
    """Kill a big run after ~1,000 calls; time the re-run's start until its first request arrives."""
    progress(f"resume: writing {rows:,} rows")
    contacts = bench.contacts(rows)
    log = bench.log("resume")
    with bench.sandbox() as sandbox:
        command = cli_command(contacts, bench.out("resume"), sandbox.url, "1000", CONCURRENCY)
        progress("resume: first run (load, plan, journal, then calls)")
        first_run = start_cli(command, bench.token, log)
        try:
            started = time.monotonic()
            wait_until(lambda: sandbox.stats()["created"] >= KILL_AFTER_CALLS or first_run.poll() is not None,
                       "the first run's calls", timeout=600, every=0.02)
            first_call_after = time.monotonic() - started
        finally:
            kill_group(first_run)
        if first_run.returncode != -signal.SIGKILL:
            raise RuntimeError(f"the first run ended by itself ({first_run.returncode}): {log.read_text()[-2000:]}")
        time.sleep(0.5)  # let requests already in the sandbox's socket buffers land
        before = sandbox.stats()["requests"]
        progress(f"resume: killed after {before:,} requests; re-running")
        rerun_started = time.monotonic()
        rerun = start_cli(command, bench.token, log)
        try:
            wait_until(lambda: sandbox.stats()["requests"] > before or rerun.poll() is not None,
                       "the re-run's first request", timeout=300, every=0.01)
            seen = time.monotonic() - rerun_started
        finally:
            kill_group(rerun)
        arrivals = sandbox.stats()["arrivals"]
    if len(arrivals) <= before:
        raise RuntimeError(f"the re-run sent nothing ({rerun.returncode}): {log.read_text()[-2000:]}")
    to_first = arrivals[before] - rerun_started
    bench.figures["resume"] = {"rows": rows, "killed_after_requests": before,
                               "first_run_start_to_kill_s": round(first_call_after, 2),
                               "rerun_to_first_request_s": round(to_first, 3), "rerun_seen_by_poll_s": round(seen, 3)}
    bench.rows.append(Row(f"resume {rows:,} rows: start -> 1st request", to_first, "s", "< 5", to_first < 5.0,
                          f"first run needed {first_call_after:.0f} s to {KILL_AFTER_CALLS:,} calls"))


# --- main ------------------------------------------------------------------------------------


def run_step(bench: Bench, name: str, step: Callable[[], None]) -> None:
    """Run one measurement; a failure becomes a failed row of the table instead of ending the bench."""
    step_started = time.monotonic()
    try:
        step()
    except Exception as error:  # noqa: BLE001 - reported in the table and the JSON line
        progress(f"{name} failed: {type(error).__name__}: {error}")
        bench.rows.append(Row(f"{name}: FAILED", math.nan, "", "runs", False, f"{type(error).__name__}: {error}"[:120]))
        bench.figures[f"{name}_error"] = f"{type(error).__name__}: {error}"
    bench.figures.setdefault("step_seconds", {})[name] = round(time.monotonic() - step_started, 1)


def print_table(rows: list[Row]) -> None:
    """The figures, their targets, and whether each is met."""
    print(f"{'measurement':44}{'value':>10}  {'target':10}{'met':5}note")
    for row in rows:
        value = f"{row.value:.3f}" if not row.unit else f"{row.value:.2f} {row.unit}"
        print(f"{row.name:44}{value:>10}  {row.target:10}{'yes' if row.met else 'NO':5}{row.note}")


def parse_args() -> argparse.Namespace:
    """The command line, with the default sizes (or the ``--quick`` ones) filled in."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a quick check that it all works")
    parser.add_argument("--seconds", type=float, help="seconds of calls per pacing rate (default 6, quick 3)")
    parser.add_argument("--throughput-rows", type=int, help="rows per throughput run (default 5,000)")
    parser.add_argument("--rounds", type=int, help="throughput rounds (default 5, quick 1)")
    parser.add_argument("--memory-rows", type=int, help="rows of the big memory run (default 200,000)")
    parser.add_argument("--resume-rows", type=int, help="rows of the resume run (default 1,000,000)")
    parser.add_argument("--only", nargs="+", choices=STEPS, help="run only these measurements")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    defaults = (3.0, 2_000, 1, 20_000, 100_000) if args.quick else (6.0, 5_000, 5, 200_000, 1_000_000)
    for name, default in zip(("seconds", "throughput_rows", "rounds", "memory_rows", "resume_rows"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def main() -> None:
    """Run the measurements, print the table and the JSON line, remove the generated files."""
    args = parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="dialer-dispatch-bench-")), secrets.token_urlsafe(16))
    started = time.monotonic()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("pacing", lambda: bench_pacing(bench, args.seconds)),
        ("throughput", lambda: bench_throughput(bench, args.throughput_rows, args.rounds)),
        ("latency", lambda: bench_latency(bench, args.seconds)),
        ("memory", lambda: bench_memory(bench, args.memory_rows)),
        ("resume", lambda: bench_resume(bench, args.resume_rows)),
    ]
    try:
        for name, step in steps:
            if args.only is None or name in args.only:
                run_step(bench, name, step)
    finally:
        if args.keep:
            progress(f"files kept in {bench.folder}")
        else:
            shutil.rmtree(bench.folder, ignore_errors=True)
    bench.figures["bench_seconds"] = round(time.monotonic() - started, 1)
    print_table(bench.rows)
    print(f"all targets met: {all(row.met for row in bench.rows)}; bench took {bench.figures['bench_seconds']:.0f} s")
    bench.figures["targets_met"] = {row.name: row.met for row in bench.rows}
    print(json.dumps(bench.figures))


if __name__ == "__main__":
    main()

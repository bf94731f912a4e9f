"""The promises, end to end, on a messy 1,000-row file against a sandbox in its own process that
fails, drops connections, loses answers, delays, and answers both kinds of 429 at once:
nobody is called twice, no invalid, duplicate or do-not-call row is called, every row is in the
report with its cells untouched, the rate holds in every second; the same after kill -9 and resume."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TOKEN = "e2e-key-5150"
RATE = 200
SANDBOX_FAULTS = ["--fail", "0.05", "--reset", "0.03", "--lost", "0.03", "--delay", "0.02",
                  "--rate", "150", "--per-number", "2"]
AREAS = ("212", "305", "312", "415", "503", "617", "702", "818")


@contextmanager
def sandbox_process(seed: int) -> Iterator[str]:
    process = subprocess.Popen([sys.executable, "-m", "dialer", "sandbox", "--port", "0", "--token", TOKEN,
                                "--seed", str(seed), *SANDBOX_FAULTS], stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        yield re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def get(url: str, path: str):
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.load(response)


def messy_contacts(folder: Path, rows: int = 1000, seed: int = 11) -> tuple[Path, Path]:
    """A contacts file with every kind of mess, and a do-not-call list of some of its numbers."""
    rng = random.Random(seed)
    numbers, lines, dnc = [], [["Name", "Phone", "Company", "Notes"]], []
    for i in range(rows):
        if numbers and rng.random() < 0.06:
            phone = rng.choice(numbers).replace("-", " ")  # a duplicate, written differently
        elif rng.random() < 0.06:
            phone = rng.choice(["", "n/a", "555-1234", "4.15555E+09", "+999 123", "call me"])
        else:
            area, line = rng.choice(AREAS), f"{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
            phone = rng.choice([f"({area}) {line}", f"{area}-{line}", f"+1 {area} {line.replace('-', ' ')}",
                                f"1-{area}-{line}", f"{area}.{line.replace('-', '.')}"])
            numbers.append(phone)
            if rng.random() < 0.03:
                dnc.append(phone)
        notes = rng.choice(["", "VIP, call early", 'said "later"', "multi\nline", "=1+1", "Zoë ✓", "  spaced "])
        lines.append([f"Person {i}", phone, rng.choice(["Acme", "Globex, Inc."]), notes])
    contacts, dnc_file = folder / "contacts.csv", folder / "dnc.csv"
    with contacts.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(lines)
    dnc_file.write_text("\n".join(["Phone", *dnc]) + "\n")
    return contacts, dnc_file


def command(contacts: Path, dnc: Path, provider: str, url: str) -> list[str]:
    return [sys.executable, "-m", "dialer", "run", str(contacts), "--provider", provider, "--base-url", url,
            "--agent-id", "1", "--rate", str(RATE), "--concurrency", "32", "--max-attempts", "12",
            "--dnc", str(dnc), "--out", str(contacts.parent / "report.csv"), "--quiet"]


def read(path: Path, encoding: str = "utf-8") -> list[dict[str, str]]:
    with path.open(encoding=encoding, newline="") as handle:
        return list(csv.DictReader(handle))


def check_promises(contacts: Path, url: str) -> tuple[list[dict[str, str]], dict]:
    """The invariants every run must end with; returns the report and the sandbox's stats."""
    original = read(contacts)
    report = read(contacts.parent / "report.csv", "utf-8-sig")
    calls, stats = get(url, "/_calls"), get(url, "/_stats")
    assert len(report) == len(original) == 1000
    assert all(row[key] == source[key] for row, source in zip(report, original) for key in source)
    called = Counter(call["phone"] for call in calls)
    assert max(called.values()) == 1, "somebody was called twice"
    assert not {row["phone_e164"] for row in report if row["status"] == "dnc"} & set(called)
    # every call belongs to the one row that may call its number: invalid and duplicate rows never do
    reached = [row["phone_e164"] for row in report if row["status"] in ("initiated", "unknown")]
    assert len(reached) == len(set(reached)) and set(called) <= set(reached)
    assert stats["max_requests_per_second"] <= RATE
    return report, stats


@pytest.mark.parametrize("provider", ["formant", "agents"])
def test_a_faulty_provider_and_a_messy_file_keep_every_promise(tmp_path, provider):
    contacts, dnc = messy_contacts(tmp_path)
    with sandbox_process(seed=21) as url:
        finished = subprocess.run(command(contacts, dnc, provider, url), env={**os.environ, "DIALER_API_KEY": TOKEN},
                                  timeout=300)
        report, stats = check_promises(contacts, url)
    assert finished.returncode == 0
    assert stats["responses"].get("429", 0) > 0
    statuses = Counter(row["status"] for row in report)
    assert set(statuses) <= {"initiated", "unknown", "invalid", "duplicate", "dnc"}
    assert statuses["dnc"] > 0 and statuses["duplicate"] > 0 and statuses["invalid"] > 0
    if provider == "formant":
        assert statuses["unknown"] == 0
    else:
        assert statuses["unknown"] == stats["faults"]["reset"] + stats["faults"]["lost"]


@pytest.mark.parametrize("provider", ["formant", "agents"])
def test_three_kill_9s_and_a_resume_keep_every_promise(tmp_path, provider):
    contacts, dnc = messy_contacts(tmp_path, seed=12)
    env = {**os.environ, "DIALER_API_KEY": TOKEN}
    kill_points = sorted(random.Random(provider).sample(range(50, 700), 3))
    with sandbox_process(seed=22) as url:
        for created in kill_points:
            process = subprocess.Popen(command(contacts, dnc, provider, url), env=env)
            deadline = time.monotonic() + 120
            while get(url, "/_stats")["created"] < created and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finished = subprocess.run(command(contacts, dnc, provider, url), env=env, timeout=300)
        report, stats = check_promises(contacts, url)
    assert finished.returncode == 0
    statuses = Counter(row["status"] for row in report)
    assert set(statuses) <= {"initiated", "unknown", "invalid", "duplicate", "dnc"}
    if provider == "formant":
        assert statuses["unknown"] == 0
    else:  # lost answers, plus at most the requests in flight at each kill
        assert statuses["unknown"] <= stats["faults"]["reset"] + stats["faults"]["lost"] + 3 * 32

"""Whole runs against the sandbox over loopback: what reaches the provider, what the report says,
how faults, bad keys, re-runs and kill -9 end."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from dialer.campaign import Campaign
from dialer.cli import main
from dialer.errors import FatalProviderError, UsageError
from dialer.runner import run_campaign
from dialer.sandbox import SandboxConfig, SandboxThread

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "run-test-key-0451"
ROWS = [
    ["Customer Name", "Phone", "Plan", "Notes"],
    ["Ana", "(415) 555-2671", "gold", ""],
    ["Ben", "n/a", "silver", "x"],
    ["Cy", "+44 20 7946 0958", "", "VIP, call early"],
    ["Di", "415.555.2671", "gold", ""],
    ["Ed", "212-555-0100 x12", "bronze", "nan"],
]


def get(url: str, path: str):
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.load(response)


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def campaign(contacts: Path, url: str, provider: str = "formant", **settings) -> Campaign:
    return Campaign(contacts=contacts, out=contacts.parent / "report.csv", provider=provider, base_url=url,
                    agent_id=1, rate=settings.pop("rate", 500), concurrency=settings.pop("concurrency", 8), **settings)


@pytest.fixture
def contacts(write_csv) -> Path:
    return write_csv(ROWS)


def test_formant_rows_reach_the_provider_in_e164_with_their_parameters(contacts):
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        result = run_campaign(campaign(contacts, sandbox.url), api_key=TOKEN)
        calls = get(sandbox.url, "/_calls")
    assert sorted((c["phone"], c["parameters"]) for c in calls) == [  # sent concurrently: in any order
        ("+12125550100", [{"name": "customer_phone", "value": "+12125550100"},
                          {"name": "customer_name", "value": "Ed"}, {"name": "plan", "value": "bronze"},
                          {"name": "notes", "value": "nan"}]),
        ("+14155552671", [{"name": "customer_phone", "value": "+14155552671"},
                          {"name": "customer_name", "value": "Ana"}, {"name": "plan", "value": "gold"}]),
        ("+442079460958", [{"name": "customer_phone", "value": "+442079460958"},
                           {"name": "customer_name", "value": "Cy"}, {"name": "notes", "value": "VIP, call early"}]),
    ]
    assert len({c["idempotency_key"] for c in calls}) == 3
    report = read_report(result.report)
    assert [(r["status"], r["call_id"], r["attempts"]) for r in report] == [
        ("initiated", calls[0]["id"], "1"), ("invalid", "", "0"), ("initiated", calls[1]["id"], "1"),
        ("duplicate", "", "0"), ("initiated", calls[2]["id"], "1")]
    assert [r["Notes"] for r in report] == ["", "x", "VIP, call early", "", "nan"]
    assert result.statuses == {"initiated": 3, "invalid": 1, "duplicate": 1}


def test_agents_rows_reach_the_provider_with_metadata(contacts):
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        run_campaign(campaign(contacts, sandbox.url, provider="agents"), api_key=TOKEN)
        calls = get(sandbox.url, "/_calls")
    assert sorted((c["phone"], c["metadata"]) for c in calls) == [  # sent concurrently: in any order
        ("+12125550100", {"customer_name": "Ed", "plan": "bronze", "notes": "nan"}),
        ("+14155552671", {"customer_name": "Ana", "plan": "gold"}),
        ("+442079460958", {"customer_name": "Cy", "notes": "VIP, call early"}),
    ]


def test_a_rerun_of_a_finished_run_calls_no_one_and_gives_the_same_report(contacts):
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        first = run_campaign(campaign(contacts, sandbox.url), api_key=TOKEN)
        before = first.report.read_bytes()
        second = run_campaign(campaign(contacts, sandbox.url), api_key=TOKEN)
        assert len(get(sandbox.url, "/_calls")) == 3
    assert second.dispatch.sent == 0
    assert second.report.read_bytes() == before


def test_a_changed_contacts_file_is_refused_until_restart(contacts):
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        run_campaign(campaign(contacts, sandbox.url), api_key=TOKEN)
        contacts.write_text(contacts.read_text() + "Fay,3125550199,gold,\r\n")
        with pytest.raises(UsageError, match="was made for another contacts file or other settings; "
                                             "to start afresh run again with --restart"):
            run_campaign(campaign(contacts, sandbox.url), api_key=TOKEN)
        result = run_campaign(campaign(contacts, sandbox.url, restart=True), api_key=TOKEN)
    assert result.statuses == {"initiated": 4, "invalid": 1, "duplicate": 1}
    assert [r["error"] for r in read_report(result.report)][0] == (
        "the provider already had this call (idempotency key used before); it did not return its id")


@pytest.mark.parametrize("provider", ["formant", "agents"])
def test_a_bad_key_stops_the_run_after_a_handful_of_requests(write_csv, provider):
    rows = [["Phone"]] + [[f"+1 415 555 {i:04d}"] for i in range(200)]
    path = write_csv(rows)
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        with pytest.raises(FatalProviderError) as error:
            run_campaign(campaign(path, sandbox.url, provider=provider, concurrency=4, rate=50), api_key="wrong-key")
        requests = get(sandbox.url, "/_stats")["requests"]
    assert str(error.value) == ("the provider refused the API key (401); check DIALER_API_KEY; "
                                f"the run stopped, the report is {path.parent / 'report.csv'}")
    assert requests <= 8
    report = read_report(path.parent / "report.csv")
    assert len(report) == 200
    assert Counter(r["status"] for r in report) == {"not_attempted": 200}


def test_the_key_never_reaches_stdout_stderr_report_or_journal(contacts, capsys, monkeypatch):
    secret = "sk-live-DO-NOT-PRINT-9876"
    monkeypatch.setenv("DIALER_API_KEY", secret)
    monkeypatch.chdir(contacts.parent)
    with SandboxThread(SandboxConfig(token="other")) as sandbox:
        code = main(["run", "contacts.csv", "--provider", "formant", "--base-url", sandbox.url, "--agent-id", "1"])
    captured = capsys.readouterr()
    assert (code, captured.out) == (1, "")
    assert captured.err == ("dialer: the provider refused the API key (401); check DIALER_API_KEY; the run stopped, "
                            "the report is reports/contacts-report.csv\n")
    written = sorted(path.name for path in (contacts.parent / "reports").iterdir())
    assert written == ["contacts-report.csv", "contacts-report.csv.journal"]
    for name in written:
        assert secret.encode() not in (contacts.parent / "reports" / name).read_bytes()


def test_missing_api_key_names_the_variable(contacts, capsys, monkeypatch):
    monkeypatch.delenv("DIALER_API_KEY", raising=False)
    code = main(["run", str(contacts), "--provider", "formant", "--agent-id", "1", "--out", str(contacts.parent / "r.csv")])
    assert (code, capsys.readouterr().err) == (
        2, "dialer: set the DIALER_API_KEY environment variable to your provider's API key\n")


@pytest.mark.parametrize("argv, message", [
    ([], "choose a provider with --provider (formant|agents), or add --dry-run"),
    (["--provider", "formant"], "give the agent that places the calls with --agent-id N"),
    (["--provider", "agents", "--agent-id", "1"], "the agents provider has no public default host; pass --base-url URL"),
])
def test_calling_needs_provider_agent_and_host(contacts, capsys, argv, message):
    code = main(["run", str(contacts), "--out", str(contacts.parent / "r.csv"), *argv])
    assert (code, capsys.readouterr().err) == (2, f"dialer: {message}\n")


# --- faults ----------------------------------------------------------------------------------


def many_rows(write_csv, count: int = 300) -> Path:
    return write_csv([["Name", "Phone"]] + [[f"n{i}", f"+1 212 555 {i:04d}"] for i in range(count)])


def test_formant_with_faults_calls_no_one_twice_and_leaves_nothing_unknown(write_csv):
    path = many_rows(write_csv)
    config = SandboxConfig(token=TOKEN, fail=0.1, reset=0.1, lost=0.1, seed=3)
    with SandboxThread(config) as sandbox:
        result = run_campaign(campaign(path, sandbox.url, max_attempts=8), api_key=TOKEN)
        calls = get(sandbox.url, "/_calls")
    phones = Counter(c["phone"] for c in calls)
    assert max(phones.values()) == 1 and len(phones) == 300
    assert result.statuses == {"initiated": 300}


def test_agents_api_reports_exactly_the_dropped_answers_as_unknown(write_csv):
    path = many_rows(write_csv)
    config = SandboxConfig(token=TOKEN, fail=0.1, reset=0.05, lost=0.05, seed=4)
    with SandboxThread(config) as sandbox:
        result = run_campaign(campaign(path, sandbox.url, provider="agents", max_attempts=8), api_key=TOKEN)
        calls = get(sandbox.url, "/_calls")
        faults = get(sandbox.url, "/_stats")["faults"]
    report = read_report(result.report)
    phones = Counter(c["phone"] for c in calls)
    assert max(phones.values()) == 1
    unknown = {r["phone_e164"] for r in report if r["status"] == "unknown"}
    assert len(unknown) == faults["reset"] + faults["lost"]
    assert {r["phone_e164"] for r in report if r["status"] == "initiated"} == set(phones) - unknown
    assert result.statuses == {"initiated": 300 - len(unknown), "unknown": len(unknown)}


def test_resend_unknown_sends_unknown_rows_again_on_request(write_csv):
    path = many_rows(write_csv, 40)
    with SandboxThread(SandboxConfig(token=TOKEN, lost=0.2, seed=5)) as sandbox:
        first = run_campaign(campaign(path, sandbox.url, provider="agents"), api_key=TOKEN)
        unknown = first.statuses["unknown"]
        assert unknown > 0
        with SandboxThread(SandboxConfig(token=TOKEN)) as healthy:
            second = run_campaign(campaign(path, healthy.url, provider="agents", resend_unknown=True), api_key=TOKEN)
            assert len(get(healthy.url, "/_calls")) == unknown
    assert second.statuses == {"initiated": 40}


# --- the demo and kill -9 --------------------------------------------------------------------


def test_demo_campaign_runs_offline_and_writes_a_complete_report(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "campaigns", tmp_path / "campaigns")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIALER_API_KEY", raising=False)
    result = subprocess.run([sys.executable, "-m", "dialer", "run", "campaigns/demo.toml"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = read_report(tmp_path / "reports" / "demo-report.csv")
    with (ROOT / "campaigns" / "demo.csv").open(encoding="utf-8", newline="") as handle:
        original = list(csv.DictReader(handle))
    assert len(report) == len(original) == 252
    assert all(r[k] == o[k] for r, o in zip(report, original) for k in o)
    assert Counter(r["status"] for r in report) == {"initiated": 195, "invalid": 48, "duplicate": 9}
    assert "report: reports/demo-report.csv" in result.stdout


def test_killed_twice_and_resumed_ends_with_everyone_called_once(write_csv):
    path = many_rows(write_csv, 400)
    out = path.parent / "report.csv"
    config = SandboxConfig(token=TOKEN, delay=0.05, lost=0.05, seed=6)
    command = [sys.executable, "-m", "dialer", "run", str(path), "--provider", "formant", "--agent-id", "1",
               "--rate", "150", "--concurrency", "16", "--out", str(out), "--quiet"]
    env = {**os.environ, "DIALER_API_KEY": TOKEN}
    with SandboxThread(config) as sandbox:
        command[command.index("--agent-id"):command.index("--agent-id")] = ["--base-url", sandbox.url]
        for stop_after in (100, 250):
            process = subprocess.Popen(command, env=env)
            deadline = time.monotonic() + 60
            while get(sandbox.url, "/_stats")["created"] < stop_after and time.monotonic() < deadline:
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finished = subprocess.run(command, env=env, timeout=120)
        calls = get(sandbox.url, "/_calls")
    assert finished.returncode == 0
    phones = Counter(c["phone"] for c in calls)
    assert len(phones) == 400 and max(phones.values()) == 1
    assert Counter(r["status"] for r in read_report(out)) == {"initiated": 400}


def test_replays_meet_the_per_number_limit_and_still_call_no_one_twice(write_csv):
    path = many_rows(write_csv, 60)
    config = SandboxConfig(token=TOKEN, lost=0.2, per_number=1, seed=7)
    with SandboxThread(config) as sandbox:
        result = run_campaign(campaign(path, sandbox.url), api_key=TOKEN)
        calls = get(sandbox.url, "/_calls")
        stats = get(sandbox.url, "/_stats")
    assert stats["responses"]["429"] > 0
    assert Counter(Counter(c["phone"] for c in calls).values()) == {1: 60}
    assert result.statuses == {"initiated": 60}


def test_an_account_wide_429_pauses_the_run_and_every_row_ends_initiated(write_csv):
    path = many_rows(write_csv, 120)
    with SandboxThread(SandboxConfig(token=TOKEN, rate=40)) as sandbox:
        result = run_campaign(campaign(path, sandbox.url, provider="agents", rate=60), api_key=TOKEN)
        stats = get(sandbox.url, "/_stats")
    assert stats["responses"]["429"] > 0
    assert stats["created"] == 120
    assert result.statuses == {"initiated": 120}


def test_the_provider_never_sees_more_than_the_rate_in_any_second(write_csv):
    path = many_rows(write_csv, 150)
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        result = run_campaign(campaign(path, sandbox.url, rate=50, concurrency=32), api_key=TOKEN)
        stats = get(sandbox.url, "/_stats")
    assert stats["max_requests_per_second"] <= 50
    arrivals = stats["arrivals"]
    assert 150 / (arrivals[-1] - arrivals[0]) > 0.9 * 50
    assert result.statuses == {"initiated": 150}


def test_ctrl_c_finishes_in_flight_calls_writes_the_report_and_exits_130(write_csv):
    path = many_rows(write_csv, 300)
    out = path.parent / "report.csv"
    with SandboxThread(SandboxConfig(token=TOKEN, delay=0.2)) as sandbox:
        process = subprocess.Popen(
            [sys.executable, "-m", "dialer", "run", str(path), "--provider", "formant", "--base-url", sandbox.url,
             "--agent-id", "1", "--rate", "50", "--concurrency", "8", "--out", str(out), "--quiet"],
            env={**os.environ, "DIALER_API_KEY": TOKEN}, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while get(sandbox.url, "/_stats")["created"] < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        created = get(sandbox.url, "/_stats")["created"]
    assert process.returncode == 130
    assert stderr == "dialer: interrupted; run the same command again to resume\n"
    statuses = Counter(r["status"] for r in read_report(out))
    assert statuses == {"initiated": created, "not_attempted": 300 - created}

"""Hostile providers and spreadsheet formulas: each ends as the right outcome, within bounds,
and nothing a provider says can run as a formula or leak the key."""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from dialer.campaign import Campaign
from dialer.cli import main
from dialer.errors import FatalProviderError
from dialer.report import neutralize_formulas
from dialer.runner import run_campaign

from conftest import ServedApp

KEY = "sk-hostile-0123456789"


def report_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def campaign(contacts: Path, url: str, provider: str = "formant", **settings) -> Campaign:
    return Campaign(contacts=contacts, out=contacts.parent / "report.csv", provider=provider, base_url=url,
                    agent_id=1, rate=100, concurrency=4, **settings)


@pytest.fixture
def contacts(write_csv) -> Path:
    return write_csv([["Name", "Phone"], ["=HYPERLINK(\"x\")", "4155552671"], ["Ben", "2125550100"]])


def test_formula_like_cells_are_neutralized():
    cells = ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "fine", "", "a=b"]
    assert neutralize_formulas(pytest.importorskip("pandas").Series(cells, dtype="str")).tolist() == [
        "'=cmd|' /C calc'!A0", "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "fine", "", "a=b"]


def test_provider_text_cannot_become_a_formula_but_input_cells_stay_verbatim(contacts):
    async def evil(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": {"message": "=HYPERLINK(\"http://evil\")"}}, status=422)

    with ServedApp(evil) as server:
        result = run_campaign(campaign(contacts, server.url), api_key=KEY)
    rows = report_rows(result.report)
    assert [row["error"] for row in rows] == ["'=HYPERLINK(\"http://evil\")"] * 2
    assert rows[0]["Name"] == "=HYPERLINK(\"x\")"
    assert rows[0]["phone_e164"] == "+14155552671"


def test_call_ids_that_look_like_formulas_are_neutralized(contacts):
    async def odd(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"execution_id": "@evil", "call_status": "initiated"})

    with ServedApp(odd) as server:
        result = run_campaign(campaign(contacts, server.url, provider="agents"), api_key=KEY)
    assert [row["call_id"] for row in report_rows(result.report)] == ["'@evil", "'@evil"]


def test_a_provider_that_echoes_the_key_never_gets_it_into_report_journal_or_output(contacts, capsys, monkeypatch):
    async def echo(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"detail": f"bad request from {request.headers['Authorization']}"}, status=422)

    monkeypatch.setenv("DIALER_API_KEY", KEY)
    out = contacts.parent / "r.csv"
    with ServedApp(echo) as server:
        code = main(["run", str(contacts), "--provider", "agents", "--base-url", server.url, "--agent-id", "1",
                     "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert [row["error"] for row in report_rows(out)] == ["bad request from Bearer [key]"] * 2
    for written in (out, out.with_name("r.csv.journal")):
        assert KEY.encode() not in written.read_bytes()
    assert KEY not in captured.out + captured.err


def test_a_50_mb_answer_is_read_only_in_part_and_is_ambiguous(write_csv):
    async def flood(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(50):
                await response.write(chunk)
        except ConnectionError:
            pass
        return response

    path = write_csv([["Phone"], ["4155552671"]])
    with ServedApp(flood) as server:
        started = time.monotonic()
        result = run_campaign(campaign(path, server.url, provider="agents"), api_key=KEY)
    assert time.monotonic() - started < 10
    assert [(r["status"], r["error"]) for r in report_rows(result.report)] == [
        ("unknown", "the provider answered 200 without an execution_id")]


@pytest.mark.parametrize("body", [b"<html>ok</html>", b'{"data": {"status": "initiated"}}'])
def test_a_200_that_proves_nothing_is_replayed_on_formant_and_ends_known(write_csv, body):
    seen = Counter()

    async def vague_then_409(request: web.Request) -> web.Response:
        key = (await request.json())["idempotency_key"]
        seen[key] += 1
        if seen[key] == 1:
            return web.Response(status=200, body=body)
        return web.json_response({"error": {"message": "idempotency key already used"}}, status=409)

    path = write_csv([["Phone"], ["4155552671"]])
    with ServedApp(vague_then_409) as server:
        result = run_campaign(campaign(path, server.url), api_key=KEY)
    assert [(r["status"], r["attempts"]) for r in report_rows(result.report)] == [("initiated", "2")]


def test_an_account_wide_retry_after_of_a_year_stops_the_run_quickly(write_csv):
    async def throttled(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": {"message": "rate limit exceeded"}}, status=429,
                                 headers={"Retry-After": "31536000"})

    path = write_csv([["Phone"]] + [[f"+1 212 555 {i:04d}"] for i in range(50)])
    with ServedApp(throttled) as server:
        started = time.monotonic()
        with pytest.raises(FatalProviderError) as error:
            run_campaign(campaign(path, server.url), api_key=KEY)
    assert time.monotonic() - started < 10
    assert str(error.value).startswith("the provider asks to wait 31536000 s before any new call (rate limit "
                                       "exceeded); run the same command again later; the run stopped")
    assert Counter(r["status"] for r in report_rows(path.parent / "report.csv")) == {"not_attempted": 50}


def test_a_retry_after_in_the_past_is_retried_at_once_and_bounded(write_csv):
    calls = Counter()

    async def past(request: web.Request) -> web.Response:
        await request.read()
        calls["n"] += 1
        return web.json_response({"error": {"message": "rate limit exceeded for this number"}}, status=429,
                                 headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})

    path = write_csv([["Phone"], ["4155552671"]])
    with ServedApp(past) as server:
        started = time.monotonic()
        result = run_campaign(campaign(path, server.url, max_attempts=3), api_key=KEY)
    assert time.monotonic() - started < 5
    assert calls["n"] == 3
    assert [(r["status"], r["error"]) for r in report_rows(result.report)] == [
        ("failed", "gave up after 3 attempts: rate limit exceeded for this number; "
                   "nothing was created, a re-run tries again")]

"""Campaign features end to end: parameters, do-not-call lists, earlier reports, calling windows."""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
import urllib.request
from pathlib import Path

import pytest

from dialer.campaign import Campaign
from dialer.cli import main
from dialer.errors import InputError
from dialer.parameters import ParameterMap
from dialer.runner import run_campaign, validate_campaign
from dialer.sandbox import SandboxConfig, SandboxThread
from dialer.suppress import already_called_numbers, do_not_call_numbers
from dialer.windows import CallingWindow

TOKEN = "campaign-key"
ROWS = [["Customer Name", "Phone", "Thread", "TZ"],
        ["Ana", "(415) 555-2671", "conv-1", "America/Los_Angeles"],
        ["Ben", "212-555-0100", "", "America/New_York"],
        ["Cy", "+44 20 7946 0958", "conv-3", "Europe/London"]]


def get(url: str, path: str):
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.load(response)


def statuses(report: Path) -> list[tuple[str, str]]:
    with report.open(encoding="utf-8-sig", newline="") as handle:
        return [(row["status"], row["error"]) for row in csv.DictReader(handle)]


def calling(contacts: Path, url: str, **settings) -> Campaign:
    return Campaign(contacts=contacts, out=contacts.parent / "report.csv", provider=settings.pop("provider", "formant"),
                    base_url=url, agent_id=1, rate=100, **settings)


# --- do-not-call lists and earlier reports ---------------------------------------------------


def test_dnc_lists_of_any_shape_are_normalized_like_contacts(write_csv, tmp_path):
    headerless = tmp_path / "plain.csv"
    headerless.write_text("415.555.2671\n+1 (212) 555-0100\n")
    with_column = write_csv([["Name", "Mobile"], ["x", "0044 20 7946 0958"], ["y", "n/a"]], name="dnc.csv")
    assert do_not_call_numbers((headerless,), "US") == {"+14155552671", "+12125550100"}
    assert do_not_call_numbers((with_column,), "US") == {"+442079460958"}


def test_dnc_rows_are_never_sent_and_say_which_list(write_csv, tmp_path):
    contacts = write_csv(ROWS)
    dnc = tmp_path / "dnc.csv"
    dnc.write_text("Phone\n+14155552671\n")
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        result = run_campaign(calling(contacts, sandbox.url, dnc=(dnc,)), api_key=TOKEN)
        phones = [call["phone"] for call in get(sandbox.url, "/_calls")]
    assert sorted(phones) == ["+12125550100", "+442079460958"]
    assert statuses(result.report)[0] == ("dnc", "on the do-not-call list dnc.csv")


def test_a_dnc_list_added_before_a_resume_still_protects_pending_rows(write_csv, tmp_path, capsys):
    contacts = write_csv(ROWS)
    out = contacts.parent / "r.csv"
    dnc = tmp_path / "late.csv"
    dnc.write_text("212 555 0100\n")
    code = main(["run", str(contacts), "--out", str(out), "--dry-run", "--dnc", str(dnc), "--quiet"])
    assert code == 0
    assert statuses(out)[1] == ("dnc", "on the do-not-call list late.csv")


def test_numbers_initiated_in_an_earlier_report_are_excluded(write_csv, tmp_path):
    contacts = write_csv(ROWS)
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        first = run_campaign(calling(contacts, sandbox.url, dnc=()), api_key=TOKEN)
        earlier = first.report.rename(tmp_path / "last.csv")
        assert already_called_numbers(earlier) == {"+14155552671", "+12125550100", "+442079460958"}
        second = run_campaign(calling(contacts, sandbox.url, exclude_report=earlier, restart=True), api_key=TOKEN)
        calls = get(sandbox.url, "/_calls")
    assert len(calls) == 3
    assert statuses(second.report) == [("excluded", "already called in last.csv")] * 3


def test_an_earlier_report_whose_input_had_a_status_column_is_read_by_its_dialer_columns(write_csv):
    earlier = write_csv([["Name", "status", "phone_e164", "dialer_phone_e164", "dialer_status", "call_id",
                          "attempts", "error"],
                         ["Ana", "initiated", "+12125550100", "+14155552671", "initiated", "c-1", "1", ""],
                         ["Ben", "initiated", "+12125550100", "+13125550199", "failed", "", "1", "rejected"]],
                        name="last.csv")
    assert already_called_numbers(earlier) == {"+14155552671"}


def test_a_file_that_is_not_a_report_is_refused_as_an_earlier_report(write_csv):
    other = write_csv([["phone_e164", "status", "Name"], ["+14155552671", "initiated", "Ana"]], name="other.csv")
    with pytest.raises(InputError, match="other.csv: not a dialer report .* check exclude_report"):
        already_called_numbers(other)


# --- parameters ------------------------------------------------------------------------------


def test_parameters_map_columns_constants_and_formant_fields(write_csv):
    contacts = write_csv(ROWS)
    parameters = ParameterMap(columns={"Customer Name": "name"}, constants={"campaign": "spring"},
                              include_other_columns=False, conversation_id_column="Thread",
                              retry_context={"retry_initial_message": "Hi {Customer Name}", "collected_data": {"tz": "{TZ}"}},
                              metadata={"source": "dialer", "who": "{Customer Name}"})
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        run_campaign(calling(contacts, sandbox.url, parameters=parameters), api_key=TOKEN)
        first, second = get(sandbox.url, "/_calls")[:2]
    assert first["parameters"] == [{"name": "customer_phone", "value": "+14155552671"},
                                   {"name": "name", "value": "Ana"}, {"name": "campaign", "value": "spring"}]
    assert first["conversation_id"] == "conv-1" and second["conversation_id"] is None
    assert first["retry_context"] == {"retry_initial_message": "Hi Ana", "collected_data": {"tz": "America/Los_Angeles"}}
    assert json.loads(first["metadata"]) == {"source": "dialer", "who": "Ana"}


def test_agents_metadata_object_holds_columns_constants_and_the_metadata_table(write_csv):
    contacts = write_csv(ROWS)
    parameters = ParameterMap(columns={"Customer Name": "name"}, constants={"campaign": "spring"},
                              metadata={"source": "dialer"})
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        run_campaign(calling(contacts, sandbox.url, provider="agents", parameters=parameters), api_key=TOKEN)
        metadata = get(sandbox.url, "/_calls")[0]["metadata"]
    assert metadata == {"name": "Ana", "thread": "conv-1", "tz": "America/Los_Angeles", "campaign": "spring",
                        "source": "dialer"}


def test_a_parameter_naming_a_missing_column_is_refused_before_any_call(write_csv, capsys, tmp_path):
    contacts = write_csv(ROWS)
    campaign = tmp_path / "c.toml"
    campaign.write_text(f'contacts = "{contacts}"\n[parameters]\nretry_context = {{ msg = "Hi {{Custmer Name}}" }}\n')
    assert main(["validate", str(campaign)]) == 2
    assert capsys.readouterr().err == (
        "dialer: parameters.retry_context names the column 'Custmer Name', which the contacts file does not have; "
        "did you mean 'Customer Name'?\n")


# --- calling windows -------------------------------------------------------------------------

WEDNESDAY_0700_LA = dt.datetime(2026, 11, 25, 15, 0, tzinfo=dt.timezone.utc).timestamp()  # 10:00 NY, 15:00 London


def test_validate_counts_rows_outside_the_window_and_estimates_the_time(write_csv):
    contacts = write_csv(ROWS)
    campaign = Campaign(contacts=contacts, rate=2, window=CallingWindow.parse("09:00-17:00"))
    result = validate_campaign(campaign, wall_clock=lambda: WEDNESDAY_0700_LA)
    assert result.statuses == {"ready": 2, "outside_window": 1}
    assert (result.estimated_seconds, result.report) == (1.0, None)


def test_skip_reports_outside_window_and_a_later_run_calls_them(write_csv):
    contacts = write_csv(ROWS)
    window = CallingWindow.parse("09:00-17:00")
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        first = run_campaign(calling(contacts, sandbox.url, window=window), api_key=TOKEN,
                             wall_clock=lambda: WEDNESDAY_0700_LA)
        assert statuses(first.report)[0] == ("outside_window", "outside the calling window; it opens 2026-11-25 17:00 UTC")
        assert sorted(c["phone"] for c in get(sandbox.url, "/_calls")) == ["+12125550100", "+442079460958"]
        second = run_campaign(calling(contacts, sandbox.url, window=window), api_key=TOKEN,
                              wall_clock=lambda: WEDNESDAY_0700_LA + 2 * 3600)
        assert [c["phone"] for c in get(sandbox.url, "/_calls")][-1] == "+14155552671"
    assert second.statuses == {"initiated": 3}


def test_wait_keeps_the_run_alive_until_the_window_opens(write_csv):
    contacts = write_csv(ROWS[:2])
    start = time.time()
    opens = dt.datetime(2026, 11, 25, 17, 0, tzinfo=dt.timezone.utc).timestamp()
    fake_wall = lambda: opens - 1.0 + (time.time() - start)  # the window opens one second into the run
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        result = run_campaign(calling(contacts, sandbox.url, window=CallingWindow.parse("09:00-17:00"),
                                      on_outside_window="wait"), api_key=TOKEN, wall_clock=fake_wall)
        calls = get(sandbox.url, "/_calls")
    assert time.time() - start >= 1.0
    assert [c["phone"] for c in calls] == ["+14155552671"]
    assert result.statuses == {"initiated": 1}


def test_schedule_sends_the_next_opening_and_reports_scheduled(write_csv):
    contacts = write_csv(ROWS[:2])
    now = time.time()
    saturday = dt.datetime.fromtimestamp(now, dt.timezone.utc).date() + dt.timedelta(days=1)
    while saturday.weekday() != 5:
        saturday += dt.timedelta(days=1)
    saturday_noon = dt.datetime.combine(saturday, dt.time(20), dt.timezone.utc).timestamp()  # 12:00 in LA
    with SandboxThread(SandboxConfig(token=TOKEN)) as sandbox:
        result = run_campaign(calling(contacts, sandbox.url, window=CallingWindow.parse("09:00-17:00"),
                                      on_outside_window="schedule"), api_key=TOKEN, wall_clock=lambda: saturday_noon)
        call = get(sandbox.url, "/_calls")[0]
    monday_9_la = dt.datetime.combine(saturday + dt.timedelta(days=2), dt.time(17), dt.timezone.utc)
    assert call["scheduled_for"] == monday_9_la.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert statuses(result.report) == [("scheduled", "")]

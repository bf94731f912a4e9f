"""Calling windows in the recipient's local time, pinned to exact instants."""

from __future__ import annotations

import datetime as dt

import pytest

from dialer.windows import CallingWindow, Decision, WindowCheck, WindowPolicy

UTC = dt.timezone.utc
WORKDAYS = CallingWindow.parse("09:00-20:00")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize("local, is_open", [
    ("2026-11-25T08:59:59-08:00", False),   # Wednesday in Los Angeles, one second early
    ("2026-11-25T09:00:00-08:00", True),
    ("2026-11-25T19:59:59-08:00", True),
    ("2026-11-25T20:00:00-08:00", False),
])
def test_los_angeles_number_at_the_edges_of_the_window(local, is_open):
    assert WORKDAYS.check("+14155552671", at(local)).open is is_open


def test_next_opening_is_the_same_morning():
    assert WORKDAYS.check("+14155552671", at("2026-11-25T08:59:00-08:00")) == WindowCheck(
        False, at("2026-11-25T09:00:00-08:00"))


def test_sydney_number_on_a_saturday_waits_for_monday():
    saturday_noon = at("2026-11-28T12:00:00+11:00")
    assert WORKDAYS.check("+61291234567", saturday_noon) == WindowCheck(False, at("2026-11-30T09:00:00+11:00"))


EVERY_DAY = CallingWindow.parse("09:00-20:00", ["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
BRAZIL_TOLL_FREE = "+558001234567"  # may ring anywhere from Rio Branco (UTC-5) to Noronha (UTC-2)


def test_a_country_wide_number_may_be_in_every_zone_of_its_country():
    assert [zone.key for zone in EVERY_DAY.zones(BRAZIL_TOLL_FREE)] == [
        "America/Manaus", "America/Noronha", "America/Rio_Branco", "America/Sao_Paulo"]


@pytest.mark.parametrize("utc, is_open", [
    ("13:59", False),  # 08:59 in Rio Branco, the last zone to open
    ("14:00", True),
    ("21:59", True),
    ("22:00", False),  # 20:00 in Noronha, the first zone to close
])
def test_a_several_zone_number_is_inside_only_where_every_zone_is(utc, is_open):
    assert EVERY_DAY.check(BRAZIL_TOLL_FREE, at(f"2026-11-25T{utc}:00+00:00")).open is is_open


def test_a_several_zone_number_opens_when_its_last_zone_opens():
    assert EVERY_DAY.check(BRAZIL_TOLL_FREE, at("2026-11-25T12:00:00+00:00")).opens_at == at("2026-11-25T14:00:00+00:00")


def test_a_us_toll_free_number_is_open_only_while_guam_and_st_johns_overlap():
    # From 09:00 in Guam (UTC+10) to 20:00 in St. John's (UTC-3:30): 23:00 to 23:30 UTC.
    noon = at("2026-11-25T12:00:00+00:00")
    assert EVERY_DAY.check("+18005551234", noon) == WindowCheck(False, at("2026-11-25T23:00:00+00:00"))
    assert EVERY_DAY.check("+18005551234", at("2026-11-25T23:29:59+00:00")).open is True
    assert EVERY_DAY.check("+18005551234", at("2026-11-25T23:30:00+00:00")).open is False


def test_a_dst_morning_uses_the_new_offset():
    # 8 March 2026: clocks in Los Angeles jump from 02:00 to 03:00; 09:00 is UTC-7 that day.
    window = CallingWindow.parse("09:00-20:00", ["sun"])
    assert window.check("+14155552671", at("2026-03-08T15:59:00+00:00")).open is False
    assert window.check("+14155552671", at("2026-03-08T16:00:00+00:00")).open is True
    assert window.check("+14155552671", at("2026-03-08T08:00:00+00:00")).opens_at == at("2026-03-08T16:00:00+00:00")


def test_the_time_zone_column_wins_over_the_number():
    window = CallingWindow.parse("09:00-20:00", timezone_column="TZ")
    assert [zone.key for zone in window.zones("+14155552671", "Europe/Paris")] == ["Europe/Paris"]
    assert window.zones("+14155552671", "Mars/Olympus") == "unknown time zone 'Mars/Olympus' in TZ"


def test_unknown_zone_uses_the_fallback_or_says_why():
    assert CallingWindow.parse("09:00-20:00").zones("+80012345678") == (
        "time zone unknown for this number; set fallback_timezone")
    fallback = CallingWindow.parse("09:00-20:00", fallback_timezone="Europe/London")
    assert [zone.key for zone in fallback.zones("+80012345678")] == ["Europe/London"]


@pytest.mark.parametrize("action, decision", [
    ("skip", Decision("skip", reason="outside the calling window; it opens 2026-11-30 14:00 UTC")),
    ("wait", Decision("wait", until=at("2026-11-30T09:00:00-05:00"),
                      reason="waiting for the calling window (2026-11-30 14:00 UTC)")),
    ("schedule", Decision("send", scheduled_for="2026-11-30T14:00:00Z")),
])
def test_what_each_policy_does_outside_the_window(action, decision):
    saturday = at("2026-11-28T10:00:00-05:00")
    assert WindowPolicy(WORKDAYS, action).decide("+12125550100", saturday) == decision


def test_inside_the_window_every_policy_sends():
    assert WindowPolicy(WORKDAYS, "schedule").decide("+12125550100", at("2026-11-25T10:00:00-05:00")) == Decision("send")


def test_no_opening_within_30_days_is_skipped_with_a_reason():
    never = CallingWindow.parse("09:00-20:00", ["sat"], timezone_column="TZ")
    decision = WindowPolicy(never, "schedule").decide("+12125550100", at("2026-11-25T10:00:00-05:00"), "Mars/Olympus")
    assert decision == Decision("skip", reason="unknown time zone 'Mars/Olympus' in TZ")


@pytest.mark.parametrize("hours, days, message", [
    ("9-5", None, "hours = '9-5' should look like \"09:00-20:00\""),
    ("25:00-26:00", None, "hours = '25:00-26:00' has a time that does not exist"),
    ("20:00-09:00", None, "hours = '20:00-09:00' must end after it starts, on the same day"),
    ("09:00-20:00", ["monday", "funday"], "days = ['monday', 'funday'] should be names among mon, tue, wed, thu, fri, sat, sun"),
])
def test_bad_window_settings_say_what_is_allowed(hours, days, message):
    with pytest.raises(ValueError) as error:
        CallingWindow.parse(hours, days) if days else CallingWindow.parse(hours)
    assert str(error.value) == message


def test_window_repr_is_readable():
    assert repr(WORKDAYS) == "CallingWindow(09:00-20:00 mon,tue,wed,thu,fri, timezone_column=None, fallback=None)"

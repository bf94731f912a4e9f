"""The retry policy (which outcomes are sent again, after how long) and Retry-After parsing."""

from __future__ import annotations

import email.utils
import os
import random
import time

import pytest

from dialer.providers.base import Kind, Outcome, parse_retry_after
from dialer.retry import RetryPolicy

SEED = 1234


def policy(**settings) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(SEED), **settings)


# --- RetryPolicy.delay -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Kind.CREATED, Kind.ALREADY_CREATED, Kind.REJECTED, Kind.FATAL])
@pytest.mark.parametrize("replay_safe", [False, True])
def test_final_kinds_are_never_retried(kind, replay_safe):
    assert policy().delay(Outcome(kind, retry_after=1.0), 1, replay_safe=replay_safe) is None


@pytest.mark.parametrize(("attempts", "bound"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 30.0), (9, 30.0)])
def test_retry_safe_waits_a_full_jitter_backoff(attempts, bound):
    # bound = min(cap, base * 2 ** (attempts - 1)); the draw is uniform over [0, bound].
    expected = random.Random(SEED).uniform(0, bound)
    delay = policy(max_attempts=10).delay(Outcome(Kind.RETRY_SAFE), attempts, replay_safe=False)
    assert delay == expected
    assert 0 <= delay <= bound


def test_retry_safe_backoff_draws_in_sequence_from_the_policy_rng():
    reference = random.Random(SEED)
    retry = policy(max_attempts=10)
    delays = [retry.delay(Outcome(Kind.RETRY_SAFE), attempts, replay_safe=False) for attempts in (1, 2, 3)]
    assert delays == [reference.uniform(0, 0.5), reference.uniform(0, 1.0), reference.uniform(0, 2.0)]


@pytest.mark.parametrize("retry_after", [0.0, 2.0, 7.25, 600.0])
def test_retry_after_is_honoured_exactly(retry_after):
    outcome = Outcome(Kind.RETRY_SAFE, retry_after=retry_after)
    assert policy().delay(outcome, 1, replay_safe=False) == retry_after


def test_retry_after_above_max_wait_gives_up():
    outcome = Outcome(Kind.RETRY_SAFE, retry_after=600.5)
    assert policy(max_wait=600.0).delay(outcome, 1, replay_safe=False) is None


def test_ambiguous_is_final_without_replay_safety():
    assert policy().delay(Outcome(Kind.AMBIGUOUS), 1, replay_safe=False, age=0.0) is None


@pytest.mark.parametrize(("age", "retried"), [(0.0, True), (3600.0, True), (23 * 3600.0 - 0.001, True),
                                              (23 * 3600.0, False), (30 * 3600.0, False)])
def test_ambiguous_with_replay_safety_is_retried_only_inside_the_replay_window(age, retried):
    delay = policy().delay(Outcome(Kind.AMBIGUOUS), 1, replay_safe=True, age=age)
    assert (delay == random.Random(SEED).uniform(0, 0.5)) if retried else (delay is None)


def test_ambiguous_with_replay_safety_honours_retry_after():
    assert policy().delay(Outcome(Kind.AMBIGUOUS, retry_after=3.0), 1, replay_safe=True) == 3.0


@pytest.mark.parametrize("kind", [Kind.RETRY_SAFE, Kind.AMBIGUOUS])
def test_nothing_is_retried_once_max_attempts_are_sent(kind):
    retry = policy(max_attempts=3)
    assert retry.delay(Outcome(kind, retry_after=1.0), 2, replay_safe=True) == 1.0
    assert retry.delay(Outcome(kind, retry_after=1.0), 3, replay_safe=True) is None
    assert retry.delay(Outcome(kind, retry_after=1.0), 4, replay_safe=True) is None


def test_max_attempts_of_one_never_retries():
    assert policy(max_attempts=1).delay(Outcome(Kind.RETRY_SAFE), 1, replay_safe=False) is None


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_max_attempts_below_one_is_refused(max_attempts):
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=max_attempts)


# --- parse_retry_after -----------------------------------------------------------------------

NOW = 1_800_000_000.0  # a fixed wall-clock "now" (2027-01-15 08:00:00 UTC)


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0),
    ("0", 0.0),
    ("  7 ", 7.0),
    ("1.5", 1.5),
    (http_date(NOW + 30), 30.0),
    (http_date(NOW + 3600), 3600.0),
    ("Fri, 15 Jan 2027 08:00:45 GMT", 45.0),          # IMF-fixdate
    ("Friday, 15-Jan-27 08:00:45 GMT", 45.0),         # obsolete RFC 850 form
    (http_date(NOW - 30), 0.0),                       # in the past: go now
    ("-5", 0.0),                                      # never negative
])
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize("value", ["soon", "12 apples", "", None])
def test_parse_retry_after_without_a_usable_value(value):
    assert parse_retry_after(value, NOW) is None


@pytest.fixture
def local_time_is_new_york():
    """Run with the process's local time zone five hours behind UTC, then restore it."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "EST+05"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def test_parse_retry_after_reads_an_asctime_date_as_gmt(local_time_is_new_york):
    # RFC 9110 5.6.7: recipients must accept all three HTTP-date forms, all of them in GMT.
    assert parse_retry_after("Fri Jan 15 08:00:45 2027", NOW) == 45.0

"""Phone normalization: what spreadsheets contain, turned into E.164 or a reason."""

from __future__ import annotations

import string

import pandas as pd
import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dialer.phones import Normalized, check_region, normalize_number, normalize_phones


@pytest.mark.parametrize("cell, region, e164", [
    ("+14155552671", "US", "+14155552671"),
    ("(415) 555-2671", "US", "+14155552671"),
    ("415.555.2671", "US", "+14155552671"),
    ("415 555 2671", "US", "+14155552671"),
    ("1-415-555-2671", "US", "+14155552671"),
    ("tel:+1-415-555-2671", "US", "+14155552671"),
    ("TEL: 415 555 2671", "US", "+14155552671"),
    ("\u00a0415 555 2671 \u00a0", "US", "+14155552671"),
    ("  +44 20 7946 0958  ", "US", "+442079460958"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("+44 (0) 20 7946 0958", "US", "+442079460958"),
    ("0044 20 7946 0958", "US", "+442079460958"),
    ("011 44 20 7946 0958", "US", "+442079460958"),
    ("00 91 98765 43210", "GB", "+919876543210"),
    ("919876543210", "US", "+919876543210"),
    ("98765 43210", "IN", "+919876543210"),
    ("919876543210.0", "US", "+919876543210"),
    ("14155552671.0", "US", "+14155552671"),
    ("9.19876543211E+11", "US", "+919876543211"),
    ("4.155552671E+09", "US", "+14155552671"),
    ("030 901820", "DE", "+4930901820"),
])
def test_valid_numbers_become_e164(cell, region, e164):
    assert normalize_number(cell, region) == Normalized(e164, "")


@pytest.mark.parametrize("cell, note", [
    ("415-555-2671 x123", "extension 123 dropped"),
    ("415-555-2671 ext. 5", "extension 5 dropped"),
    ("+1 415 555 2671 extension 42", "extension 42 dropped"),
])
def test_extensions_are_dropped_with_a_note(cell, note):
    assert normalize_number(cell, "US") == Normalized("+14155552671", note)


@pytest.mark.parametrize("cell, reason", [
    ("", "empty"),
    ("   ", "empty"),
    ("n/a", "not a phone number"),
    ("call me", "not a phone number"),
    ("415555", "too short"),
    ("555-1234", "too short: no area code"),
    ("4155552671123456789", "too long"),
    ("+999 123 456 789", "unknown country code"),
    ("(415) 123-4567", "not a valid number for US"),
    ("+44 20 1234", "too short: no area code"),
    ("9.19877E+11", "digits lost by a spreadsheet (scientific notation)"),
    ("9.1987654321E+11", "digits lost by a spreadsheet (scientific notation)"),
    ("0044 7700 900792", "not a valid number for GB"),
])
def test_invalid_numbers_get_a_reason(cell, reason):
    assert normalize_number(cell, "US") == Normalized("", reason)


def test_a_number_valid_in_the_region_is_never_read_as_international():
    assert normalize_number("0113 496 0000", "GB").e164 == "+441134960000"


def test_column_gives_one_answer_per_row_in_order():
    column = pd.Series(["(415) 555-2671", "", "415-555-2671 x9", "(415) 555-2671", "n/a"], dtype=str)
    result = normalize_phones(column, "US")
    assert result.e164.tolist() == ["+14155552671", "", "+14155552671", "+14155552671", ""]
    assert result.note.tolist() == ["", "empty", "extension 9 dropped", "", "not a phone number"]
    assert result.valid.tolist() == [True, False, True, True, False]


def test_unknown_region_is_refused():
    with pytest.raises(ValueError, match="unknown region 'XX'"):
        check_region("XX")
    assert check_region("gb") == "GB"


# --- properties ------------------------------------------------------------------------------

REGIONS = ["US", "GB", "IN", "DE", "BR", "AU", "IT", "AR", "MX", "CA", "FR", "JP"]
SEPARATORS = [" ", "-", ".", "(", ")", "", "", ""]


@st.composite
def phone_like(draw) -> str:
    """Cells shaped like phone numbers: plausible digits, prefixes and separators."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number(region)
    digits = list(phonenumbers.national_significant_number(example))
    for _ in range(draw(st.integers(0, 3))):
        digits[draw(st.integers(0, len(digits) - 1))] = draw(st.sampled_from(string.digits))
    digits = digits[: len(digits) + draw(st.integers(-2, 0))] + draw(st.lists(st.sampled_from(string.digits), max_size=2))
    prefix = draw(st.sampled_from(["", "+", "0", "00", "011", "1", "+0"])) + draw(
        st.sampled_from(["", str(example.country_code)]))
    text = prefix + "".join(digits)
    spaced = "".join(ch + draw(st.sampled_from(SEPARATORS)) for ch in text)
    return draw(st.sampled_from(["", " ", "tel:", "\u00a0"])) + spaced + draw(st.sampled_from(["", " ", "\u00a0", " x12"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell=st.one_of(st.text(max_size=40), phone_like()), region=st.sampled_from(REGIONS))
def test_any_cell_gives_a_valid_e164_or_a_reason(cell, region):
    e164, note = normalize_number(cell, region)
    if e164:
        number = phonenumbers.parse(e164)
        assert phonenumbers.is_valid_number(number)
        assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == e164
    else:
        assert note


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=st.lists(phone_like(), min_size=1, max_size=60), region=st.sampled_from(REGIONS))
def test_bulk_path_agrees_with_the_one_cell_rule(cells, region):
    result = normalize_phones(pd.Series(cells, dtype=str), region)
    expected = [normalize_number(cell, region) for cell in cells]
    assert list(zip(result.e164.tolist(), result.note.tolist())) == [tuple(n) for n in expected]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=st.lists(phone_like(), min_size=1, max_size=30), region=st.sampled_from(REGIONS))
def test_bulk_path_agrees_with_the_one_cell_rule_across_blocks(cells, region):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("dialer.phones._BLOCK", 3)  # distinct cells are checked 3 at a time, not 65,536
        result = normalize_phones(pd.Series(cells, dtype=str), region)
    expected = [normalize_number(cell, region) for cell in cells]
    assert list(zip(result.e164.tolist(), result.note.tolist())) == [tuple(n) for n in expected]

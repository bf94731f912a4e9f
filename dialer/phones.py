"""Turn what people type into spreadsheets into E.164 numbers, or say why not.

``normalize_number`` is the rule for one cell; ``normalize_phones`` applies it to a whole column
and gives the same answers faster: each distinct cell is handled once, and the common shapes
(``(415) 555-2671``, ``+44 20 7946 0958``) are validated in bulk against phonenumbers' own
metadata, leaving the full parser for everything else. Tests hold both paths to the same result.

The rule for one cell:
1. Trim whitespace (non-breaking included) and a ``tel:`` prefix.
2. Repair spreadsheet damage: ``919876543210.0`` becomes ``919876543210``; ``9.19876543211E+11``
   becomes ``919876543211`` when every digit is present, and is invalid when digits were lost.
3. Parse with the default region. If that gives no valid number, try the digits as
   international: after a ``00`` or ``011`` prefix, or with a ``+`` in front
   (``919876543210`` with region US is ``+919876543210``). The first valid reading wins.
4. An extension (``x123``, ``ext. 5``) is dropped, and the note says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberFormat
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, ValidationResult

__all__ = ["Normalized", "Normalization", "normalize_number", "normalize_phones", "check_region"]


class Normalized(NamedTuple):
    """One cell's answer: ``e164`` is ``""`` when invalid; ``note`` is then the reason."""

    e164: str
    note: str


@dataclass(frozen=True)
class Normalization:
    """A column's answer, one entry per row: E.164 (``""`` when invalid; Arrow-backed, so that a
    million numbers are not a million Python strings) and a note."""

    e164: pd.Series
    note: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return (self.e164 != "").to_numpy(dtype=bool)


def check_region(region: str) -> str:
    """Return ``region`` upper-cased if phonenumbers knows it, else raise ``ValueError``."""
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {region!r}; use a two-letter ISO country code such as US, GB or IN")
    return code


# --- one cell --------------------------------------------------------------------------------

_TEL_PREFIX = re.compile(r"(?i)^tel:\s*")
_EDGE_JUNK = "\u200b\u200c\u200d\u2060\ufeff"
_EXCEL_DECIMAL = re.compile(r"(\d+)\.0+")
_EXCEL_SCIENTIFIC = re.compile(r"(\d)(?:[.,](\d+))?[eE]\+?(\d{1,3})")
_IDD_PREFIX = re.compile(r"^[\s().\-]*(?:011|00)")
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short: no area code",
}


def normalize_number(raw: str, region: str) -> Normalized:
    """Normalize one cell with ``region`` as the default country; never raises."""
    text = raw.strip().strip(_EDGE_JUNK).strip()
    text = _TEL_PREFIX.sub("", text)
    if not text:
        return Normalized("", "empty")
    scientific = _EXCEL_SCIENTIFIC.fullmatch(text)
    if scientific:
        lead, fraction, exponent = scientific.groups()
        digits = lead + (fraction or "")
        if len(digits) != int(exponent) + 1:
            return Normalized("", "digits lost by a spreadsheet (scientific notation)")
        text = digits
    decimal = _EXCEL_DECIMAL.fullmatch(text)
    if decimal:
        text = decimal.group(1)

    number = _parse_valid(text, region)
    if isinstance(number, str) and "+" not in text:
        international = _IDD_PREFIX.sub("+", text, count=1)
        has_idd = international != text
        alternative = _parse_valid(international if has_idd else "+" + text, region)
        if has_idd or not isinstance(alternative, str):
            number = alternative
    if isinstance(number, str):
        return Normalized("", number)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    note = f"extension {number.extension} dropped" if number.extension else ""
    return Normalized(e164, note)


def _parse_valid(text: str, region: str) -> phonenumbers.PhoneNumber | str:
    """The valid number ``text`` denotes, or the reason it is not one."""
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as error:
        return _PARSE_REASONS.get(error.error_type, "not a phone number")
    if phonenumbers.is_valid_number(number):
        return number
    reason = _LENGTH_REASONS.get(phonenumbers.is_possible_number_with_reason(number))
    if reason:
        return reason
    where = phonenumbers.region_code_for_country_code(number.country_code)
    return f"not a valid number for {where}" if where not in ("ZZ", "001") else "not a valid number"


# --- a whole column --------------------------------------------------------------------------

_SIMPLE_SHAPE = r"[ \t]*(?:\+[ \t]*)?\(?[0-9][0-9 \-.()]*"
_NON_DIGITS = r"[^0-9]+"
# The no-break space is the character itself, not a ``\u`` escape: pandas hands such a pattern to
# Arrow, and would run an escape through Python's ``re``, one cell at a time, as Python strings.
_EDGE_SPACE_AND_TEL = "^[ \t\u00a0]*(?:[tT][eE][lL]:)?|[ \t\u00a0]+$"
_BLOCK = 65536
_NON_GEO_CODES = frozenset(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)


def normalize_phones(raw: pd.Series, region: str) -> Normalization:
    """Normalize a column of cells; each distinct cell is normalized once."""
    encoded = _arrow(raw).dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    distinct = pd.Series(pd.arrays.ArrowStringArray(encoded.dictionary))
    e164 = pa.concat_arrays([  # a block at a time, so that the temporaries stay small
        _fast_e164(pd.Series(pd.arrays.ArrowStringArray(encoded.dictionary.slice(start, _BLOCK))), region)
        for start in range(0, len(distinct), _BLOCK)] or [pa.array([], type=pa.string())])
    note = np.full(len(distinct), "", dtype=object)
    undecided = e164.is_null()
    slow = []
    for i in np.flatnonzero(undecided.to_numpy(zero_copy_only=False)):
        number, note[i] = normalize_number(distinct.iat[i], region)
        slow.append(number)
    if slow:
        e164 = pc.replace_with_mask(e164, undecided, pa.array(slow, type=pa.string()))
    return Normalization(pd.Series(pd.arrays.ArrowStringArray(e164.take(pa.array(codes)))), note[codes])


def _fast_e164(cells: pd.Series, region: str) -> pa.StringArray:
    """E.164 for the cells whose shape lets phonenumbers' metadata decide in bulk; null for the
    rest (left to ``normalize_number``), including every number found invalid here.

    Everything stays in Arrow arrays: a million numbers never become a million Python strings."""
    found = np.full(len(cells), -1, dtype=np.int64)  # each cell's position in the numbers found
    numbers: list[pa.Array] = []

    def keep(positions: pd.Index, e164: pd.Series) -> None:
        start = sum(len(part) for part in numbers)
        found[positions] = np.arange(start, start + len(e164))
        numbers.append(_arrow(e164))

    cells = cells.str.replace(_EDGE_SPACE_AND_TEL, "", regex=True)
    simple = cells.str.fullmatch(_SIMPLE_SHAPE) & ~cells.str.fullmatch(r"[ \t]*[0-9]+\.0+[ \t]*")
    shaped = cells[simple]
    digits = shaped.str.replace(_NON_DIGITS, "", regex=True)
    plus = shaped.str.lstrip().str.startswith("+").to_numpy(dtype=bool)

    international = digits[plus]
    country = _leading_country_code(international)
    for code, group in international.groupby(country, sort=False):
        if code == 0 or code in _NON_GEO_CODES:
            continue
        national = group.str.slice(len(str(code)))
        usable = ~_starts_with(national, _metadata_for_code(code).national_prefix_for_parsing)
        national = national[usable]
        valid = _valid_for_code(national, code)
        keep(national.index[valid], "+" + group[usable][valid])

    domestic = digits[~plus]
    for national, code in _domestic_readings(domestic, PhoneMetadata.metadata_for_region(region)):
        valid = _valid_for_code(national, code)
        keep(national.index[valid], f"+{code}" + national[valid])

    if not numbers:
        return pa.nulls(len(cells), type=pa.string())
    return pa.concat_arrays(numbers).take(pa.array(found, mask=found < 0))


def _arrow(text: pd.Series) -> pa.StringArray:
    """A text column as one Arrow string array (a copy only where pandas holds it otherwise)."""
    array = pa.array(text)  # pandas gives chunked or not, string or large_string, by version
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.string())


def _domestic_readings(digits: pd.Series, metadata: PhoneMetadata) -> list[tuple[pd.Series, int]]:
    """How phonenumbers reads digits dialled without ``+`` in the default region, for the digits
    whose reading needs no national-prefix or IDD stripping: national numbers as they are, and
    numbers that start with the region's own country code (``1 415 555 2671`` in the US)."""
    code, general = metadata.country_code, metadata.general_desc
    usable = ~(_starts_with(digits, metadata.international_prefix)
               | _starts_with(digits, metadata.national_prefix_for_parsing))
    with_code = digits.str.startswith(str(code))
    plain = digits[usable & ~with_code]
    prefixed = digits[with_code & ~_starts_with(digits, metadata.international_prefix)]
    rest = prefixed.str.slice(len(str(code)))
    too_long = (prefixed.str.len() > max(general.possible_length)).to_numpy()
    rest_is_better = (~_matches_desc(prefixed, None, general) & _matches_desc(rest, None, general))
    keep = (too_long | rest_is_better) & ~_starts_with(rest, metadata.national_prefix_for_parsing).to_numpy()
    return [(plain, code), (rest[keep], code)]


def _leading_country_code(digits: pd.Series) -> np.ndarray:
    """The country calling code each digit string starts with, as phonenumbers reads it (0: none)."""
    codes = np.zeros(len(digits), dtype=np.int64)
    undecided = (digits.str.slice(0, 1) != "0").to_numpy(dtype=bool, copy=True)
    for length in (1, 2, 3):
        prefix = digits.str.slice(0, length)
        known = prefix.isin([str(c) for c in COUNTRY_CODE_TO_REGION_CODE if len(str(c)) == length])
        hit = undecided & known.to_numpy()
        codes[hit] = prefix[hit].astype(int).to_numpy()
        undecided &= ~hit
    return codes


def _starts_with(digits: pd.Series, pattern: str | None) -> pd.Series:
    if not pattern:
        return pd.Series(False, index=digits.index)
    return digits.str.match(f"(?:{pattern})")


@lru_cache(maxsize=None)
def _metadata_for_code(code: int) -> PhoneMetadata:
    return PhoneMetadata.metadata_for_region(phonenumbers.region_code_for_country_code(code))


def _valid_for_code(national: pd.Series, code: int) -> np.ndarray:
    """``is_valid_number`` for many national numbers of one country calling code at once."""
    valid = np.zeros(len(national), dtype=bool)
    undecided = np.ones(len(national), dtype=bool)
    for region in COUNTRY_CODE_TO_REGION_CODE[code]:
        metadata = PhoneMetadata.metadata_for_region(region)
        if metadata is None or not undecided.any():
            continue
        rows = np.flatnonzero(undecided)
        subset = national.iloc[rows]
        if metadata.leading_digits is not None:
            claimed = _starts_with(subset, metadata.leading_digits).to_numpy()
            valid[rows[claimed]] = _type_known(subset[claimed], metadata)
        else:
            claimed = _type_known(subset, metadata)
            valid[rows[claimed]] = True
        undecided[rows[claimed]] = False
    return valid


_TYPE_DESCS = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
               "uan", "voicemail", "fixed_line", "mobile")


def _type_known(national: pd.Series, metadata: PhoneMetadata) -> np.ndarray:
    """phonenumbers' ``number_type(...) != UNKNOWN``, for many numbers of one region."""
    lengths = national.str.len()
    known = _matches_desc(national, lengths, metadata.general_desc)
    if not known.any():
        return known
    rows = np.flatnonzero(known)
    subset, subset_lengths = national.iloc[rows], lengths.iloc[rows]
    any_type = np.zeros(len(rows), dtype=bool)
    for name in _TYPE_DESCS:
        any_type |= _matches_desc(subset, subset_lengths, getattr(metadata, name))
    known[rows] = any_type
    return known


def _matches_desc(national: pd.Series, lengths: pd.Series | None, desc: object) -> np.ndarray:
    """Whether each number fits a number description: its pattern and, if ``lengths`` is given,
    its possible lengths."""
    pattern = getattr(desc, "national_number_pattern", None)
    if not pattern:
        return np.zeros(len(national), dtype=bool)
    matched = national.str.fullmatch(f"(?:{pattern})").to_numpy(dtype=bool, copy=True)
    if lengths is not None and desc.possible_length:
        matched &= lengths.isin(desc.possible_length).to_numpy()
    return matched

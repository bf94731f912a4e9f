"""Read a contacts file (CSV or XLSX) as text, exactly as written, and find its phone column.

Every cell comes back as a string: an empty cell is ``""``, never ``nan``; a number that Excel
stored as a number comes back as its digits (``14155552671``, not ``1.4155552671E+10``).
Columns are kept by position, so duplicate or empty header names survive untouched.

Hostile files are refused with a one-line ``InputError`` before they can cost much time or
memory: a header wider than Excel's 16,384 columns; short rows that would pad out to far more
cells than the file has bytes; a workbook that is a zip bomb, or whose sheet runs past Excel's
last row. Anything that loads loads whole: every row, every cell, verbatim.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from dialer.errors import ColumnError, InputError

__all__ = ["Contacts", "load_contacts", "read_table", "find_phone_column", "PHONE_HEADERS"]

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
XLSX_SUFFIXES = (".xlsx", ".xlsm")
DELIMITERS = (",", ";", "\t", "|")
PHONE_HEADERS = (
    "phone", "phone number", "phone_number", "mobile", "mobile number", "cell", "msisdn",
    "contact number", "customer_phone", "tel", "telephone", "number",
)
_SAMPLE_BYTES = 64 * 1024
_CHUNK_ROWS = 50_000

MAX_COLUMNS = 16_384            # Excel's last column (XFD); pandas takes 4 s per 100,000 columns
FREE_CELLS = 1_000_000          # cells any file may pad out to; past that, one cell per byte of file,
                                # as many as a file of that size with every row written out holds
MAX_SHEET_ROWS = 1_048_576      # Excel's last row
MAX_XLSX_BYTES = 1 << 30        # inflated; Excel's last row, 7 columns of text: ~400 MB of XML
MAX_XLSX_RATIO = 100            # real workbook parts inflate 2-30 fold; deflate bombs up to 1,000
_RATIO_FREE_BYTES = 16 << 20    # parts smaller than this are cheap to parse whatever their ratio


def _header_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


_PHONE_KEYS = frozenset(_header_key(name) for name in PHONE_HEADERS)


@dataclass
class Contacts:
    """The rows of a contacts file as text, with their header and the phone column's position.

    ``frame`` has positional columns ``0..len(header)-1``, all strings. Row ``i`` of the frame is
    row ``i + 2`` as a person counts rows in the file or report (the header is row 1).
    """

    path: Path
    header: list[str]
    frame: pd.DataFrame
    phone_index: int
    warnings: list[str] = field(default_factory=list)

    @property
    def phone_column(self) -> str:
        return self.header[self.phone_index]

    @property
    def phones(self) -> pd.Series:
        return self.frame[self.phone_index]

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return (f"<Contacts {self.path.name!r}: {len(self)} rows, {len(self.header)} columns, "
                f"phone column {self.phone_column!r}>")


def load_contacts(path: str | Path, *, sheet: str | None = None,
                  phone_column: str | None = None) -> Contacts:
    """Load a ``.csv``/``.tsv``/``.txt`` or ``.xlsx`` file; raise ``InputError`` if it can't be used."""
    path = Path(path)
    header, frame, notes = read_table(path, sheet=sheet)
    if not header:
        raise InputError(f"{path}: the file is empty; it needs a header row and one row per contact")
    if not any(name.strip() for name in header):
        raise InputError(f"{path}: the first row has no column names; put the header row first")
    if frame.empty:
        raise InputError(f"{path}: the file has a header but no rows")
    index = find_phone_column(header, phone_column, source=str(path))
    return Contacts(path, header, frame, index, notes)


def read_table(path: Path, *, sheet: str | None = None) -> tuple[list[str], pd.DataFrame, list[str]]:
    """The first row and the other rows of a contacts-like file, all text, with its encoding and
    any warnings; empty when the file is."""
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path to your contacts file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the path of a .csv or .xlsx file")
    suffix = path.suffix.lower()
    notes: list[str] = []
    if suffix in XLSX_SUFFIXES:
        header, frame = _read_xlsx(path, sheet)
        return header, frame, notes
    if suffix in CSV_SUFFIXES:
        if sheet is not None:
            raise InputError(f"{path}: --sheet applies only to .xlsx files")
        header, frame = _read_csv(path, notes)
        return header, frame, notes
    if suffix == ".xls":
        raise InputError(f"{path}: the old .xls format is not supported; save it as .xlsx or .csv")
    raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv, .tsv, .txt or .xlsx")


def find_phone_column(header: list[str], requested: str | None = None, *, source: str = "") -> int:
    """Return the position of the phone column: ``requested`` if given, else the one header that
    looks like a phone column (case, spaces, ``_`` and ``-`` ignored)."""
    prefix = f"{source}: " if source else ""
    listing = ", ".join(repr(name) for name in header)
    if requested is not None:
        exact = [i for i, name in enumerate(header) if name == requested]
        loose = [i for i, name in enumerate(header) if _header_key(name) == _header_key(requested)]
        matches = exact or loose
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ColumnError(f"{prefix}{len(matches)} columns are named {requested!r}; "
                              "rename one so that --phone-column picks a single column")
        raise ColumnError(f"{prefix}no column named {requested!r}; the columns are: {listing}")
    matches = [i for i, name in enumerate(header) if _header_key(name) in _PHONE_KEYS]
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(repr(header[i]) for i in matches)
        raise ColumnError(f"{prefix}several columns could hold the phone number ({names}); "
                          "pass --phone-column NAME to pick one")
    raise ColumnError(f"{prefix}no phone column found among: {listing}; "
                      "pass --phone-column NAME to name it")


# --- CSV -------------------------------------------------------------------------------------


def _read_csv(path: Path, notes: list[str]) -> tuple[list[str], pd.DataFrame]:
    try:
        with path.open("rb") as handle:
            sample = handle.read(_SAMPLE_BYTES)
    except OSError as error:
        raise InputError(f"{path}: cannot read the file ({error.strerror}); check its permissions")
    if not sample.strip():
        return [], pd.DataFrame()
    encoding = _guess_encoding(path, sample)
    text_sample = sample.decode(encoding, errors="ignore")
    delimiter = _sniff_delimiter(text_sample)
    width = _header_width(path, delimiter, encoding)
    try:
        rows = _read_csv_as(path, delimiter, encoding, width)
    except UnicodeDecodeError:
        if encoding != "utf-8-sig":
            raise InputError(f"{path}: the file is not valid {encoding} text; save it as UTF-8")
        encoding = "cp1252"
        try:
            rows = _read_csv_as(path, delimiter, encoding, width)
        except UnicodeDecodeError:
            raise InputError(f"{path}: the file is neither UTF-8 nor Windows-1252 text; "
                             "save it as UTF-8 CSV") from None
        notes.append(f"{path.name} is not UTF-8; read it as Windows-1252 (cp1252)")
    if rows.empty:
        return [], rows
    header = [str(cell) for cell in rows.iloc[0].tolist()]
    frame = rows.iloc[1:].reset_index(drop=True)
    return header, frame


def _guess_encoding(path: Path, sample: bytes) -> str:
    if sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in sample:
        if abs(sample[0::2].count(0) - sample[1::2].count(0)) > len(sample) // 4:
            raise InputError(f"{path}: this is UTF-16 text without a byte-order mark; save it as UTF-8 CSV")
        raise InputError(f"{path}: this is not a text file (it contains NUL bytes); "
                         "export the sheet as CSV or XLSX")
    return "utf-8-sig"


def _sniff_delimiter(sample: str) -> str:
    """Pick the delimiter that splits the first lines into the most, equally long, fields."""
    lines = sample.splitlines()[:50]
    if len(sample) >= _SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line of a cut sample may be partial
    best, best_score = ",", (0, 0)
    for delimiter in DELIMITERS:
        try:
            widths = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        except csv.Error:
            continue
        if not widths or widths[0] < 2:
            continue
        consistent = sum(width == widths[0] for width in widths)
        score = (consistent, widths[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _header_width(path: Path, delimiter: str, encoding: str) -> int:
    """The number of fields of the first record, read alone; refuse more than ``MAX_COLUMNS``."""
    limit = MAX_COLUMNS * 1024  # characters; a kilobyte per column name is plenty
    lines: list[str] = []
    size = quotes = 0
    with path.open(encoding=encoding, errors="replace", newline="") as handle:
        while size < limit and (not lines or quotes % 2):  # an odd quote: the record goes on
            line = handle.readline(limit - size)
            if not line:
                break
            lines.append(line)
            size, quotes = size + len(line), quotes + line.count('"')
    text = "".join(lines)
    try:
        width = len(next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), []))
    except csv.Error:  # a header cell over the csv module's 128 KB limit
        width = text.count(delimiter) + 1
    if width > MAX_COLUMNS:
        raise _too_wide(path, f"at least {width:,}" if size >= limit else f"{width:,}")
    return width


def _too_wide(path: Path, count: str, row: str = "the header row") -> InputError:
    return InputError(f"{path}: {row} has {count} columns, more than the {MAX_COLUMNS:,} "
                      "dialer reads (Excel's limit); delete the unused columns and save it again")


def _too_sparse(path: Path, budget: int) -> InputError:
    return InputError(f"{path}: its rows would make over {budget:,} cells, nearly all empty; "
                      "delete the empty columns and rows and save it again")


def _read_csv_as(path: Path, delimiter: str, encoding: str, width: int) -> pd.DataFrame:
    # Short rows are padded out to the header's width, so a small file of short rows under a wide
    # header could make billions of cells. A full row costs at least a byte per cell: when the
    # line count allows more cells than FREE_CELLS plus one per byte, read no further than that
    # (nrows costs pandas ~20%, hence the count first) and refuse the file if it goes on.
    size = path.stat().st_size
    budget = FREE_CELLS + size
    most = None
    if width * (size // 2 + 1) > budget and width * _count_lines(path) > budget:
        most = budget // width + 1
    try:
        chunks = pd.read_csv(path, sep=delimiter, header=None, dtype=str, keep_default_na=False,
                             na_filter=False, encoding=encoding, engine="c", quotechar='"',
                             skip_blank_lines=True, nrows=most, chunksize=_CHUNK_ROWS)
        rows = pd.concat(chunks, ignore_index=True)  # in chunks: the parser's Python strings never pile up
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except pd.errors.ParserError as error:
        raise InputError(_explain_parser_error(path, str(error), delimiter)) from None
    except OSError as error:
        raise InputError(f"{path}: cannot read the file ({error}); check its permissions") from None
    if rows.shape[1] > MAX_COLUMNS:  # pandas read the header wider than the csv module did
        raise _too_wide(path, f"{rows.shape[1]:,}")
    if most is not None and len(rows) >= most:  # stopped short: refuse rather than drop rows
        raise _too_sparse(path, budget)
    return rows


def _count_lines(path: Path) -> int:
    """At least the number of lines (pandas ends one at CR, LF or CRLF). Small reads: freeing
    big ones raises glibc's mmap threshold, and with it the peak RSS of the load that follows."""
    lines = 1
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            lines += chunk.count(b"\n") + chunk.count(b"\r")
    return lines


def _explain_parser_error(path: Path, message: str, delimiter: str) -> str:
    shown = {"\t": "tab", ",": "','", ";": "';'", "|": "'|'"}[delimiter]
    ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if ragged:
        expected, line, seen = ragged.groups()
        return (f"{path}: line {line} has {seen} fields but the header has {expected} "
                f"(delimiter {shown}); quote cells that contain the delimiter or fix that line")
    if "EOF inside string" in message:
        return f"{path}: a quoted cell is never closed; check the quotes in the file"
    return f"{path}: cannot parse the file as CSV ({message.strip()})"


# --- XLSX ------------------------------------------------------------------------------------


def _read_xlsx(path: Path, sheet: str | None) -> tuple[list[str], pd.DataFrame]:
    import openpyxl

    budget = FREE_CELLS + _check_zip(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except _XLSX_ERRORS as error:
        raise _unreadable(path, error) from None
    try:
        if sheet is None:
            worksheet = book.worksheets[0]
        elif sheet in book.sheetnames:
            worksheet = book[sheet]
        else:
            names = ", ".join(repr(name) for name in book.sheetnames)
            raise InputError(f"{path}: no sheet named {sheet!r}; the sheets are: {names}")
        if not hasattr(worksheet, "iter_rows"):
            raise InputError(f"{path}: sheet {sheet!r} is a chart, not a table; name a sheet with --sheet")
        worksheet.reset_dimensions()  # rows as long as their cells, whatever the stated used range
        rows = list(_xlsx_rows(worksheet.iter_rows(values_only=True), path, budget))
    except _XLSX_ERRORS as error:
        raise _unreadable(path, error) from None
    finally:
        book.close()
    if not rows:
        return [], pd.DataFrame()
    width = max(len(row) for row in rows)
    if len(rows) * width > budget:
        raise _too_sparse(path, budget)
    padded = [row + [""] * (width - len(row)) for row in rows]
    header = padded[0]
    frame = pd.DataFrame(padded[1:], columns=range(width), dtype=str)
    return header, frame


# What openpyxl raises on a damaged workbook; SyntaxError is broken XML, from ElementTree or lxml.
_XLSX_ERRORS = (zipfile.BadZipFile, zlib.error, KeyError, ValueError, TypeError, AttributeError,
                IndexError, OSError, EOFError, SyntaxError)


def _unreadable(path: Path, error: Exception) -> InputError:
    return InputError(f"{path}: not a readable .xlsx workbook ({type(error).__name__}); "
                      "open it in Excel and save it again as .xlsx")


def _check_zip(path: Path) -> int:
    """Refuse a zip bomb or an oversized workbook from the sizes in the zip's directory, before
    inflating anything (Python's zipfile never inflates past them); return the inflated size."""
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise _unreadable(path, error) from None
    if "[Content_Types].xml" not in {part.filename for part in parts}:
        raise InputError(f"{path}: a zip archive but not an .xlsx workbook; "
                         "give the .xlsx file itself, or open it in Excel and save it as .xlsx")
    for part in parts:
        ratio = part.file_size / max(part.compress_size, 1)
        if part.file_size > _RATIO_FREE_BYTES and ratio > MAX_XLSX_RATIO:
            raise InputError(f"{path}: {part.filename} would inflate {ratio:,.0f}-fold to "
                             f"{part.file_size / 1e6:,.0f} MB, like a zip bomb; "
                             "open it in Excel and save it again as .xlsx")
    total = sum(part.file_size for part in parts)
    if total > MAX_XLSX_BYTES:
        raise InputError(f"{path}: the workbook inflates to {total / 1e6:,.0f} MB, more than the "
                         f"{MAX_XLSX_BYTES / 1e6:,.0f} MB dialer reads; save the contacts sheet as .csv")
    return total


def _xlsx_rows(rows: Iterator[tuple[Any, ...]], path: Path, budget: int) -> Iterator[list[str]]:
    """Yield rows as text, trailing empty cells trimmed; blank rows are skipped. Stop at Excel's
    last row, and when the cells read pass the budget."""
    cells = 0
    for number, row in enumerate(rows, 1):
        if number > MAX_SHEET_ROWS:
            raise InputError(f"{path}: the sheet goes past row {MAX_SHEET_ROWS:,}, Excel's last; "
                             "open it in Excel and save it again as .xlsx")
        if len(row) > MAX_COLUMNS:
            raise _too_wide(path, f"{len(row):,}", f"row {number:,}")
        cells += len(row)
        if cells > budget:
            raise _too_sparse(path, budget)
        texts = ["" if value is None else _cell_text(value) for value in row]
        while texts and texts[-1] == "":
            texts.pop()
        if texts:
            yield texts


def _cell_text(value: Any) -> str:
    """The text a person sees for a cell, with numbers written out in full."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)

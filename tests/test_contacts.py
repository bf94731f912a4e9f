"""Loading contacts: every cell as text, exactly as written; the phone column found by name."""

from __future__ import annotations

import codecs

import pytest

from dialer.contacts import find_phone_column, load_contacts
from dialer.errors import ColumnError, InputError

ROWS = [["Name", "Phone", "Balance"], ["Ana", "(415) 555-2671", "1.0"], ["Ben", "", "nan"]]


def cells(contacts) -> list[list[str]]:
    return contacts.frame.values.tolist()


def test_every_cell_is_read_as_the_text_written(write_csv):
    contacts = load_contacts(write_csv(ROWS))
    assert contacts.header == ["Name", "Phone", "Balance"]
    assert cells(contacts) == [["Ana", "(415) 555-2671", "1.0"], ["Ben", "", "nan"]]


def test_empty_cells_stay_empty_strings(write_csv):
    contacts = load_contacts(write_csv([["Phone", "Note"], ["", ""], ["NA", "None"]]))
    assert cells(contacts) == [["", ""], ["NA", "None"]]


def test_utf8_bom_is_not_part_of_the_first_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(codecs.BOM_UTF8 + "Phone,Name\n4155552671,Zoë\n".encode())
    contacts = load_contacts(path)
    assert contacts.header == ["Phone", "Name"]
    assert cells(contacts) == [["4155552671", "Zoë"]]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_detected(write_csv, delimiter):
    rows = [["Name", "Phone", "City"], ["Ana", "415 555 2671", "Paris, TX"], ["Ben", "212 555 0100", "Rome"]]
    contacts = load_contacts(write_csv(rows, delimiter=delimiter))
    assert contacts.header == ["Name", "Phone", "City"]
    assert cells(contacts) == rows[1:]


def test_tsv_file(write_csv):
    contacts = load_contacts(write_csv([["Phone", "Name"], ["4155552671", "Ana"]], name="c.tsv", delimiter="\t"))
    assert cells(contacts) == [["4155552671", "Ana"]]


def test_quoted_cells_keep_commas_quotes_newlines_and_spaces(write_csv):
    rows = [["Phone", "Note"], ["4155552671", 'said "hi", then\r\nhung up'], ["2125550100", "  padded  "]]
    contacts = load_contacts(write_csv(rows))
    assert cells(contacts) == rows[1:]


def test_cp1252_file_is_read_with_a_warning(write_csv):
    contacts = load_contacts(write_csv([["Phone", "Name"], ["4155552671", "Renée – Café"]], encoding="cp1252"))
    assert cells(contacts) == [["4155552671", "Renée – Café"]]
    assert contacts.warnings == ["contacts.csv is not UTF-8; read it as Windows-1252 (cp1252)"]


def test_utf16_file_with_bom_is_read(write_csv):
    contacts = load_contacts(write_csv([["Phone", "Name"], ["4155552671", "Zoë"]], encoding="utf-16"))
    assert contacts.header == ["Phone", "Name"]
    assert cells(contacts) == [["4155552671", "Zoë"]]


def test_short_rows_read_missing_trailing_cells_as_empty(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("Phone,Name,City\n4155552671,Ana\n")
    assert cells(load_contacts(path)) == [["4155552671", "Ana", ""]]


def test_row_with_too_many_fields_names_the_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("Phone,Name\n4155552671,Ana\n2125550100,Smith, Ben\n")
    with pytest.raises(InputError) as error:
        load_contacts(path)
    assert str(error.value) == (f"{path}: line 3 has 3 fields but the header has 2 (delimiter ','); "
                                "quote cells that contain the delimiter or fix that line")


def test_blank_lines_are_not_rows(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("Phone,Name\n\n4155552671,Ana\n\n")
    assert cells(load_contacts(path)) == [["4155552671", "Ana"]]


def test_duplicate_and_empty_header_names_are_kept(write_csv):
    contacts = load_contacts(write_csv([["Phone", "Name", "Name", ""], ["4155552671", "Ana", "Bo", "x"]]))
    assert contacts.header == ["Phone", "Name", "Name", ""]
    assert cells(contacts) == [["4155552671", "Ana", "Bo", "x"]]


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty; it needs a header row and one row per contact"),
    ("\n\n", "the file is empty; it needs a header row and one row per contact"),
    ("Phone,Name\n", "the file has a header but no rows"),
])
def test_empty_files_are_refused(tmp_path, content, message):
    path = tmp_path / "c.csv"
    path.write_text(content)
    with pytest.raises(InputError) as error:
        load_contacts(path)
    assert str(error.value) == f"{path}: {message}"


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as error:
        load_contacts(tmp_path / "nope.csv")
    assert str(error.value) == f"{tmp_path / 'nope.csv'}: no such file; check the path to your contacts file"


def test_folder_instead_of_file(tmp_path):
    folder = tmp_path / "c.csv"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder"):
        load_contacts(folder)


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"PK\x03\x04\x00\x00garbage\x00\xff")
    with pytest.raises(InputError) as error:
        load_contacts(path)
    assert str(error.value) == (f"{path}: this is not a text file (it contains NUL bytes); "
                                "export the sheet as CSV or XLSX")


@pytest.mark.parametrize("name, message", [
    ("c.xls", "the old .xls format is not supported; save it as .xlsx or .csv"),
    ("c.json", "unsupported file type '.json'; use .csv, .tsv, .txt or .xlsx"),
])
def test_unsupported_types(tmp_path, name, message):
    path = tmp_path / name
    path.write_text("x")
    with pytest.raises(InputError) as error:
        load_contacts(path)
    assert str(error.value) == f"{path}: {message}"


# --- XLSX ------------------------------------------------------------------------------------


def test_xlsx_numbers_come_back_as_full_digits(write_xlsx):
    contacts = load_contacts(write_xlsx([
        ["Name", "Phone", "Score", "Since"],
        ["Ana", 919876543210, 12.5, None],
        ["Ben", 919876543211.0, 3.0, "2024-01-02"],
        ["Cy", "+1 415 555 2671", True, 0],
    ]))
    assert cells(contacts) == [
        ["Ana", "919876543210", "12.5", ""],
        ["Ben", "919876543211", "3", "2024-01-02"],
        ["Cy", "+1 415 555 2671", "TRUE", "0"],
    ]


def test_xlsx_dates_are_written_as_iso(write_xlsx):
    import datetime as dt

    contacts = load_contacts(write_xlsx([["Phone", "Born", "Seen"],
                                         ["4155552671", dt.datetime(1990, 5, 17), dt.datetime(2024, 1, 2, 9, 30)]]))
    assert cells(contacts) == [["4155552671", "1990-05-17", "2024-01-02 09:30:00"]]


def test_xlsx_named_sheet(write_xlsx):
    path = write_xlsx([["Other"], ["x"]], sheets={"Leads": [["Mobile"], [4155552671]]})
    contacts = load_contacts(path, sheet="Leads")
    assert contacts.phone_column == "Mobile"
    assert cells(contacts) == [["4155552671"]]


def test_xlsx_unknown_sheet_lists_the_sheets(write_xlsx):
    path = write_xlsx([["Phone"], ["x"]], sheets={"Leads": [["Phone"]]})
    with pytest.raises(InputError) as error:
        load_contacts(path, sheet="Sheet9")
    assert str(error.value) == f"{path}: no sheet named 'Sheet9'; the sheets are: 'Contacts', 'Leads'"


def test_xlsx_blank_rows_are_skipped_and_short_rows_padded(write_xlsx):
    contacts = load_contacts(write_xlsx([["Phone", "Name", "City"], [4155552671], [None, None], ["2125550100", "Bo"]]))
    assert cells(contacts) == [["4155552671", "", ""], ["2125550100", "Bo", ""]]


def test_corrupt_xlsx_is_refused(tmp_path):
    path = tmp_path / "c.xlsx"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(InputError) as error:
        load_contacts(path)
    assert str(error.value) == (f"{path}: not a readable .xlsx workbook (BadZipFile); "
                                "open it in Excel and save it again as .xlsx")


def test_xlsx_header_only_is_refused(write_xlsx):
    path = write_xlsx([["Phone", "Name"]])
    with pytest.raises(InputError, match="has a header but no rows"):
        load_contacts(path)


# --- the phone column ------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    "phone", "Phone Number", "phone_number", "MOBILE", "Mobile-Number", "cell", "MSISDN",
    "Contact Number", "customer_phone", "Tel", "telephone", "Number", " Phone ",
])
def test_phone_column_is_found_by_its_usual_names(header):
    assert find_phone_column(["Name", header, "City"]) == 1


def test_no_phone_column_lists_the_columns_and_the_flag():
    with pytest.raises(ColumnError) as error:
        find_phone_column(["Name", "Email"], source="c.csv")
    assert str(error.value) == ("c.csv: no phone column found among: 'Name', 'Email'; "
                                "pass --phone-column NAME to name it")


def test_several_phone_columns_are_ambiguous():
    with pytest.raises(ColumnError) as error:
        find_phone_column(["Phone", "Mobile", "Name"])
    assert str(error.value) == ("several columns could hold the phone number ('Phone', 'Mobile'); "
                                "pass --phone-column NAME to pick one")


def test_requested_column_exact_or_loose():
    assert find_phone_column(["Phone", "Work Phone"], "Work Phone") == 1
    assert find_phone_column(["Phone", "Work Phone"], "work_phone") == 1


def test_requested_column_missing():
    with pytest.raises(ColumnError) as error:
        find_phone_column(["Name", "Phone"], "Cell")
    assert str(error.value) == "no column named 'Cell'; the columns are: 'Name', 'Phone'"

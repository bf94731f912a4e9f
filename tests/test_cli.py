"""The command line: exact output, exact errors, exit codes, through the real entry point."""

from __future__ import annotations

import csv
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from dialer.cli import main

DIALER = Path(sys.executable).parent / "dialer"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def contacts(write_csv) -> Path:
    return write_csv([
        ["Name", "Phone"], ["Ana", "(415) 555-2671"], ["Ben", "n/a"], ["Cy", "415.555.2671"],
        ["Di", ""], ["Ed", "+44 20 7946 0958"], ["Fi", "call me"],
    ])


def test_dry_run_prints_a_summary_and_writes_the_report(capsys, contacts, tmp_path):
    out = tmp_path / "report.csv"
    code, stdout, stderr = run_cli(capsys, "run", str(contacts), "--region", "US", "--out", str(out), "--dry-run")
    assert (code, stderr) == (0, "")
    assert stdout == (
        "contacts.csv: 6 rows, phone column 'Phone', region US\n"
        "  ready                  2\n"
        "  invalid                3\n"
        "  duplicate              1\n"
        "top invalid reasons:\n"
        "          2  not a phone number\n"
        "          1  empty\n"
        "estimated time at 10 calls/s: 0 s\n"
        f"report: {out}\n"
    )
    with out.open(encoding="utf-8-sig", newline="") as handle:
        report = list(csv.reader(handle))
    assert [row[2:4] for row in report] == [
        ["phone_e164", "status"], ["+14155552671", "ready"], ["", "invalid"],
        ["+14155552671", "duplicate"], ["", "invalid"], ["+442079460958", "ready"], ["", "invalid"]]


def test_quiet_prints_nothing(capsys, contacts, tmp_path):
    assert run_cli(capsys, "run", str(contacts), "--out", str(tmp_path / "r.csv"), "--dry-run", "--quiet") == (0, "", "")


def test_default_dry_run_report_path_is_under_reports(capsys, contacts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_cli(capsys, "run", str(contacts), "--dry-run")
    assert code == 0
    assert stdout.endswith("report: reports/contacts-dry-run.csv\n")
    assert (tmp_path / "reports" / "contacts-dry-run.csv").exists()


def test_phone_column_and_region_flags(capsys, write_csv, tmp_path):
    path = write_csv([["Phone", "Home"], ["x", "020 7946 0958"]])
    out = tmp_path / "r.csv"
    code, _, _ = run_cli(capsys, "run", str(path), "--phone-column", "Home", "--region", "gb", "--out", str(out), "--dry-run")
    assert code == 0
    assert "+442079460958" in out.read_text(encoding="utf-8-sig")


def test_xlsx_sheet_flag(capsys, write_xlsx, tmp_path):
    path = write_xlsx([["Name"], ["x"]], sheets={"Leads": [["Mobile"], [14155552671]]})
    out = tmp_path / "r.csv"
    code, stdout, _ = run_cli(capsys, "run", str(path), "--sheet", "Leads", "--out", str(out), "--dry-run")
    assert code == 0
    assert "  ready                  1\n" in stdout


@pytest.mark.parametrize("argv, message", [
    (["--region", "XX"], "dialer: unknown region 'XX'; use a two-letter ISO country code such as US, GB or IN (region)\n"),
    (["--phone-column", "Cell"], "dialer: {path}: no column named 'Cell'; the columns are: 'Name', 'Phone'\n"),
    (["--out", "report.txt"], "dialer: the report report.txt must be a .csv file (out)\n"),
])
def test_user_mistakes_give_one_line_and_exit_2(capsys, contacts, argv, message):
    code, stdout, stderr = run_cli(capsys, "run", str(contacts), "--dry-run", *argv)
    assert (code, stdout, stderr) == (2, "", message.format(path=contacts))


def test_missing_phone_column_says_how_to_fix(capsys, write_csv):
    path = write_csv([["Name", "Email"], ["Ana", "a@example.com"]])
    code, _, stderr = run_cli(capsys, "run", str(path), "--dry-run")
    assert code == 2
    assert stderr == f"dialer: {path}: no phone column found among: 'Name', 'Email'; pass --phone-column NAME to name it\n"


def test_out_may_not_overwrite_the_contacts(capsys, contacts):
    code, _, stderr = run_cli(capsys, "run", str(contacts), "--out", str(contacts), "--dry-run")
    assert (code, stderr) == (2, f"dialer: out {contacts} would overwrite the contacts file; choose another path\n")


def test_cp1252_warning_goes_to_stderr(capsys, write_csv, tmp_path):
    path = write_csv([["Phone", "Name"], ["4155552671", "Café"]], encoding="cp1252")
    code, _, stderr = run_cli(capsys, "run", str(path), "--out", str(tmp_path / "r.csv"), "--dry-run")
    assert (code, stderr) == (0, "dialer: warning: contacts.csv is not UTF-8; read it as Windows-1252 (cp1252)\n")


def test_console_script_reports_a_missing_file_without_traceback(tmp_path):
    result = subprocess.run([str(DIALER), "run", str(tmp_path / "nope.csv"), "--dry-run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"dialer: {tmp_path / 'nope.csv'}: no such file; check the path to your contacts file\n"


def test_python_dash_m_runs_a_dry_run(contacts, tmp_path):
    out = tmp_path / "r.csv"
    result = subprocess.run([sys.executable, "-m", "dialer", "run", str(contacts), "--out", str(out), "--dry-run", "--quiet"],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert out.exists()


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "c.csv", "--bogus"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_sandbox_on_a_busy_port_is_a_clear_error(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["sandbox", "--port", str(port)])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"dialer: cannot listen on 127.0.0.1:{port} (")


def run_on_a_terminal(*argv: str) -> tuple[int, str]:
    """Run ``dialer`` with stderr on a pseudo-terminal; return its exit code and what it drew there."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # 160 columns wide
    process = subprocess.Popen([str(DIALER), *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=follower)
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the program ended and closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    return process.wait(timeout=60), drawn.decode(errors="replace")


def test_a_run_on_a_terminal_draws_a_progress_bar_that_ends_exact(write_csv, tmp_path):
    rows = [["Name", "Phone"]] + [[f"P{n}", f"(415) 555-{n:04d}"] for n in range(30)] + [["Zed", "n/a"]]
    code, drawn = run_on_a_terminal("run", str(write_csv(rows)), "--provider", "formant", "--base-url", "sandbox",
                                    "--agent-id", "1", "--rate", "100", "--out", str(tmp_path / "r.csv"))
    assert code == 0
    last = drawn.replace("\r\n", "\r").split("\r")[-2]  # the bar as it was left
    assert " 30/30 " in last and "initiated=30" in last and "retries=0" in last


def test_no_progress_bar_when_quiet_or_not_on_a_terminal(write_csv, tmp_path):
    contacts = write_csv([["Name", "Phone"], ["Ana", "(415) 555-2671"]])
    argv = ["run", str(contacts), "--provider", "formant", "--base-url", "sandbox", "--agent-id", "1",
            "--out", str(tmp_path / "r.csv")]
    code, drawn = run_on_a_terminal(*argv, "--quiet")
    assert (code, drawn) == (0, "")
    piped = subprocess.run([str(DIALER), *argv, "--restart"], capture_output=True, text=True, timeout=60)
    assert (piped.returncode, piped.stderr) == (0, "")

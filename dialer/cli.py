"""The ``dialer`` command: argument parsing and messages only; the work is in the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dialer.campaign import Campaign
from dialer.errors import DialerError
from dialer.plan import Status
from dialer.runner import RunResult, run_campaign

__all__ = ["main"]

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dialer", description=(
        "Call every contact in a spreadsheet once, through a voice AI agent API, "
        "at a safe pace, and report what happened to every row."))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="check a contacts file and call every valid number",
                              description="Check a contacts file and call every valid number.")
    run.add_argument("contacts", metavar="CONTACTS", type=Path,
                     help="a .csv, .tsv, .txt or .xlsx file with a header row")
    run.add_argument("--region", default="US", metavar="CC",
                     help="ISO country for numbers written without a country code (default: US)")
    run.add_argument("--out", type=Path, metavar="REPORT.csv",
                     help="where to write the report (default: reports/<contacts>-report.csv)")
    run.add_argument("--phone-column", metavar="NAME", help="the column that holds the numbers")
    run.add_argument("--sheet", metavar="NAME", help="the sheet of an .xlsx file (default: the first)")
    run.add_argument("--dry-run", action="store_true", help="check and report without calling anyone")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dialer`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        campaign = Campaign(contacts=args.contacts, out=args.out, region=args.region,
                            phone_column=args.phone_column, sheet=args.sheet, dry_run=args.dry_run)
        result = run_campaign(campaign)
    except DialerError as error:
        print(f"dialer: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("dialer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    for warning in result.contacts.warnings:
        print(f"dialer: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        print(_summary(result, campaign))
    return EXIT_OK


def _summary(result: RunResult, campaign: Campaign) -> str:
    counts = result.plan.counts()
    lines = [f"{campaign.contacts.name}: {len(result.plan):,} rows, phone column "
             f"{result.contacts.phone_column!r}, region {campaign.region}"]
    for status in (Status.READY, Status.INVALID, Status.DUPLICATE):
        lines.append(f"  {status:<10} {counts.get(status, 0):>9,}")
    reasons = result.plan.top_reasons()
    if reasons:
        lines.append("top invalid reasons:")
        lines.extend(f"  {count:>9,}  {reason}" for reason, count in reasons)
    lines.append(f"report: {result.report}")
    return "\n".join(lines)

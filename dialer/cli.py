"""The ``dialer`` command: argument parsing and messages only; the work is in the library."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow

from dialer.campaign import Campaign
from dialer.dispatch import DispatchResult
from dialer.errors import DialerError
from dialer.plan import Status
from dialer.providers import PROVIDERS
from dialer.runner import API_KEY_VARIABLE, RunResult, run_campaign, validate_campaign
from dialer.sandbox import SandboxConfig, serve

__all__ = ["main"]

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130  # 1: FatalProviderError.exit_code
STATUS_ORDER = (Status.READY, Status.INITIATED, Status.SCHEDULED, Status.FAILED, Status.UNKNOWN,
                Status.NOT_ATTEMPTED, Status.INVALID, Status.DUPLICATE, Status.DNC, Status.EXCLUDED,
                Status.OUTSIDE_WINDOW)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dialer", description=(
        "Call every contact in a spreadsheet once, through a voice AI agent API, "
        "at a safe pace, and report what happened to every row."))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="call every valid number of a contacts file or campaign",
                              description="Call every valid number of a contacts file or campaign file. "
                                          f"The API key is read from ${API_KEY_VARIABLE}.")
    run.add_argument("target", metavar="CONTACTS|CAMPAIGN.toml", type=Path,
                     help="a .csv, .tsv, .txt or .xlsx file with a header row, or a campaign .toml file")
    run.add_argument("--region", metavar="CC", help="ISO country for numbers without a country code (default: US)")
    run.add_argument("--out", type=Path, metavar="REPORT.csv",
                     help="where to write the report (default: reports/<contacts>-report.csv, or -dry-run.csv)")
    run.add_argument("--phone-column", metavar="NAME", help="the column that holds the numbers")
    run.add_argument("--sheet", metavar="NAME", help="the sheet of an .xlsx file (default: the first)")
    run.add_argument("--provider", choices=sorted(PROVIDERS), help="the call API to use")
    run.add_argument("--base-url", metavar="URL", help="the provider's address (default: its public host); "
                                                       "'sandbox' runs against the embedded sandbox")
    run.add_argument("--agent-id", type=int, metavar="N", help="the agent that places the calls")
    run.add_argument("--rate", type=float, metavar="R", help="at most R requests in any second (default: 10)")
    run.add_argument("--concurrency", type=int, metavar="C", help="at most C requests in flight (default: 10)")
    run.add_argument("--max-attempts", type=int, metavar="N",
                     help="requests per row at most, retries included (default: 5)")
    run.add_argument("--restart", action="store_true", default=None,
                     help="forget the journal of an earlier run with this --out and start afresh")
    run.add_argument("--resend-unknown", action="store_true", default=None,
                     help="send again the rows an earlier run left 'unknown' (they may be called twice)")
    run.add_argument("--dnc", action="append", type=Path, metavar="FILE",
                     help="a do-not-call list (repeatable; adds to the campaign's lists)")
    run.add_argument("--dry-run", action="store_true", default=None, help="check and report without calling anyone")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")

    validate = commands.add_parser("validate", help="check a campaign without calling or writing anything",
                                   description="Check a campaign file (or contacts file) and print what a run "
                                               "would do now, and how long it would take.")
    validate.add_argument("target", metavar="CAMPAIGN.toml|CONTACTS", type=Path)

    sandbox = commands.add_parser("sandbox", help="run the embedded fake provider in the foreground",
                                  description="Serve both provider APIs on 127.0.0.1 with injected faults.")
    sandbox.add_argument("--port", type=int, default=8787)
    sandbox.add_argument("--token", default=SandboxConfig.token, help="the API key it accepts")
    sandbox.add_argument("--rate", type=float, help="account-wide limit, requests per second")
    sandbox.add_argument("--per-number", type=float, metavar="S", help="seconds between calls to one number")
    for fault, text in (("fail", "answer 503, create nothing"), ("reset", "drop the connection, create nothing"),
                        ("lost", "create the call, then drop the connection")):
        sandbox.add_argument(f"--{fault}", type=float, default=0.0, metavar="P", help=f"probability to {text}")
    sandbox.add_argument("--delay", type=float, default=0.0, metavar="S", help="seconds before each answer")
    sandbox.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dialer`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    # Arrow's default allocator keeps what it freed: with the system one, memory follows the data.
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    try:
        if args.command == "sandbox":
            return _sandbox(args)
        if args.command == "validate":
            return _validate(args)
        return _run(args)
    except DialerError as error:
        print(f"dialer: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("dialer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _campaign(target: Path, **flags: Any) -> Campaign:
    if target.suffix.lower() == ".toml":
        return Campaign.from_toml(target, **flags)
    dnc = tuple(flags.pop("dnc", None) or ())
    return Campaign(contacts=target, dnc=dnc, **{k: v for k, v in flags.items() if v is not None})


def _run(args: argparse.Namespace) -> int:
    campaign = _campaign(args.target, **{key: getattr(args, key) for key in (
        "region", "out", "phone_column", "sheet", "provider", "base_url", "agent_id", "rate",
        "concurrency", "max_attempts", "restart", "resend_unknown", "dry_run", "dnc")})
    progress = _Progress(disabled=args.quiet)
    try:
        result = run_campaign(campaign, api_key=os.environ.get(API_KEY_VARIABLE), on_progress=progress.update)
    finally:
        progress.close()
    for warning in result.contacts.warnings:
        print(f"dialer: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        print(_summary(result, campaign))
    if result.interrupted:
        print("dialer: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    campaign = _campaign(args.target)
    result = validate_campaign(campaign)
    for warning in result.contacts.warnings:
        print(f"dialer: warning: {warning}", file=sys.stderr)
    print(_summary(result, campaign))
    return EXIT_OK


def _sandbox(args: argparse.Namespace) -> int:
    try:
        config = SandboxConfig(token=args.token, rate=args.rate, per_number=args.per_number, fail=args.fail,
                               reset=args.reset, lost=args.lost, delay=args.delay, seed=args.seed)
    except ValueError as error:
        print(f"dialer: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        serve(config, port=args.port)
    except OSError as error:
        print(f"dialer: cannot listen on 127.0.0.1:{args.port} ({error.strerror or error}); "
              "choose another --port", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


class _Progress:
    """A tqdm bar on stderr, shown only on a terminal, created at the first report of progress;
    it is redrawn at most ten times a second, and once more, exact, when the run ends."""

    def __init__(self, *, disabled: bool) -> None:
        self._shown = not disabled and sys.stderr.isatty()
        self._bar: Any = None
        self._latest: tuple[DispatchResult, int] | None = None
        self._due = 0.0

    def update(self, result: DispatchResult, total: int) -> None:
        if not self._shown:
            return
        self._latest = (result, total)
        now = time.monotonic()
        if now >= self._due or result.waiting_until is not None:
            self._due = now + 0.1
            self._draw(result, total)

    def close(self) -> None:
        if self._latest is not None:
            self._draw(*self._latest)
        if self._bar is not None:
            self._bar.close()

    def _draw(self, result: DispatchResult, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="call", file=sys.stderr, dynamic_ncols=True)
        postfix = dict(result.statuses, retries=result.retries)
        if result.waiting_until is not None:
            postfix["waiting until"] = time.strftime("%Y-%m-%d %H:%M", time.localtime(result.waiting_until))
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(sum(result.statuses.values()) - self._bar.n)


def _summary(result: RunResult, campaign: Campaign) -> str:
    rows = sum(result.statuses.values())
    lines = [f"{campaign.contacts.name}: {rows:,} rows, phone column {result.contacts.phone_column!r}, "
             f"region {campaign.region}"]
    dry = result.dispatch is None
    shown = [status for status in STATUS_ORDER if status in result.statuses or
             (dry and status in (Status.READY, Status.INVALID, Status.DUPLICATE))]
    shown += sorted(set(result.statuses) - set(shown))
    lines += [f"  {status:<14} {result.statuses.get(status, 0):>9,}" for status in shown]
    if result.top_reasons:
        lines.append("top invalid reasons:")
        lines.extend(f"  {count:>9,}  {reason}" for reason, count in result.top_reasons)
    if result.dispatch is not None:
        done = result.dispatch
        rate = done.sent / done.elapsed if done.elapsed else 0.0
        lines.append(f"requests: {done.sent:,} sent, {done.retries:,} retries, {done.elapsed:.1f} s, {rate:.1f}/s")
    if result.estimated_seconds is not None:
        lines.append(f"estimated time at {campaign.rate:g} calls/s: {_duration(result.estimated_seconds)}")
    if result.report is not None:
        lines.append(f"report: {result.report}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return " ".join(f"{value} {unit}" for value, unit in ((hours, "h"), (minutes, "min"), (seconds, "s"))
                    if value or unit == "s" and not (hours or minutes))

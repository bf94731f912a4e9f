"""The Campaign: everything one run needs to know, checked once, as a small value object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dialer.errors import UsageError
from dialer.phones import check_region

__all__ = ["Campaign", "default_report_path"]


def default_report_path(contacts: Path) -> Path:
    """``reports/<contacts name>-report.csv``, beside the current folder."""
    return Path("reports") / f"{contacts.stem}-report.csv"


@dataclass(frozen=True)
class Campaign:
    """What to call and how. ``out`` defaults to ``reports/<contacts>-report.csv``."""

    contacts: Path
    out: Path = field(default=None)  # type: ignore[assignment]
    region: str = "US"
    phone_column: str | None = None
    sheet: str | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        contacts = Path(self.contacts)
        out = Path(self.out) if self.out is not None else default_report_path(contacts)
        try:
            region = check_region(self.region)
        except ValueError as error:
            raise UsageError(f"{error} (--region)") from None
        if out.suffix.lower() != ".csv":
            raise UsageError(f"the report {out} must be a .csv file (--out)")
        if out.resolve() == contacts.resolve():
            raise UsageError(f"--out {out} would overwrite the contacts file; choose another path")
        object.__setattr__(self, "contacts", contacts)
        object.__setattr__(self, "out", out)
        object.__setattr__(self, "region", region)

"""The Campaign: everything one run needs to know, checked once, as a small value object.

A campaign comes from command-line flags, from a TOML file, or both (a flag overrides the file).
Paths in a file are relative to the file. ``base_url = "sandbox"`` runs the calls against the
embedded sandbox, started for the run on a free local port.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialer.errors import UsageError
from dialer.phones import check_region
from dialer.providers import PROVIDERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Campaign", "SANDBOX"]

SANDBOX = "sandbox"


@dataclass(frozen=True)
class Campaign:
    """What to call, how, and where to report. Build with ``Campaign(...)`` or ``Campaign.from_toml``."""

    contacts: Path
    out: Path | None = None
    name: str | None = None
    region: str = "US"
    phone_column: str | None = None
    sheet: str | None = None
    provider: str | None = None
    base_url: str | None = None
    agent_id: int | None = None
    rate: float = 10.0
    concurrency: int = 10
    max_attempts: int = 5
    dry_run: bool = False
    restart: bool = False
    resend_unknown: bool = False
    sandbox: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        contacts = Path(self.contacts)
        out = Path(self.out) if self.out is not None else Path("reports") / f"{contacts.stem}-report.csv"
        try:
            region = check_region(self.region)
        except ValueError as error:
            raise UsageError(f"{error} (region)") from None
        if out.suffix.lower() != ".csv":
            raise UsageError(f"the report {out} must be a .csv file (out)")
        if out.resolve() == contacts.resolve():
            raise UsageError(f"out {out} would overwrite the contacts file; choose another path")
        if self.provider is not None and self.provider not in PROVIDERS:
            raise UsageError(f"unknown provider {self.provider!r}; use one of: {', '.join(PROVIDERS)}")
        if not self.rate > 0:
            raise UsageError(f"rate must be a positive number of calls per second, not {self.rate}")
        if self.concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, not {self.max_attempts}")
        object.__setattr__(self, "contacts", contacts)
        object.__setattr__(self, "out", out)
        object.__setattr__(self, "region", region)

    @property
    def uses_sandbox(self) -> bool:
        return self.base_url == SANDBOX

    @property
    def campaign_id(self) -> str:
        """What makes idempotency keys differ between campaigns: the name, else the report path."""
        return self.name or str(Path(self.out).resolve())

    def check_can_call(self) -> None:
        """Raise ``UsageError`` unless the provider settings needed to place calls are present."""
        if self.provider is None:
            raise UsageError(f"choose a provider with --provider ({'|'.join(PROVIDERS)}), or add --dry-run")
        if self.agent_id is None:
            raise UsageError("give the agent that places the calls with --agent-id N")
        if self.base_url is None and PROVIDERS[self.provider].default_base_url is None:
            raise UsageError(f"the {self.provider} provider has no public default host; pass --base-url URL")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run that made the journal."""
        return {"region": self.region, "phone_column": self.phone_column, "sheet": self.sheet,
                "provider": self.provider, "agent_id": self.agent_id, "campaign_id": self.campaign_id}

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> Campaign:
        """Read a campaign file; ``overrides`` (flags given on the command line) win over it."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{path}: no such campaign file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"{path}: cannot read the campaign file ({error})") from None
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"{path}: not valid TOML ({error})") from None
        values = {key: _checked(path, key, value) for key, value in data.items()}
        for key in ("contacts", "out"):
            if key in values:
                values[key] = Path(os.path.normpath(path.parent / values[key]))
        values.update({key: value for key, value in overrides.items() if value is not None})
        if "contacts" not in values:
            raise UsageError(f"{path}: the campaign needs contacts = \"FILE.csv\"")
        return cls(**values)


_FILE_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str, "contacts": str, "out": str, "region": str, "phone_column": str, "sheet": str,
    "provider": str, "base_url": str, "agent_id": int, "rate": (int, float), "concurrency": int,
    "max_attempts": int, "sandbox": dict,
}


def _checked(path: Path, key: str, value: Any) -> Any:
    if key not in _FILE_KEYS:
        close = difflib.get_close_matches(key, _FILE_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(_FILE_KEYS)}"
        raise UsageError(f"{path}: unknown key {key!r}{hint}")
    expected = _FILE_KEYS[key]
    if isinstance(value, bool) or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise UsageError(f"{path}: {key} = {value!r} should be {_ARTICLES.get(names, 'a ' + names)}")
    return value


_ARTICLES = {"int": "an integer", "int or float": "a number", "str": "a string", "dict": "a table"}

"""The Campaign: everything one run needs to know, checked once, as a small value object.

A campaign comes from command-line flags, from a TOML file, or both (a flag overrides the file).
Paths in a file are relative to the file. ``base_url = "sandbox"`` runs the calls against the
embedded sandbox, started for the run on a free local port.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dialer.errors import UsageError
from dialer.parameters import ParameterMap
from dialer.phones import check_region
from dialer.providers import PROVIDERS
from dialer.sandbox import SandboxConfig
from dialer.windows import CallingWindow, WindowPolicy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Campaign", "SANDBOX", "OUTSIDE_WINDOW_ACTIONS"]

SANDBOX = "sandbox"
OUTSIDE_WINDOW_ACTIONS = ("skip", "wait", "schedule")


@dataclass(frozen=True)
class Campaign:
    """What to call, how, and where to report. Build with ``Campaign(...)`` or ``Campaign.from_toml``.

    ``out`` defaults to ``reports/<contacts>-report.csv``, or ``reports/<contacts>-dry-run.csv``
    for a dry run, so that checking a file never touches the report of a real run."""

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
    parameters: ParameterMap = field(default_factory=ParameterMap)
    window: CallingWindow | None = None
    on_outside_window: str = "skip"
    dnc: tuple[Path, ...] = ()
    exclude_report: Path | None = None

    def __post_init__(self) -> None:
        contacts = Path(self.contacts)
        kind = "dry-run" if self.dry_run else "report"
        out = Path(self.out) if self.out is not None else Path("reports") / f"{contacts.stem}-{kind}.csv"
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
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise UsageError(f"rate must be a positive number of calls per second, not {self.rate}")
        if self.concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.on_outside_window not in OUTSIDE_WINDOW_ACTIONS:
            raise UsageError(f"on_outside_window = {self.on_outside_window!r} should be one of: "
                             f"{', '.join(OUTSIDE_WINDOW_ACTIONS)}")
        object.__setattr__(self, "dnc", tuple(Path(p) for p in self.dnc))
        try:
            SandboxConfig(**self.sandbox)
        except (TypeError, ValueError) as error:
            raise UsageError(f"bad [sandbox] settings: {error}") from None
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

    def window_policy(self) -> WindowPolicy | None:
        """How calls are timed against the calling window, if the campaign has one."""
        return WindowPolicy(self.window, self.on_outside_window) if self.window is not None else None

    def check_can_call(self) -> None:
        """Raise ``UsageError`` unless the provider settings needed to place calls are present."""
        if self.provider is None:
            raise UsageError(f"choose a provider with --provider ({'|'.join(PROVIDERS)}), or add --dry-run")
        if self.agent_id is None:
            raise UsageError("give the agent that places the calls with --agent-id N")
        if self.base_url is None and PROVIDERS[self.provider].default_base_url is None:
            raise UsageError(f"the {self.provider} provider has no public default host; pass --base-url URL")
        if self.provider != "formant":
            if self.window is not None and self.on_outside_window == "schedule":
                raise UsageError(f"on_outside_window = \"schedule\" needs the formant provider; "
                                 f"the {self.provider} provider cannot schedule calls")
            for key in ("conversation_id_column", "retry_context"):
                if getattr(self.parameters, key):
                    raise UsageError(f"parameters.{key} is a Formant field; the {self.provider} provider has none")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run that made the journal."""
        return {"region": self.region, "phone_column": self.phone_column, "sheet": self.sheet,
                "provider": self.provider, "agent_id": self.agent_id, "campaign_id": self.campaign_id,
                "sandbox": self.uses_sandbox}

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
        values = _read_table(path, data, _FILE_KEYS, "")
        for key in ("contacts", "out", "exclude_report"):
            if key in values:
                values[key] = _relative(path, values[key])
        values["dnc"] = [_relative(path, name) for name in values.get("dnc", [])]
        if "sandbox" in values:
            values["sandbox"] = _read_table(path, values["sandbox"], _SANDBOX_KEYS, "sandbox.")
        if "parameters" in values:
            values["parameters"] = ParameterMap(**_read_table(path, values["parameters"], _PARAMETER_KEYS, "parameters."))
        if "window" in values:
            window = _read_table(path, values["window"], _WINDOW_KEYS, "window.")
            if "on_outside_window" in window:
                values["on_outside_window"] = window.pop("on_outside_window")
            if "hours" not in window:
                raise UsageError(f"{path}: [window] needs hours = \"09:00-20:00\"")
            try:
                values["window"] = CallingWindow.parse(**window)
            except ValueError as error:
                raise UsageError(f"{path}: window.{error}") from None
        dnc = overrides.pop("dnc", None) or []
        values.update({key: value for key, value in overrides.items() if value is not None})
        values["dnc"] = tuple(values["dnc"]) + tuple(dnc)
        if "contacts" not in values:
            raise UsageError(f"{path}: the campaign needs contacts = \"FILE.csv\"")
        return cls(**values)


def _relative(path: Path, name: str) -> Path:
    return Path(os.path.normpath(path.parent / name))


_Schema = Mapping[str, "type | tuple[type, ...]"]
_FILE_KEYS: _Schema = {
    "name": str, "contacts": str, "out": str, "region": str, "phone_column": str, "sheet": str,
    "provider": str, "base_url": str, "agent_id": int, "rate": (int, float), "concurrency": int,
    "max_attempts": int, "dnc": list, "exclude_report": str, "sandbox": dict, "parameters": dict,
    "window": dict,
}
_PARAMETER_KEYS: _Schema = {
    "columns": dict, "constants": dict, "include_other_columns": bool, "conversation_id_column": str,
    "retry_context": dict, "metadata": dict,
}
_SANDBOX_KEYS: _Schema = {
    "rate": (int, float), "per_number": (int, float), "fail": (int, float), "reset": (int, float),
    "lost": (int, float), "delay": (int, float), "seed": int,
}
_WINDOW_KEYS: _Schema = {
    "hours": str, "days": list, "timezone_column": str, "fallback_timezone": str, "on_outside_window": str,
}
_ARTICLES = {"int": "an integer", "int or float": "a number", "str": "a string", "dict": "a table",
             "list": "a list", "bool": "true or false"}


def _read_table(path: Path, table: Mapping[str, Any], schema: _Schema, prefix: str) -> dict[str, Any]:
    """Check a TOML table's keys and value types against ``schema``."""
    for key, value in table.items():
        if key not in schema:
            close = difflib.get_close_matches(key, schema, n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else f"; valid keys: {', '.join(schema)}"
            raise UsageError(f"{path}: unknown key {prefix + key!r}{hint}")
        expected = schema[key]
        kinds = expected if isinstance(expected, tuple) else (expected,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(kind.__name__ for kind in kinds)
            raise UsageError(f"{path}: {prefix}{key} = {value!r} should be {_ARTICLES.get(names, names)}")
        if list in kinds and not all(isinstance(item, str) for item in value):
            raise UsageError(f"{path}: {prefix}{key} = {value!r} should be a list of strings")
    return dict(table)

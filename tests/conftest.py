"""Shared helpers: write real contact files the way spreadsheets and editors do."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable

import pytest


def csv_text(rows: list[list[str]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    """Write rows as CSV: ``write_csv(rows, name="c.csv", delimiter=",", encoding="utf-8")``."""

    def write(rows: list[list[str]], name: str = "contacts.csv", delimiter: str = ",",
              encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.write_bytes(csv_text(rows, delimiter).encode(encoding))
        return path

    return write


@pytest.fixture
def write_xlsx(tmp_path: Path) -> Callable[..., Path]:
    """Write rows to an .xlsx with openpyxl; cells keep their Python types (int, float, str)."""
    import openpyxl

    def write(rows: list[list[Any]], name: str = "contacts.xlsx", sheets: dict[str, list[list[Any]]] | None = None) -> Path:
        book = openpyxl.Workbook()
        book.active.title = "Contacts"
        for row in rows:
            book.active.append(row)
        for title, sheet_rows in (sheets or {}).items():
            sheet = book.create_sheet(title)
            for row in sheet_rows:
                sheet.append(row)
        path = tmp_path / name
        book.save(path)
        return path

    return write


class ServedApp:
    """An aiohttp handler served on 127.0.0.1 from a thread, for synchronous tests; ``url`` is set
    inside ``with``. ``release`` wakes handlers that wait on it, so the server can stop."""

    def __init__(self, handler) -> None:
        import threading

        self.handler, self.url = handler, ""
        self._ready, self._thread = threading.Event(), threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ServedApp":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        import asyncio

        asyncio.run(self._main())

    async def _main(self) -> None:
        import asyncio

        from aiohttp import web

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

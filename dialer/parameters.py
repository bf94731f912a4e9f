"""What each call carries besides the number: columns, constants, and the API's extra fields.

``ParameterMap`` is the ``[parameters]`` table of a campaign file; ``bind`` checks it against a
file's header once, and the bound map turns a row's cells into the call's fields:

    columns = {"Customer Name" = "name"}   these columns, under these names
    include_other_columns = true            every other non-empty column too, snake_cased
    constants = {campaign = "spring"}       the same value on every call
    conversation_id_column = "Thread"       Formant's conversation_id, from a column
    retry_context = {...}                   Formant's retry_context; strings may use {Column Name}
    metadata = {...}                        Formant: sent as a JSON string; Agents API: merged into
                                            the metadata object; strings may use {Column Name}

Empty cells are never sent.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dialer.errors import ColumnError

__all__ = ["ParameterMap", "BoundParameters", "snake_case"]

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class ParameterMap:
    columns: Mapping[str, str] = field(default_factory=dict)
    constants: Mapping[str, str] = field(default_factory=dict)
    include_other_columns: bool = True
    conversation_id_column: str | None = None
    retry_context: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None

    def columns_used(self) -> list[tuple[str, str]]:
        """Every column this map names, with where it names it."""
        used = [(column, "parameters.columns") for column in self.columns]
        if self.conversation_id_column:
            used.append((self.conversation_id_column, "parameters.conversation_id_column"))
        for where, table in (("parameters.retry_context", self.retry_context), ("parameters.metadata", self.metadata)):
            used += [(name, where) for name in _placeholders(table)]
        return used

    def bind(self, header: Sequence[str], phone_index: int) -> BoundParameters:
        """Check every named column exists in ``header``; raise ``ColumnError`` if not."""
        for column, where in self.columns_used():
            if column not in header:
                close = difflib.get_close_matches(column, header, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ColumnError(f"{where} names the column {column!r}, which the contacts file does not have{hint}")
        named = {header.index(column): name for column, name in self.columns.items()}
        used = {"customer_phone", *named.values(), *self.constants}
        fields: list[tuple[int, str]] = []
        for index, column in enumerate(header):
            if index in named:
                fields.append((index, named[index]))
            elif self.include_other_columns and index != phone_index and column != self.conversation_id_column:
                name = base = snake_case(column)
                for suffix in itertools.count(2):
                    if name not in used:
                        break
                    name = f"{base}_{suffix}"
                used.add(name)
                fields.append((index, name))
        conversation = header.index(self.conversation_id_column) if self.conversation_id_column else None
        placeholders = {name: header.index(name) for name in _placeholders(self.retry_context) + _placeholders(self.metadata)}
        return BoundParameters(self, fields, conversation, placeholders)


@dataclass(frozen=True)
class BoundParameters:
    """A ``ParameterMap`` checked against one file's header."""

    source: ParameterMap
    fields: list[tuple[int, str]]
    conversation_index: int | None
    placeholders: dict[str, int]
    """The columns ``{Column Name}`` placeholders name, and their positions."""

    @property
    def columns(self) -> set[int]:
        """The positions of the cells calls are built from; ``cells`` below need only these."""
        used = {index for index, _ in self.fields} | set(self.placeholders.values())
        if self.conversation_index is not None:
            used.add(self.conversation_index)
        return used

    def values(self, cells: Mapping[int, str]) -> tuple[tuple[str, str], ...]:
        """The row's named, non-empty values, then the constants."""
        own = [(name, cells[index]) for index, name in self.fields if cells[index]]
        return tuple(own + [(name, str(value)) for name, value in self.source.constants.items()])

    def conversation_id(self, cells: Mapping[int, str]) -> str | None:
        return (cells[self.conversation_index] or None) if self.conversation_index is not None else None

    def retry_context(self, cells: Mapping[int, str]) -> dict[str, Any] | None:
        return self._fill(self.source.retry_context, cells)

    def metadata(self, cells: Mapping[int, str]) -> dict[str, Any] | None:
        return self._fill(self.source.metadata, cells)

    def _fill(self, table: Mapping[str, Any] | None, cells: Mapping[int, str]) -> dict[str, Any] | None:
        if table is None:
            return None
        return _fill(table, {name: cells[index] for name, index in self.placeholders.items()})


def snake_case(name: str) -> str:
    """``Customer Name`` -> ``customer_name``; ``E-mail (work)`` -> ``e_mail_work``."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_") or "column"


def _fill(value: Any, lookup: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda match: lookup[match.group(1)], value)
    if isinstance(value, Mapping):
        return {key: _fill(item, lookup) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, lookup) for item in value]
    return value


def _placeholders(value: Any) -> list[str]:
    if isinstance(value, str):
        return _PLACEHOLDER.findall(value)
    if isinstance(value, Mapping):
        return [name for item in value.values() for name in _placeholders(item)]
    if isinstance(value, list):
        return [name for item in value for name in _placeholders(item)]
    return []

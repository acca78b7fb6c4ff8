"""The bus's side files (``quarantine.jsonl``, ``bus/MSGIDS``) read back: JSONL records, tolerantly.

Rule: a line that is not a record (a write torn by a crash, a foreign line) is skipped,
never fatal; the complete records around it are all returned, in file order.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

__all__ = ["decode_records"]

T = TypeVar("T")


def decode_records(decoder: msgspec.json.Decoder[T], data: bytes) -> list[T]:
    """The records of ``data``'s lines: one ``decode_lines`` if all are valid, else one by one."""
    try:
        return decoder.decode_lines(data)
    except msgspec.MsgspecError:
        pass
    records: list[T] = []
    for line in data.split(b"\n"):
        try:
            records.append(decoder.decode(line))
        except msgspec.MsgspecError:
            continue
    return records

"""A minimal, bounded reader for the protobuf wire format: the fields of a message read
lazily from a buffer, without generated classes, schemas or recursion of its own.

Every message read from one root shares a `Budget`, so a hostile file cannot make a
parser do more than a fixed number of field reads or nest deeper than a fixed depth.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "FIXED32",
    "FIXED64",
    "LEN",
    "VARINT",
    "Budget",
    "Field",
    "Message",
    "WireError",
    "read_varint",
]

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5

_MAX_FIELD_NUMBER = (1 << 29) - 1
_U64 = (1 << 64) - 1
_WIRE_NAMES = {
    3: "start-group",
    4: "end-group",
    6: "reserved wire type 6",
    7: "reserved wire type 7",
}


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message, or reading them would exceed the
    budget. `offset` is where in the root buffer the problem was found."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at byte {offset}")
        self.reason = reason
        self.offset = offset


class Budget:
    """Work allowed for one root message and everything read from it."""

    __slots__ = ("fields_left", "max_depth", "max_fields")

    def __init__(self, max_fields: int = 20_000_000, max_depth: int = 100) -> None:
        self.max_fields = max_fields
        self.fields_left = max_fields
        self.max_depth = max_depth


def read_varint(buffer: memoryview | bytes, pos: int, end: int) -> tuple[int, int]:
    """The unsigned varint at `pos` and the position after it; at most 10 bytes, never
    past `end`."""
    if pos < end:
        byte = buffer[pos]
        if byte < 0x80:
            return byte, pos + 1
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError("truncated varint", start)
        byte = buffer[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes", start)


class Field(NamedTuple):
    """One field of a message. `value` is the number for varint and fixed fields and the
    payload length for length-delimited ones, whose payload is `[start, end)` of the root
    buffer; `offset` is where the field's tag starts."""

    number: int
    wire_type: int
    offset: int
    value: int
    start: int
    end: int
    parent: Message

    def payload(self) -> memoryview:
        """The length-delimited payload, as a view (no copy)."""
        return self.parent.buffer[self.start : self.end]

    def text(self, limit: int = 4096) -> str:
        """The payload as UTF-8 text (invalid bytes replaced), at most `limit` bytes of it."""
        stop = min(self.end, self.start + limit)
        return bytes(self.parent.buffer[self.start : stop]).decode("utf-8", "replace")

    def raw(self, limit: int) -> bytes:
        """At most `limit` bytes of the payload, copied."""
        return bytes(self.parent.buffer[self.start : min(self.end, self.start + limit)])

    def message(self) -> Message:
        """The payload read as a nested message, one level deeper."""
        if self.wire_type != LEN:
            raise WireError(f"field {self.number} is not a message", self.offset)
        parent = self.parent
        depth = parent.depth + 1
        if depth > parent.budget.max_depth:
            raise WireError(f"messages nested deeper than {parent.budget.max_depth}", self.start)
        return Message(parent.buffer, self.start, self.end, parent.budget, depth)


class Message:
    """A message occupying `[start, end)` of `buffer`; iterate it for its fields.

    A length-delimited field that claims more bytes than remain is handed out cut at the
    end of the message, and the iteration then raises `WireError`: what was readable
    before a break is never lost.
    """

    __slots__ = ("budget", "buffer", "depth", "end", "start")

    def __init__(
        self,
        buffer: memoryview | bytes,
        start: int = 0,
        end: int | None = None,
        budget: Budget | None = None,
        depth: int = 0,
    ) -> None:
        view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self.buffer = view
        self.start = start
        self.end = len(view) if end is None else end
        self.budget = budget if budget is not None else Budget()
        self.depth = depth

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[Field]:
        buffer = self.buffer
        budget = self.budget
        pos = self.start
        end = self.end
        while pos < end:
            if budget.fields_left <= 0:
                raise WireError(f"more than {budget.max_fields} fields", pos)
            budget.fields_left -= 1
            offset = pos
            byte = buffer[pos]
            if byte < 0x80:
                tag = byte
                pos += 1
            else:
                tag, pos = read_varint(buffer, pos, end)
            number = tag >> 3
            wire = tag & 7
            if number == 0 or number > _MAX_FIELD_NUMBER:
                raise WireError(f"invalid field number {number}", offset)
            if wire == VARINT:
                value, pos = read_varint(buffer, pos, end)
                yield Field(number, wire, offset, value, pos, pos, self)
            elif wire == LEN:
                if pos < end and buffer[pos] < 0x80:  # the common one-byte length
                    size = buffer[pos]
                    start = pos + 1
                else:
                    size, start = read_varint(buffer, pos, end)
                pos = start + size
                if pos > end:
                    # Truncated: hand out what is there, so a reader keeps what it finds
                    # before the break, then fail.
                    yield Field(number, wire, offset, end - start, start, end, self)
                    raise WireError(
                        f"field {number} claims {size} bytes, {end - start} remain", offset
                    )
                yield Field(number, wire, offset, size, start, pos, self)
            elif wire == FIXED64:
                if pos + 8 > end:
                    raise WireError("truncated fixed64", offset)
                value = int.from_bytes(buffer[pos : pos + 8], "little")
                pos += 8
                yield Field(number, wire, offset, value, pos, pos, self)
            elif wire == FIXED32:
                if pos + 4 > end:
                    raise WireError("truncated fixed32", offset)
                value = int.from_bytes(buffer[pos : pos + 4], "little")
                pos += 4
                yield Field(number, wire, offset, value, pos, pos, self)
            else:
                raise WireError(f"{_WIRE_NAMES[wire]} field {number} is not supported", offset)

    def first(self, number: int) -> Field | None:
        """The first field numbered `number`, reading no further than it."""
        for field in self:
            if field.number == number:
                return field
        return None

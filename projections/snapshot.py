"""Snapshots: a ``Projection`` as MessagePack bytes, and back, exactly.

Rule: bytes in, bytes out; no files here (the server names and writes them).
A snapshot restores only under the configuration it was folded with: anything
corrupt, from another version or another config raises ``SnapshotError``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from bus.errors import TallyError
from projections.config import ProjectionConfig
from projections.fold import Projection, ProjectionState

__all__ = [
    "SNAPSHOT_VERSION",
    "SnapshotError",
    "SnapshotMeta",
    "decode_snapshot",
    "encode_snapshot",
    "read_snapshot_meta",
    "restamp_snapshot",
]

SNAPSHOT_VERSION: Final = 4  # 3: histogram exemplars; 4: when each series last changed
_FORMAT: Final = "tally-snapshot"


class SnapshotError(TallyError):
    """Raised when a snapshot is corrupt, of another version, or folded under another config."""


class SnapshotMeta(msgspec.Struct, frozen=True, kw_only=True):
    """What a snapshot says about itself, readable without restoring it."""

    format: str = _FORMAT
    version: int
    #: The log offset folded up to (the next unread byte).
    offset: int
    #: ``ProjectionConfig.fingerprint()`` of the config the state was folded under.
    fingerprint: str
    #: Opaque identity of the log (the server uses it to notice a replaced log).
    bus_identity: str
    #: The event clock (max event ``ts`` folded).
    clock: float
    #: A base snapshot's: the ``ts`` of the first stamped event of the log before any cut,
    #: where ``tally replay --step`` counts its boundaries from (``None``: not known).
    log_start: float | None = None


class _Snapshot(msgspec.Struct, kw_only=True):
    meta: SnapshotMeta
    state: ProjectionState


class _Head(msgspec.Struct):
    meta: SnapshotMeta


class _Restamp(msgspec.Struct, kw_only=True):
    meta: SnapshotMeta
    state: msgspec.Raw


_encoder: Final = msgspec.msgpack.Encoder()
_head_decoder: Final = msgspec.msgpack.Decoder(_Head)
_decoder: Final = msgspec.msgpack.Decoder(_Snapshot)
_restamp_decoder: Final = msgspec.msgpack.Decoder(_Restamp)


def restamp_snapshot(data: bytes, *, log_start: float | None) -> bytes:
    """``data`` with its header's ``log_start`` set; the state's bytes are copied, not decoded."""
    read_snapshot_meta(data)  # SnapshotError if it is not a snapshot of this version
    try:
        snapshot = _restamp_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(f"corrupt snapshot: {exc}") from None
    meta = msgspec.structs.replace(snapshot.meta, log_start=log_start)
    return _encoder.encode(_Restamp(meta=meta, state=snapshot.state))


def encode_snapshot(projection: Projection, *, bus_identity: str = "") -> bytes:
    """The projection's whole state, with its offset, clock and config fingerprint."""
    state = projection.export_state()
    meta = SnapshotMeta(
        version=SNAPSHOT_VERSION,
        offset=state.offset,
        fingerprint=projection.config.fingerprint(),
        bus_identity=bus_identity,
        clock=state.clock,
    )
    return _encoder.encode(_Snapshot(meta=meta, state=state))


def read_snapshot_meta(data: bytes) -> SnapshotMeta:
    """The header of a snapshot of this version; ``SnapshotError`` if it is not one."""
    try:
        meta = _head_decoder.decode(data).meta
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(f"not a tally snapshot: {exc}") from None
    if meta.format != _FORMAT:
        raise SnapshotError(f"not a tally snapshot (format {meta.format!r})")
    if meta.version != SNAPSHOT_VERSION:
        raise SnapshotError(
            f"snapshot version {meta.version} is not supported (this is version {SNAPSHOT_VERSION})"
        )
    return meta


def decode_snapshot(data: bytes, config: ProjectionConfig) -> tuple[Projection, SnapshotMeta]:
    """Restore a projection equal to the one encoded; ``SnapshotError`` if that is not possible."""
    meta = read_snapshot_meta(data)
    if meta.fingerprint != config.fingerprint():
        raise SnapshotError(
            f"snapshot was folded under another projection config "
            f"(fingerprint {meta.fingerprint}, current {config.fingerprint()})"
        )
    try:
        snapshot = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SnapshotError(f"corrupt snapshot: {exc}") from None
    if snapshot.state.offset != meta.offset or snapshot.state.clock != meta.clock:
        raise SnapshotError("corrupt snapshot: header and state disagree")
    try:
        projection = Projection.from_state(snapshot.state, config)
    except (ValueError, TypeError, KeyError) as exc:
        raise SnapshotError(f"corrupt snapshot: {exc}") from None
    return projection, meta

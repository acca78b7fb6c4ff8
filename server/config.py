"""Configuration: defaults, overridden by `<data-dir>/tally.toml`, then by flags.

Read once in `main`; nothing reads the environment or files at import time.
Every table (and the top level) refuses unknown keys: errors name the file,
the table and the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Final

import msgspec

from bus.config import BusConfig
from bus.errors import TallyError
from bus.user_types import EventTypeDecl
from projections.config import OtlpSettings, ProjectionConfig
from projections.rules.spec import Rule

__all__ = [
    "CONFIG_FILE",
    "ConfigError",
    "OtlpConfig",
    "ServerConfig",
    "TallyConfig",
    "load_config",
]

CONFIG_FILE: Final = "tally.toml"

_UNKNOWN: Final = re.compile(
    r"^Object contains unknown field `(?P<key>[^`]*)`(?: - at `\$\.(?P<table>[^`]*)`)?$"
)
_AT: Final = re.compile(r"^(?P<message>.*) - at `\$\.(?P<table>[^.`\[]+)\.?(?P<key>[^`]*)`$")

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class ConfigError(TallyError):
    """Raised when tally.toml cannot be read or does not match the schema."""

    exit_code = 2


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9469
    checkpoint_every_events: PositiveInt = 100_000
    checkpoint_every_s: Positive = 30.0
    sse_default_interval_s: Annotated[float, msgspec.Meta(ge=0.1)] = 1.0
    sse_heartbeat_s: Positive = 15.0
    sse_stall_timeout_s: Positive = 60.0
    sse_buffer_series: PositiveInt = 100_000
    max_connections: PositiveInt = 1024


class OtlpConfig(OtlpSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[otlp]``: the OTLP/HTTP receiver, and how its data points fold (``OtlpSettings``)."""

    #: A second port serving the same app (4318 by convention); ``--otlp-port`` wins.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    #: Events waiting to be written past which OTLP requests get 429 and Retry-After.
    max_pending_events: PositiveInt = 100_000

    def settings(self) -> OtlpSettings:
        """The fold's part: what a snapshot's fingerprint covers."""
        return OtlpSettings(
            **{name: getattr(self, name) for name in OtlpSettings.__struct_fields__}
        )


class TallyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    projections: ProjectionConfig = msgspec.field(default_factory=ProjectionConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    otlp: OtlpConfig = msgspec.field(default_factory=OtlpConfig)
    rules: tuple[Rule, ...] = ()
    event_types: tuple[EventTypeDecl, ...] = ()

    def __post_init__(self) -> None:
        if self.bus.event_types:
            raise ValueError(
                "event_types: write [[event_types]], not [[bus.event_types]] - at `$.bus`"
            )
        if self.projections.event_types:
            raise ValueError(
                "event_types: write [[event_types]], not [[projections.event_types]] "
                "- at `$.projections`"
            )
        if self.projections.otlp != OtlpSettings():
            raise ValueError("otlp: set these in [otlp], not [projections] - at `$.projections`")
        if self.projections.rules:
            raise ValueError(
                "rules: write [[rules]], not [[projections.rules]] - at `$.projections`"
            )
        self.projection_config()  # the rules are checked against the loop prefix there

    def projection_config(self) -> ProjectionConfig:
        """``[projections]`` with the fold's part of ``[otlp]`` and the ``[[rules]]``: what the
        projection folds by."""
        return msgspec.structs.replace(
            self.projections,
            otlp=self.otlp.settings(),
            rules=self.rules,
            event_types=self.event_types,
        )

    def bus_config(self) -> BusConfig:
        """``[bus]`` with the ``[[event_types]]``: what the bus's readers decode."""
        return msgspec.structs.replace(self.bus, event_types=self.event_types)


def load_config(data_dir: Path) -> TallyConfig:
    """Defaults, or `<data-dir>/tally.toml` where it exists; errors name the file and key."""
    path = data_dir / CONFIG_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return TallyConfig()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        return msgspec.toml.decode(raw, type=TallyConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _describe(message: str) -> str:
    """A schema error in TOML's words: ``[table] key: what is wrong``."""
    if unknown := _UNKNOWN.match(message):
        table = f"[{unknown['table']}]" if unknown["table"] else "the top level"
        return f"unknown key {unknown['key']!r} in {table}"
    if at := _AT.match(message):
        key = f" {at['key']}" if at["key"] else ""
        return f"[{at['table']}]{key}: {at['message']}"
    return message

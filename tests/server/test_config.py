"""tally.toml: defaults, every section decoded, and every unknown or bad key named with its file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bus.writer import BusConfig
from server.config import CONFIG_FILE, ConfigError, TallyConfig, load_config


def _write(data_dir: Path, text: str) -> Path:
    path = data_dir / CONFIG_FILE
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_means_defaults(data_dir: Path) -> None:
    assert load_config(data_dir) == TallyConfig()


def test_every_section_is_read(data_dir: Path) -> None:
    _write(
        data_dir,
        '[bus]\nsegment_bytes = 4096\ndurability = "always"\n'
        '[projections]\nloop_prefix = "agent_loop"\n'
        "[server]\nport = 9470\n"
        "[otlp]\nport = 4318\nmax_pending_events = 10\n",
    )
    config = load_config(data_dir)
    assert config.bus == BusConfig(segment_bytes=4096, durability="always")
    assert config.projections.loop_prefix == "agent_loop"
    assert config.server.port == 9470
    assert (config.otlp.port, config.otlp.max_pending_events) == (4318, 10)


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        ("[bus]\nsegmnt_bytes = 5\n", "segmnt_bytes", "[bus]"),
        ('[projections]\nloop_prefx = "x"\n', "loop_prefx", "[projections]"),
        ("[server]\nprot = 9470\n", "prot", "[server]"),
        ("[otlp]\nprot = 4318\n", "prot", "[otlp]"),
        ('colour = "red"\n', "colour", "the top level"),
        ("[metrics]\nenabled = true\n", "metrics", "the top level"),
    ],
    ids=["bus", "projections", "server", "otlp", "top-level-key", "top-level-table"],
)
def test_unknown_keys_are_errors_naming_file_and_key(
    data_dir: Path, text: str, key: str, where: str
) -> None:
    path = _write(data_dir, text)
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir)
    assert str(caught.value) == f"{path}: unknown key {key!r} in {where}"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[bus]\nsegment_bytes = 0\n", "[bus] segment_bytes: "),
        ('[bus]\ndurability = "sometimes"\n', "[bus] durability: "),
        ("[server]\nport = 70000\n", "[server] port: "),
        ('[projections]\nloop_prefix = "tally"\n', "[projections]: loop_prefix: "),
        (
            "[projections]\nseries_ttl_s = 600\nforget_after_s = 60\n",
            "[projections]: forget_after_s: 60.0 is less than series_ttl_s 600.0",
        ),
        ("[projections]\nseries_ttl_s = -1\n", "[projections]: series_ttl_s: "),
        ("[bus\n", "not valid TOML"),
    ],
)
def test_bad_values_name_file_and_key(data_dir: Path, text: str, needle: str) -> None:
    path = _write(data_dir, text)
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert needle in message, message


def test_config_errors_are_bad_input() -> None:
    assert ConfigError.exit_code == 2


def test_otlp_fold_settings_reach_the_projection_config(data_dir: Path) -> None:
    _write(
        data_dir,
        '[otlp]\nport = 4318\ndrop_attributes = ["user.id"]\n'
        '[otlp.labels]\n"claude_code.token.usage" = ["type", "session.id"]\n',
    )
    config = load_config(data_dir)
    otlp = config.projection_config().otlp
    assert otlp.drop_attributes == ("user.id",)
    assert otlp.labels == {"claude_code.token.usage": ("type", "session.id")}
    assert (
        config.projection_config().fingerprint() != TallyConfig().projection_config().fingerprint()
    )
    # the receiver's own keys do not change what is folded
    _write(data_dir, "[otlp]\nport = 4318\nmax_pending_events = 5\n")
    assert load_config(data_dir).projection_config() == TallyConfig().projection_config()


def test_otlp_settings_belong_in_their_own_table(data_dir: Path) -> None:
    path = _write(data_dir, "[projections.otlp]\nmax_streams = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(data_dir)
    assert (
        str(caught.value) == f"{path}: [projections]: otlp: set these in [otlp], not [projections]"
    )


def test_rules_reach_the_projection_config(data_dir: Path) -> None:
    rules = Path(__file__).resolve().parents[2] / "docs" / "claude-code-rules.toml"
    _write(data_dir, rules.read_text(encoding="utf-8"))
    config = load_config(data_dir)
    assert [r.name for r in config.projection_config().rules][:2] == [
        "claude_code_api_requests",
        "claude_code_input_tokens",
    ]
    assert (
        config.projection_config().fingerprint() != TallyConfig().projection_config().fingerprint()
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[rules]]\nname = "r"\non = "x"\nfamily = "f"\nkind = "counter"\ncolour = 1\n', "colour"),
        ('[[rules]]\nname = "r"\non = "x"\nfamily = "tally_f"\nkind = "counter"\n',
         "catalogue name"),
        ('[[rules]]\nname = "r"\non = "x"\nfamily = "agent_f"\nkind = "counter"\n'
         '[projections]\nloop_prefix = "agent"\n', "catalogue name"),
        ('[[projections.rules]]\nname = "r"\non = "x"\nfamily = "f"\nkind = "counter"\n',
         "write [[rules]]"),
    ],
)  # fmt: skip
def test_bad_rules_are_config_errors(data_dir: Path, text: str, needle: str) -> None:
    _write(data_dir, text)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(data_dir)


DEPLOY_TOML = """
[[event_types]]
name = "deploy_finished"
fields = [
  { name = "service", type = "str" },
  { name = "duration_s", type = "float", default = 0.0 },
]
"""


def test_event_types_reach_the_bus_and_the_projection(data_dir: Path) -> None:
    _write(data_dir, DEPLOY_TOML)
    config = load_config(data_dir)
    assert [d.name for d in config.bus_config().event_types] == ["deploy_finished"]
    assert config.bus_config().schema is config.projection_config().schema
    assert "deploy_finished" in config.projection_config().schema.classes
    assert (
        config.projection_config().fingerprint() != TallyConfig().projection_config().fingerprint()
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[event_types]]\nname = "run_started"\n',
         "[event_types] [0]: name: 'run_started' is a built-in event type"),
        ('[[event_types]]\nname = "d"\nfields = [{ name = "x", type = "text" }]\n',
         "[event_types] [0].fields[0].type: Invalid enum value 'text'"),
        ('[[event_types]]\nname = "d"\nfields = [{ name = "x", type = "int", default = "a" }]\n',
         "field 'x': default 'a' is not a int"),
        ('[[event_types]]\nname = "d"\ncolour = 1\n', "unknown key 'colour'"),
        ('[[event_types]]\nname = "d"\n[[event_types]]\nname = "d"\n',
         "two types have the same name"),
        ('[[bus.event_types]]\nname = "d"\n', "write [[event_types]]"),
    ],
)  # fmt: skip
def test_bad_event_types_are_config_errors(data_dir: Path, text: str, needle: str) -> None:
    path = _write(data_dir, text)
    with pytest.raises(ConfigError, match=re.escape(needle)) as info:
        load_config(data_dir)
    assert str(info.value).startswith(f"{path}: ")

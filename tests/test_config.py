"""Agent configuration: the sample parses, and every mistake is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load, parse
from attest.errors import FormatError

SAMPLE = Path(__file__).parent.parent / "packaging" / "agent.toml"


def test_shipped_sample_parses_with_documented_values() -> None:
    cfg = load(SAMPLE)
    assert cfg.mavlink.component_id == 191
    assert cfg.gate.keepalive_s == 1.0
    assert cfg.device.key.startswith("tpm:")


MINIMAL = '[device]\nid = "d"\nairframe = "a"\nkey = "file:k.pem"\n'


@pytest.mark.parametrize(("text", "field"), [
    (MINIMAL + "[mavlink]\nurll = 'x'\n", "mavlink.urll"),
    (MINIMAL + "[mavlnk]\n", "[mavlnk]"),
    (MINIMAL + "[mavlink]\nsystem_id = '1'\n", "mavlink.system_id"),
    (MINIMAL + "[gate]\nkeepalive_s = 5\n", "gate.keepalive_s"),
    (MINIMAL + "[measure]\ndronecan_node_id = 0\n", "measure.dronecan_node_id"),
    (MINIMAL + "[measure]\ndronecan = \"yes\"\n", "measure.dronecan"),
    ('[device]\nid = "d"\nairframe = "a"\n', "device.key"),
    (MINIMAL + "[mavlink]\nallow_serial0 = 1\n", "mavlink.allow_serial0"),
    (MINIMAL + "[gate]\nkeepalive_s = nan\n", "gate.keepalive_s"),  # issue 11: these were accepted
    (MINIMAL + "[measure]\nscript_poll_s = -1\n", "measure.script_poll_s"),
    (MINIMAL + "[mavlink]\nheartbeat_timeout_s = 1e400\n", "mavlink.heartbeat_timeout_s"),
    (MINIMAL + "[mavlink]\nheartbeat_timeout_s = inf\n", "mavlink.heartbeat_timeout_s"),
    (MINIMAL + "[mavlink]\nsystem_id = 99999999999\n", "mavlink.system_id"),
    ('[device]\nid = "d\\u0007"\nairframe = "a"\nkey = "k"\n', "device.id"),
])
def test_config_mistakes_name_the_option(text: str, field: str) -> None:
    with pytest.raises(FormatError) as err:
        parse(text)
    assert field in str(err.value)


def test_invalid_toml_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="not valid TOML"):
        parse("[device\n")


def test_a_config_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(MINIMAL.replace('"d"', '"d\xff"').encode("latin-1"))
    with pytest.raises(FormatError, match="not UTF-8"):
        load(path)

"""``@PARAM/param.pck``: known answer against the file captured from real SITL, and a strict decoder."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymavlink.mavftp import MAVFTP

from agent.measure.parampck import ParamPackError, decode
from sim.vfc.parampck import encode
from sim.vfc.params import ParamTable

CAPTURED = Path(__file__).parent / "vectors" / "sitl-ftp.param.pck"


def test_captured_param_pck_decodes_to_the_sitl_parameters() -> None:
    pack = decode(CAPTURED.read_bytes())
    values = pack.values()
    assert len(pack.params) == pack.total_params == 1368 and not pack.with_defaults
    assert values["FORMAT_VERSION"] == 120 and values["SCR_ENABLE"] == 1 and values["MAV_SYSID"] == 1
    assert values["PILOT_TKOFF_ALT"] == 0.0 and isinstance(values["PILOT_TKOFF_ALT"], float)
    assert [p.ap_type for p in pack.params].count(4) == 559


def test_encoder_reproduces_the_captured_file_byte_for_byte_at_read_size_80() -> None:
    data = CAPTURED.read_bytes()
    params = [(p.name, p.ap_type, p.value) for p in decode(data).params]
    assert encode(params, 80) == data


def test_decoder_agrees_with_pymavlink() -> None:
    data = CAPTURED.read_bytes()
    theirs = MAVFTP.ftp_param_decode(data)
    assert theirs is not None
    assert {n.decode(): v for n, v, _ in theirs.params} == decode(data).values()


def test_padding_depends_on_the_read_size_but_the_content_does_not() -> None:
    params = [(p.name, p.ap_type, p.value) for p in decode(CAPTURED.read_bytes()).params]
    for size in (7, 80, 239):
        data = encode(params, size)
        assert decode(data).values() == {n: v for n, _, v in params}
        for start, length in _value_spans(data):
            assert start // size == (start + length - 1) // size, (size, start, length)
    assert len(encode(params, 239)) != len(encode(params, 80))


def _value_spans(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every value in a packed file without defaults."""
    sizes = {1: 1, 2: 2, 3: 4, 4: 4}
    spans, pos = [], 6
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        size, name_len = sizes[data[pos] & 0x0F], (data[pos + 1] >> 4) + 1
        spans.append((pos + 2 + name_len, size))
        pos += 2 + name_len + size
    return spans


def test_virtual_fc_table_matches_the_capture() -> None:
    assert ParamTable().pack(80) == CAPTURED.read_bytes()


@pytest.mark.parametrize(("data", "detail"), [
    (b"\x1b\x67", "shorter than the 6-byte header"),
    (b"\x00\x00\x01\x00\x01\x00", "bad magic"),
    (b"\x1b\x67\x02\x00\x01\x00", "2 parameters of 1"),
    (b"\x1b\x67\x01\x00\x01\x00\x05\x00A\x00", "unknown type 5"),
    (b"\x1b\x67\x01\x00\x01\x00\x04\x30AB", "truncated"),
    (b"\x1b\x67\x01\x00\x01\x00\x01\x03A\x01", "shares 3 characters"),
    (b"\x1b\x67\x02\x00\x02\x00\x01\x00A\x01", "1 records, but the header announces 2"),
    (b"\x1b\x67\x01\x00\x01\x00\x01\x00A\x01\x01\x00B\x01", "more records than"),
    (b"\x1b\x67\x01\x00\x01\x00\x01\x00\x07\x01", "invalid name"),
])
def test_malformed_param_pck_is_refused_with_the_reason(data: bytes, detail: str) -> None:
    with pytest.raises(ParamPackError, match=detail):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_raises_only_its_own_error_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ParamPackError):
        decode(b"\x1b\x67" + data)

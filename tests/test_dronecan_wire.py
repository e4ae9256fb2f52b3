"""The agent's DroneCAN decoder against pydronecan, an independent DroneCAN implementation."""

from __future__ import annotations

import dronecan
import pytest
from dronecan import transport
from hypothesis import given
from hypothesis import strategies as st

from agent.mavlink.dronecan_wire import (
    GET_NODE_INFO_SIGNATURE,
    CanId,
    DroneCanError,
    Reassembly,
    decode_node_info,
    get_node_info_request,
    transfer_crc,
)


def node_info_response(name: str = "com.acme.gps", cert: bytes = b"", flags: int = 3) -> object:
    r = dronecan.uavcan.protocol.GetNodeInfo.Response()
    r.status.uptime_sec, r.status.health, r.status.mode = 1234, 2, 1
    r.software_version.major, r.software_version.minor = 1, 4
    r.software_version.optional_field_flags = flags
    r.software_version.vcs_commit, r.software_version.image_crc = 0x1A2B3C4D, 0x1122334455667788
    r.hardware_version.major, r.hardware_version.minor = 2, 1
    r.hardware_version.unique_id = list(range(16))
    r.hardware_version.certificate_of_authenticity = list(cert)
    r.name = name
    return r


def frames_of(payload: object, tid: int = 5, source: int = 42, dest: int = 127) -> list[tuple[int, bytes]]:
    t = transport.Transfer(transfer_id=tid, source_node_id=source, dest_node_id=dest, payload=payload,
                           transfer_priority=30, service_not_message=True, request_not_response=False)
    return [(f.message_id, bytes(f.bytes)) for f in t.to_frames()]


def reassemble(frames: list[tuple[int, bytes]]) -> bytes | None:
    r = Reassembly(GET_NODE_INFO_SIGNATURE)
    out = None
    for _, data in frames:
        out = r.feed(data)
    return out


def test_a_pydronecan_node_info_response_decodes_field_for_field() -> None:
    frames = frames_of(node_info_response(cert=b"cert"))
    assert len(frames) > 1  # a multi-frame transfer, with its CRC
    cid = CanId.parse(frames[0][0])
    assert (cid.service, cid.request, cid.type_id, cid.source, cid.destination) == (True, False, 1, 42, 127)
    payload = reassemble(frames)
    assert payload is not None
    info = decode_node_info(42, payload)
    assert (info.uptime_s, info.health, info.mode) == (1234, 2, 1)
    assert info.sw_version == (1, 4) and info.vcs_commit == 0x1A2B3C4D and info.image_crc == 0x1122334455667788
    assert info.hw_version == (2, 1) and info.unique_id == bytes(range(16)) and info.certificate == b"cert"
    assert info.name == "com.acme.gps"


def test_optional_fields_absent_when_the_node_does_not_set_their_flags() -> None:
    info = decode_node_info(42, reassemble(frames_of(node_info_response(flags=0))) or b"")
    assert info.vcs_commit is None and info.image_crc is None


def test_our_request_is_what_pydronecan_reads_as_a_get_node_info_request() -> None:
    can_id, data = get_node_info_request(127, 42, 7)
    t = transport.Transfer()
    t.from_frames([transport.Frame(can_id, data)])
    assert (t.source_node_id, t.dest_node_id, t.transfer_id) == (127, 42, 7)
    assert t.service_not_message and t.request_not_response and t.data_type_id == 1


def test_transfer_crc_matches_pydronecan() -> None:
    payload = b"\x01\x02\x03 some payload"
    sig_crc = transport.common.crc16_from_bytes(GET_NODE_INFO_SIGNATURE.to_bytes(8, "little"))
    assert transfer_crc(GET_NODE_INFO_SIGNATURE, payload) == transport.common.crc16_from_bytes(payload,
                                                                                               initial=sig_crc)


def test_corrupted_frame_fails_the_transfer_crc() -> None:
    frames = frames_of(node_info_response())
    cid, data = frames[2]
    frames[2] = (cid, bytes([data[0] ^ 0x01]) + data[1:])
    with pytest.raises(DroneCanError, match="CRC"):
        reassemble(frames)


def test_frames_of_two_transfers_mixed_are_refused() -> None:
    a, b = frames_of(node_info_response(), tid=5), frames_of(node_info_response("com.other.gps"), tid=6)
    with pytest.raises(DroneCanError, match="out of order"):
        reassemble([a[0], b[1], *a[2:]])


def test_a_lost_frame_is_detected_by_the_toggle_bit() -> None:
    frames = frames_of(node_info_response())
    with pytest.raises(DroneCanError, match="out of order"):
        reassemble([frames[0], *frames[2:]])


def test_a_transfer_without_its_start_is_refused() -> None:
    frames = frames_of(node_info_response())
    with pytest.raises(DroneCanError, match="start"):
        reassemble(frames[1:])


def test_an_endless_transfer_is_cut_at_the_limit() -> None:
    r = Reassembly(GET_NODE_INFO_SIGNATURE, max_bytes=64)
    r.feed(bytes(7) + bytes([0x80]))  # start, toggle 0, tid 0
    toggle = True
    with pytest.raises(DroneCanError, match="longer than 64"):
        for _ in range(20):
            r.feed(bytes(7) + bytes([0x20 if toggle else 0x00]))
            toggle = not toggle


def test_a_short_node_info_is_an_error_not_garbage() -> None:
    with pytest.raises(DroneCanError, match="shorter"):
        decode_node_info(42, bytes(20))
    body = bytearray(41)
    body[40] = 200  # a certificate length running past the end
    with pytest.raises(DroneCanError, match="certificate"):
        decode_node_info(42, bytes(body))


def test_node_ids_out_of_range_are_refused() -> None:
    with pytest.raises(DroneCanError):
        get_node_info_request(0, 42, 1)
    with pytest.raises(DroneCanError):
        get_node_info_request(127, 128, 1)


@given(st.lists(st.binary(min_size=0, max_size=8), max_size=40))
def test_reassembly_of_arbitrary_frames_raises_only_its_own_error(frames: list[bytes]) -> None:
    r = Reassembly(GET_NODE_INFO_SIGNATURE)
    for data in frames:
        try:
            payload = r.feed(data)
            if payload is not None:
                decode_node_info(1, payload)
                decode_node_info(1, payload, fd=True)
        except DroneCanError:
            pass


def test_a_can_fd_answer_decodes_the_same_and_its_padding_is_not_part_of_the_name() -> None:
    t = transport.Transfer(transfer_id=9, source_node_id=42, dest_node_id=127, payload=node_info_response(),
                           transfer_priority=30, service_not_message=True, request_not_response=False, canfd=True)
    frames = [(f.message_id, bytes(f.bytes)) for f in t.to_frames()]
    assert any(len(d) > 8 for _, d in frames), "FD frames carry more than 8 bytes"
    info = decode_node_info(42, reassemble(frames) or b"", fd=True)
    assert info.name == "com.acme.gps" and info.image_crc == 0x1122334455667788

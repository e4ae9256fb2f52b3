"""The published JSON Schemas describe what the code writes, and refuse what the code refuses."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.attestation import check_manifest, seal_measurements
from attest.errors import FormatError
from attest.evidence import Predicate
from attest.manifest import Manifest
from tests.factory import World, measurements

SCHEMAS = Path(__file__).parent.parent / "attest" / "schemas"


def schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(data)
    return data


def test_written_manifest_matches_schema() -> None:
    jsonschema.validate(World().manifest().to_json(), schema("manifest.schema.json"))


def test_written_predicate_matches_schema() -> None:
    w = World()
    sealed = seal_measurements(measurements(), check_manifest(w.trust(), w.manifest_bytes(), w.now), w.device_key,
                               device_id="drone-001", airframe="FS-Quad-1", nonce=secrets.token_bytes(32), now=w.now)
    jsonschema.validate(sealed.predicate.to_json(), schema("predicate.schema.json"))


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(extra=1),
    lambda d: d.update(version=0),
    lambda d: d["airframe"].update(colour="red"),
    lambda d: d["scripts"][0].update(sha256="ABC"),
    lambda d: d["components"][0].update(origin="Japan"),
    lambda d: d["min_strength"].update(firmware="strong"),
])
def test_schema_and_parser_agree_on_invalid_manifests(mutate: Any) -> None:
    data = World().manifest().to_json()
    mutate(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema("manifest.schema.json"))
    with pytest.raises(FormatError):
        Manifest.from_json(data)


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(extra=1),
    lambda d: d.update(key_kind="usb-stick"),
    lambda d: d["measurements"][0].update(strength="very"),
    lambda d: d["verdict"].pop("reasons"),
])
def test_schema_and_parser_agree_on_invalid_predicates(mutate: Any) -> None:
    w = World()
    sealed = seal_measurements(measurements(), check_manifest(w.trust(), w.manifest_bytes(), w.now), w.device_key,
                               device_id="drone-001", airframe="FS-Quad-1", nonce=bytes(32), now=w.now)
    data = sealed.predicate.to_json()
    mutate(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema("predicate.schema.json"))
    with pytest.raises(FormatError):
        Predicate.from_json(data)

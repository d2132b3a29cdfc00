"""Manifest: JSON round trip, version bumps, and fingerprint checks that name the differing field."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import pytest

from indexer.core.fingerprint import ManifestMismatchError, ModelFingerprint, check_fingerprint
from indexer.manifest import Manifest


def test_first_manifest_and_json_round_trip(fingerprint):
    manifest = Manifest.first(fingerprint, dim=576, count=10, kind="hnsw", centered=True, dataset="ml-1m")
    assert (manifest.version, manifest.version_id[:8]) == (1, "v000001-")
    assert datetime.fromisoformat(manifest.created_at).utcoffset().total_seconds() == 0
    assert Manifest.from_json(json.loads(json.dumps(manifest.to_json()))) == manifest


def test_bumped_is_a_new_version(fingerprint):
    first = Manifest.first(fingerprint, dim=8, count=10, kind="flat", centered=False)
    second = first.bumped(count=11)
    assert (second.version, second.count, second.version_id[:8]) == (2, 11, "v000002-")
    assert second.version_id != first.version_id and first.count == 10
    assert dataclasses.replace(second, version=1, version_id=first.version_id, created_at=first.created_at,
                               count=10) == first


def test_invalid_manifest_fields_are_rejected(fingerprint):
    with pytest.raises(ValueError, match="kind must be one of"):
        Manifest.first(fingerprint, dim=8, count=1, kind="annoy", centered=False)
    with pytest.raises(ValueError, match="dim > 0"):
        Manifest.first(fingerprint, dim=0, count=1, kind="flat", centered=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [("model_id", "SmolLM2-135M-Instruct"), ("weights_hash", "ffff"), ("adapter_hash", "ad4p"),
     ("template_version", "t2")],
)
def test_fingerprint_mismatch_names_the_field_and_both_values(fingerprint, field, value):
    other = dataclasses.replace(fingerprint, **{field: value})
    with pytest.raises(ManifestMismatchError) as err:
        check_fingerprint(fingerprint, other, where="the index at /x")
    message = str(err.value)
    assert f"{field}={getattr(fingerprint, field)!r}" in message and f"{field}={value!r}" in message
    assert "the index at /x" in message and "reasonrec index" in message
    assert err.value.field_name == field
    check_fingerprint(fingerprint, ModelFingerprint(**dataclasses.asdict(fingerprint)))  # equal: no error

"""The typed export record: old records still open, unknown fields are refused, one verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporter import Workspace
from exporter.record import SCHEMA_VERSION, ExportRecord
from exporter.store import ExportStore
from testkit.models import write_project
from tests.helpers import record_fields

V1_RECORD = Path(__file__).resolve().parent.parent / "fixtures" / "export_v1.json"


def test_a_record_written_before_the_typed_record_opens_and_round_trips(tmp_path):
    """export_v1.json was written by the code before ExportRecord (no schema_version)."""
    old = json.loads(V1_RECORD.read_text())
    assert "schema_version" not in old
    write_project(tmp_path, "demo-classification")
    store = ExportStore.for_project(Workspace(tmp_path), "demo-classification")
    (store.root / old["id"]).mkdir(parents=True)
    shutil.copy(V1_RECORD, store.root / old["id"] / "export.json")

    record = store.get(old["id"])
    assert record.schema_version == SCHEMA_VERSION
    assert record.verdict == "passed" and record.validation.outputs[0].name == "logits"
    assert record.model.inputs[0].shape == ["batch", 3, 64, 64] and record.files[0].name == "model.onnx"
    migrated = record.to_json()
    assert kept(old, migrated)  # nothing lost or renamed; only fields with their defaults were added
    assert [e["id"] for e in store.list()] == [old["id"]]  # the index is rebuilt from it

    store.update(old["id"], warnings=["re-read"])
    on_disk = json.loads((store.root / old["id"] / "export.json").read_text())
    assert on_disk["schema_version"] == SCHEMA_VERSION and on_disk["warnings"] == ["re-read"]
    assert ExportRecord.from_json(on_disk) == record.model_copy(update={"warnings": ["re-read"]})


def kept(old, new) -> bool:
    """Every value of ``old`` is in ``new`` unchanged (dicts may have gained keys)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and kept(v, new[k]) for k, v in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(old) == len(new) and all(map(kept, old, new))
    return old == new and type(old) is type(new)


def test_update_refuses_a_field_the_record_does_not_have(tmp_path):
    write_project(tmp_path)
    store = ExportStore.for_project(Workspace(tmp_path), "proj")
    record = store.create(**record_fields())
    with pytest.raises(TypeError, match="statuss"):
        store.update(record.id, statuss="completed")
    with pytest.raises(ValueError, match="status"):
        store.update(record.id, status="finished")  # not a status
    assert store.get(record.id) == record  # nothing written


def test_verdict_is_one_word_for_every_state():
    base = ExportRecord(id="export-00000000", **record_fields())
    assert base.verdict == "pending" and base.active
    assert base.model_copy(update={"status": "failed"}).verdict == "failed"
    assert base.model_copy(update={"status": "completed"}).verdict == "unvalidated"
    old = ExportRecord.from_json(json.loads(V1_RECORD.read_text()))
    failed_validation = old.model_copy(update={"validation": old.validation.model_copy(
        update={"verdict": "failed", "passed": False})})
    assert failed_validation.verdict == "failed" and not failed_validation.active


def test_the_api_schema_of_a_record_comes_from_the_model():
    from exporter.api import create_api

    schema = create_api().openapi()
    answer = schema["paths"]["/export/{export_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"]["$ref"].endswith("/ExportRecord")
    fields = schema["components"]["schemas"]["ExportRecord"]["properties"]
    assert set(fields) == set(ExportRecord.model_fields)

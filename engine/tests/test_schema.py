"""JSON Schemas generated from the config dataclasses, and config errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moelab.cli import main
from moelab.commands.schema import SCHEMA_DIR, render, schemas
from moelab.errors import ConfigError
from moelab.train import jsoncfg
from moelab.train.demo import attention_ablation_experiment, demo_experiment
from moelab.train.experiment import ExperimentConfig, load_experiment


def test_committed_schemas_are_current():
    for name, schema in schemas().items():
        assert (SCHEMA_DIR / name).read_text() == render(schema), f"{name} is stale: run `moelab schema`"


def test_schema_shape():
    exp = schemas()["experiment.schema.json"]
    assert exp["$schema"].startswith("http://json-schema.org/draft-07")
    stage = exp["definitions"]["StageConfig"]
    assert stage["required"] == ["kind"]
    assert stage["properties"]["kind"]["enum"] == [
        "dense",
        "branch",
        "tune",
        "continued",
        "upcycle",
        "moe",
        "eval",
    ]
    assert stage["properties"]["lr"] == {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None}
    assert exp["additionalProperties"] is False
    train = schemas()["train.schema.json"]
    assert train["properties"]["lr"]["type"] == "number"
    assert train["properties"]["model"]["anyOf"][0] == {"$ref": "#/definitions/ModelConfig"}


def test_schema_validates_demo_experiment():
    jsonschema = pytest.importorskip("jsonschema")
    doc = jsoncfg.to_dict(demo_experiment(quick=True))
    jsonschema.validate(doc, schemas()["experiment.schema.json"])


def test_schema_command_check(tmp_path, capsys):
    assert main(["schema", "--out", str(tmp_path)]) == 0
    assert main(["schema", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "train.schema.json").write_text("{}")
    assert main(["schema", "--out", str(tmp_path), "--check"]) == 1


def test_attention_ablation_file_is_the_studys():
    """examples/attention-routing.moelab.json is what the study runs for bam-ekv (soft, top-2, top-1)."""
    jsonschema = pytest.importorskip("jsonschema")
    path = Path(__file__).resolve().parents[2] / "examples" / "attention-routing.moelab.json"
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, schemas()["experiment.schema.json"])
    exp = load_experiment(path)
    exp.validate()
    want = attention_ablation_experiment(out=exp.out)
    assert exp == want, "regenerate the file from moelab.train.demo.attention_ablation_experiment()"
    study = demo_experiment(parallel_block=True)
    up = exp.stage("upcycle")
    assert up is not None and [(v.method, v.attn_top_k) for v in up.variants] == [
        ("bam-ekv", 2),
        ("bam-ekv", 1),
    ]
    assert all(v in study.stage("upcycle").variants for v in up.variants)  # type: ignore[union-attr]
    for kind in ("dense", "branch", "moe"):
        assert exp.stage(kind) == study.stage(kind)


def test_demo_experiment_roundtrips():
    exp = demo_experiment(quick=True)
    assert jsoncfg.from_dict(ExperimentConfig, json.loads(json.dumps(jsoncfg.to_dict(exp)))) == exp


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"stages": [{"kind": "dense"}, {"kind": "branch"}, {"kind": "moe", "lr": "high"}]},
            "experiment.json: stages[2].lr: expected a number, got the string 'high'",
        ),
        (
            {"stages": [{"kind": "dense", "stepz": 3}]},
            "experiment.json: stages[0].stepz: unknown field (did you mean 'steps'?)",
        ),
        (
            {"stages": [{"kind": "seed"}]},
            "experiment.json: stages[0].kind: expected one of 'dense', 'branch', 'tune', 'continued', 'upcycle', 'moe', 'eval', got the string 'seed'",
        ),
        (
            {"stages": [{"kind": "dense"}, {"kind": "upcycle", "methods": ["bt"]}]},
            "experiment.json: stages[1].methods[0]: 'bt' is not a method",
        ),
        (
            {"stages": [{"kind": "dense"}, {"kind": "branch", "domains": ["law"]}]},
            "experiment.json: stages[1].domains[0]: 'law' is not a domain",
        ),
        (
            {"stages": [{"kind": "branch"}, {"kind": "dense"}]},
            "experiment.json: stages: kinds must come in the order",
        ),
        (
            {"data": {"sources": [{"domain": "code", "weight": True}]}, "stages": [{"kind": "dense"}]},
            "experiment.json: data.sources[0].weight: expected a number, got a boolean",
        ),
        (
            {"stages": [{"kind": "dense", "steps": 1.5}]},
            "experiment.json: stages[0].steps: expected an integer, got a number",
        ),
        ([], "experiment.json: (top level): expected an object, got a list"),
        (
            {
                "stages": [
                    {"kind": "dense"},
                    {"kind": "upcycle", "methods": ["btx"], "variants": [{"name": "btx", "method": "btx"}]},
                ]
            },
            "experiment.json: stages[1].variants[0].name: 'btx' is empty, not a plain name or already used",
        ),
        (
            {
                "stages": [
                    {"kind": "dense"},
                    {"kind": "upcycle", "methods": ["btx"], "variants": [{"name": "b", "method": "bt"}]},
                ]
            },
            "experiment.json: stages[1].variants[0].method: expected one of 'sparse', 'btx', 'bam-ekv', 'bam-skv', 'upit', got the string 'bt'",
        ),
        (
            {
                "stages": [
                    {"kind": "dense"},
                    {
                        "kind": "upcycle",
                        "methods": ["btx"],
                        "variants": [{"name": "b", "method": "btx", "match_flops_of": "bam-ekv"}],
                    },
                ]
            },
            "experiment.json: stages[1].variants[0].match_flops_of: 'bam-ekv' is not a method or variant of this stage",
        ),
        (
            {
                "stages": [
                    {"kind": "dense"},
                    {"kind": "upcycle", "methods": ["btx"]},
                    {"kind": "moe", "methods": ["btx-compute"]},
                ]
            },
            "experiment.json: stages[2].methods[0]: 'btx-compute' is not upcycled by the upcycle stage",
        ),
        (
            {"stages": [{"kind": "dense"}, {"kind": "continued"}]},
            "experiment.json: stages: a 'continued' stage without `steps` matches the tokens of the branch and moe",
        ),
    ],
)
def test_experiment_errors_name_the_field(tmp_path, doc, message):
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert str(e.value).startswith(message)


def test_cli_reports_one_line(tmp_path, capsys):
    path = tmp_path / "experiment.json"
    path.write_text('{"stages": [{"kind": "dense", "lr": [1]}]}')
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "moelab: error: experiment.json: stages[0].lr: expected a number, got a list"
    path.write_text("{not json")
    assert main(["run", str(path)]) == 1
    assert "experiment.json: invalid JSON" in capsys.readouterr().err

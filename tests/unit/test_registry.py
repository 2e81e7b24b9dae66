import json
import textwrap

import pytest
from pydicom.sr.coding import Code

from ai_orchestrator.modeling.api import ModelResult, ModelSpec, ModelSpecError
from ai_orchestrator.modeling.registry import Registry

GOOD_MODEL = """
    from pydicom.sr.coding import Code
    from ai_orchestrator.modeling.api import ModelResult, ModelSpec

    def predict(volume, device, context):
        return ModelResult()

    MODEL = ModelSpec(
        name="{name}",
        version="0.1",
        algorithm=Code("X1", "99TEST", "Test algorithm"),
        applies_to={{"Modality": r"^CT$", "BodyPartExamined": r"(?i)chest"}},
        min_instances=10,
        predict=predict,
        outputs={{"SR"}},
    )
"""

MODULES = {
    "good.py": GOOD_MODEL.format(name="good-model"),
    "broken_import.py": "raise RuntimeError('weights missing')\n",
    "bad_outputs.py": GOOD_MODEL.format(name="bad").replace('{"SR"}', '{"PDF"}'),
    "no_model.py": "VALUE = 1\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "same_name.py": GOOD_MODEL.format(name="good-model"),
    "same_code.py": GOOD_MODEL.format(name="other-model"),
    "_helper.py": "raise RuntimeError('never imported')\n",
}


@pytest.fixture
def registry(tmp_path):
    for name, source in MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "weights").mkdir()  # a directory without a declaration is not a model
    (tmp_path / "bare-bundle" / "configs").mkdir(parents=True)  # a MONAI bundle without one is an error
    (tmp_path / "bare-bundle" / "configs" / "metadata.json").write_text("{}")
    return Registry.load(tmp_path)


def _entry(registry, source):
    return next(entry for entry in registry.entries if entry.source.name == source)


def test_broken_modules_become_error_entries(registry):
    assert sorted(entry.source.name for entry in registry.entries) == sorted(
        [name for name in MODULES if not name.startswith("_")] + ["bare-bundle"])
    bare = _entry(registry, "bare-bundle")
    assert bare.format == "monai-bundle" and "without ai-orchestrator.json" in bare.error
    assert _entry(registry, "good.py").status == "ok"
    assert "weights missing" in _entry(registry, "broken_import.py").error
    assert "outputs" in _entry(registry, "bad_outputs.py").error
    assert "no MODEL" in _entry(registry, "no_model.py").error
    assert "SystemExit" in _entry(registry, "exits.py").error
    assert "already declared by good.py" in _entry(registry, "same_name.py").error
    assert _entry(registry, "same_code.py").error == (
        "algorithm code (X1, 99TEST) is already declared by good.py (model 'good-model'): each model needs its own "
        "algorithm code")
    assert [model.name for model in registry.models] == ["good-model"]


def test_describe_is_json_ready(registry):
    described = {item["source"]: item for item in json.loads(json.dumps(registry.describe()))}
    good = described["good.py"]
    assert good["algorithm"] == {"CodeValue": "X1", "CodingSchemeDesignator": "99TEST", "CodeMeaning": "Test algorithm"}
    assert good["inputs"]["series"]["Modality"] == "^CT$" and good["inputs"]["min_instances"] == 10
    assert good["outputs"] == ["SR"] and good["status"] == "ok" and good["error"] is None
    broken = described["broken_import.py"]
    assert broken["status"] == "error" and broken["version"] is None and broken["outputs"] == []


def test_applicable_selects_matching_series(registry):
    chest = {"Modality": "CT", "BodyPartExamined": "CHEST", "instances": 120, "SeriesInstanceUID": "1"}
    series = [
        chest,
        {**chest, "BodyPartExamined": "HEAD", "SeriesInstanceUID": "2"},
        {**chest, "instances": 3, "SeriesInstanceUID": "3"},
        {"Modality": "CT", "instances": 100, "SeriesInstanceUID": "4"},
        {**chest, "Modality": "SEG", "SeriesInstanceUID": "6"},
    ]
    pairs = registry.applicable(series)
    assert [(model.name, [s["SeriesInstanceUID"] for s in matched]) for model, matched in pairs] == [
        ("good-model", ["1"])]
    assert registry.applicable(series[1:]) == []


def test_completeness_check_and_instance_list():
    model = ModelSpec(name="m", version="1", algorithm=Code("1", "99T", "m"), applies_to={"Modality": "CT"},
                      predict=lambda *_: ModelResult(), series_complete=lambda s: s.get("Status") == "Complete")
    assert model.matches({"Modality": "CT", "instances": ["a", "b"], "Status": "Complete"})
    assert not model.matches({"Modality": "CT", "instances": 2, "Status": "Incomplete"})
    assert not model.matches({"Modality": "CT", "instances": 0, "Status": "Complete"})


@pytest.mark.parametrize("change, message", [
    ({"name": "has space"}, "name"),
    ({"version": ""}, "version"),
    ({"algorithm": ("1", "99T", "m")}, "algorithm"),
    ({"applies_to": {}}, "at least one"),
    ({"applies_to": {"NotAKeyword": "x"}}, "not a DICOM keyword"),
    ({"applies_to": {"Modality": "("}}, "regular expression"),
    ({"outputs": set()}, "outputs"),
    ({"predict": "predict"}, "callable"),
    ({"min_instances": 0}, "min_instances"),
])
def test_model_spec_rejects_nonsense(change, message):
    fields = dict(name="m", version="1", algorithm=Code("1", "99T", "m"), applies_to={"Modality": "CT"},
                  predict=lambda *_: ModelResult())
    with pytest.raises(ModelSpecError, match=message):
        ModelSpec(**{**fields, **change})


def test_default_models_directory_holds_the_builtin_model():
    registry = Registry.load()
    model = registry.get("ct-chest-quant")
    assert model is not None and model.outputs == {"SEG", "SR", "SC"}
    assert _entry(registry, "ct_chest_quant.py").status == "ok"


def test_missing_directory_is_an_empty_registry(tmp_path):
    assert Registry.load(tmp_path / "absent").entries == ()


"""Answers at once: an SR with one measurement (the number of input instances)."""

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ai_orchestrator.modeling.api import Measurement, ModelResult, ModelSpec


def predict(datasets, device, context):
    context["progress"](50, "counting")
    context["checkpoint"]()
    return ModelResult(measurements=(Measurement(codes.SCT.Volume, float(len(datasets)),
                                                 Code("ml", "UCUM", "milliliter")),))


MODEL = ModelSpec(name="quick", version="1", algorithm=Code("QUICK", "99TEST", "Quick"),
                  applies_to={"Modality": "^MR$", "BodyPartExamined": "^QUICK$"}, predict=predict, prepare=list,
                  outputs=frozenset({"SR"}))

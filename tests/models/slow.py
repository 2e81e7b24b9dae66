"""Takes about 4 s, with a cancel checkpoint every 0.1 s: a run to interrupt."""

import time

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ai_orchestrator.modeling.api import Measurement, ModelResult, ModelSpec


def predict(datasets, device, context):
    for step in range(40):
        time.sleep(0.1)
        context["checkpoint"]()
        if step % 10 == 0:
            context["progress"](30 + step, f"step {step} of 40")
    return ModelResult(measurements=(Measurement(codes.SCT.Volume, 1.0, Code("ml", "UCUM", "milliliter")),))


MODEL = ModelSpec(name="slow", version="1", algorithm=Code("SLOW", "99TEST", "Slow"),
                  applies_to={"Modality": "^MR$", "BodyPartExamined": "^SLOW$"}, predict=predict, prepare=list,
                  outputs=frozenset({"SR"}))

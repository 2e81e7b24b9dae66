"""Hangs in predict, without ever reaching a checkpoint, past its 3 s timeout."""

import time

from pydicom.sr.coding import Code

from ai_orchestrator.modeling.api import ModelSpec


def predict(datasets, device, context):
    time.sleep(3600)


MODEL = ModelSpec(name="hangs", version="1", algorithm=Code("HANGS", "99TEST", "Hangs"),
                  applies_to={"Modality": "^MR$", "BodyPartExamined": "^HANG$"}, predict=predict, prepare=list,
                  outputs=frozenset({"SR"}), timeout_s=3)

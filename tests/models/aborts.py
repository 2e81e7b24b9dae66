"""Aborts the model host from predict, as a crash in native code would (SIGABRT)."""

import os

from pydicom.sr.coding import Code

from ai_orchestrator.modeling.api import ModelSpec


def predict(datasets, device, context):
    os.abort()


MODEL = ModelSpec(name="aborts", version="1", algorithm=Code("ABORTS", "99TEST", "Aborts the host"),
                  applies_to={"Modality": "^MR$", "BodyPartExamined": "^ABORT$"}, predict=predict, prepare=list,
                  outputs=frozenset({"SR"}))

"""Allocates memory in predict, 64 MiB at a time, as a leaking model would; gives up by itself at 6 GiB."""

import time

import numpy as np
from pydicom.sr.coding import Code

from ai_orchestrator.modeling.api import ModelSpec

CHUNK = 64 * 2**20
GIVE_UP_AT = 6 * 2**30


def predict(datasets, device, context):
    held = []
    while len(held) * CHUNK < GIVE_UP_AT:
        held.append(np.ones(CHUNK, dtype=np.uint8))  # written, so resident
        time.sleep(0.01)
    raise MemoryError(f"held {len(held) * CHUNK / 2**30:.1f} GiB and nobody stopped it")


MODEL = ModelSpec(name="hogs-memory", version="1", algorithm=Code("HOGS", "99TEST", "Hogs memory"),
                  applies_to={"Modality": "^MR$", "BodyPartExamined": "^HOG$"}, predict=predict, prepare=list,
                  outputs=frozenset({"SR"}))

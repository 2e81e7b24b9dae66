"""Loaded by a bare Orthanc that bench/decode.py starts: times Orthanc's own decoder, called in-process.

POST /bench/decode with one DICOM instance as the body: Orthanc parses and decodes its first frame
(``orthanc.DecodeDicomImage``) and copies the pixels into a Python buffer, as a plugin would; the answer is the
seconds that took, measured inside Orthanc (no HTTP), or the decoder's error.
"""

import json
import time

import orthanc


def decode(output, uri, **request):
    start = time.perf_counter()
    try:
        image = orthanc.DecodeDicomImage(request["body"], 0)
        pixels = image.GetImageBuffer()
    except orthanc.OrthancException as error:
        output.AnswerBuffer(json.dumps({"error": str(error)}), "application/json")
        return
    answer = {"seconds": time.perf_counter() - start, "bytes": len(pixels),
              "format": str(image.GetImagePixelFormat())}
    output.AnswerBuffer(json.dumps(answer), "application/json")


orthanc.RegisterRestCallback("/bench/decode", decode)

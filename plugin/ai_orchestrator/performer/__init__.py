"""Task Performer (IHE AIW-I), in process: claims workitems of local models, reads their inputs from Orthanc,
runs the model, stores the results in the study and completes (or cancels) the workitem.

``worker`` drives a run, ``inputs`` reads the input series, ``publishing`` stores and forwards results,
``performed`` writes the attributes of a final state, ``timing`` measures the stages.
"""

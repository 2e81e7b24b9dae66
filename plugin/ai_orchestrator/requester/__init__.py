"""Task Requester (IHE AIW-I): a stable Orthanc study becomes UPS workitems, one per (study, algorithm).

``matching`` says which algorithms apply, ``building`` writes a new workitem, ``planning`` decides what to create,
update, replace or defer, ``intake`` drains the durable event queue, ``manual_run`` schedules a model by hand.
"""

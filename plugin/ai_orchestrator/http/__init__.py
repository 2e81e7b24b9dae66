"""REST adapters: plain ``Request``/``Response`` values and the UPS-RS workitems API (PS3.18 §11) over the service.
"""

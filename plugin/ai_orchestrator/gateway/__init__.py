"""Talking to Orthanc from plain Python: the gateway protocol and its typed errors, the HTTP gateway, and
read-only study snapshots. (The in-process gateway lives in the entry module, the only one importing ``orthanc``.)
"""

"""Models: the API model authors import (``api``), the registry of the models directory, and what runs models:
input volumes (``imaging``), TorchScript networks, slice batching and the torch device.
"""

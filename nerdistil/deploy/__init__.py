"""The deploy side: export, the in-graph decoder, the int8 recipe and gate, the torch-free runtime, the loader.

Nothing here imports torch, transformers or a teacher's toolkit at import time; only building a graph (``export``) and
loading a PyTorch model (``loader``) do, inside the functions that need them.
"""

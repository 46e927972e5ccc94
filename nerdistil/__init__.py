"""nerdistil: task-specific knowledge distillation of NER models for social-media text."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Tagger", "__version__"]


def __getattr__(name: str):
    if name == "Tagger":  # imported on first use: the runtime needs onnxruntime, never torch
        from nerdistil.deploy.runtime import Tagger

        return Tagger
    raise AttributeError(f"module 'nerdistil' has no attribute {name!r}")

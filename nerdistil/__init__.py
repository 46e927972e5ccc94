"""nerdistil: task-specific knowledge distillation of NER models for social-media text."""

__version__ = "0.1.0"

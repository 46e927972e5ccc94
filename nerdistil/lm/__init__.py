"""Language-model distillation, the sibling of the NER path: same losses, same training loop."""

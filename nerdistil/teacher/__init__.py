"""The Flair teacher: train or load a SequenceTagger and turn it into soft labels."""

"""The Flair BiLSTM-CRF teacher: model, embeddings, sentences and CRF-posterior labelling."""

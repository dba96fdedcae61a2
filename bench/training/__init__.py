"""Training overhead: the training flow against a plain script fitting the same model."""

"""Engine: checkpoints, model building, inference, evaluation (and training)."""

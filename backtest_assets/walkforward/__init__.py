"""Out-of-sample discipline for blueprints: folds, grid sweeps, overfitting statistics."""

"""Reports drawn from a run's records: the training charts."""

"""Training with Lightning: the module, callbacks, sampler, datasets, run state and ``train()``."""

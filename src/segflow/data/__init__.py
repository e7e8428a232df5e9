"""Training data: pairing and checks, normalisation, the validation split, patches and augmentation."""

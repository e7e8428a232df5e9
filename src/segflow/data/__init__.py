"""Training data: sources (folders, Zarr, HDF5, LMDB), pairing and checks, normalisation, the validation split, patches and augmentation."""

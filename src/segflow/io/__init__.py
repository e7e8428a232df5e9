"""Files: image readers and writers, atomic writes, and the run folder's every output name."""

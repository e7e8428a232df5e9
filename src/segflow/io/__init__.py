"""Files: image file formats, lazy arrays over stored ones, atomic writes, and the run folder's every output name."""

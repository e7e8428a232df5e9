"""Speed suite: segflow against plain MONAI / PyTorch on the same work, in the same run, on this machine.

    python bench/suite.py [--quick] [--only SECTION ...] [--isbi-checkpoint PATH] [--keep DIR] [--json FILE]

Prints one table. A row holds one figure for segflow and one for a baseline measured in this run, their
ratio (> 1: segflow is better, i.e. faster or smaller) and the noise of each figure, (max - min) / median
over its repeats (the figure is the median). The sections, in this order (bench/README.md; each module's
docstring says what it measures, and ``python -m bench.sections.NAME`` runs one alone):

- ``data`` (bench/sections/data.py): the data pipeline alone, train()'s loader against a plain one.
- ``train2d`` / ``train3d`` (train.py): the training step in each precision x layout, then whole epochs of
  ``segflow.training.train`` against a plain PyTorch loop.
- ``predict2d`` / ``predict3d`` (predict.py): every prediction path against plain and tuned MONAI
  ``sliding_window_inference``, then the issue's image sizes, one process per path for its peak RSS.
- ``isbi`` (isbi.py): ISBI 2012 test IoU of each prediction path, when a trained checkpoint is there.
- ``peak2d`` / ``peak3d`` (peak.py): the share of the fp32 and bf16 matmul peaks that segflow's training
  step and prediction reach.
- ``lazy`` (lazy.py): training data larger than RAM: an 8 GiB Zarr volume read patch by patch (patches/s and the
  process tree's peak RSS with 0 and 2 readers), Zarr and LMDB sources against the same data in memory.
- ``nuclei`` (nuclei.py): the peak memory of a whole ``segflow run`` on 531 small RGB images, against BiaPy's.
- ``chunked`` (chunked.py): volumes predicted chunk by chunk into Zarr on dask against the in-memory predictor, and
  a large volume's peak memory.
- ``ddp`` (ddp.py): training on 2 CPU processes (DDP, gloo) against 1 with the same global batch.
- ``export`` (export.py): the ONNX export on ONNX Runtime against segflow's own predictor on one image.

Other processes on the machine add noise to every figure; the ratios come from the same run, and the
round-robin measurements from the same minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: make ``bench`` importable

from bench.harness import main
from bench.sections import chunked, data, ddp, export, isbi, lazy, nuclei, peak, predict, train

SECTIONS = {**data.SECTIONS, **train.SECTIONS, **predict.SECTIONS, **isbi.SECTIONS, **peak.SECTIONS, **lazy.SECTIONS, **nuclei.SECTIONS, **chunked.SECTIONS, **ddp.SECTIONS, **export.SECTIONS}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])

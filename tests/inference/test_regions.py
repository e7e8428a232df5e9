"""Predicting one region (a chunk) of an image gives the whole image's prediction there: the same windows of the
whole image's grid, the same weights and normalisation, so chunks put together have no seam."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from segflow.inference.predictor import Predictor
from segflow.inference.windows import predict_windows


def _tiles(shape: tuple[int, ...], chunk: tuple[int, ...]) -> list[tuple[slice, ...]]:
    return [tuple(slice(a, min(a + c, n)) for a, c, n in zip(corner, chunk, shape))
            for corner in itertools.product(*(range(0, n, c) for n, c in zip(shape, chunk)))]  # fmt: skip


def _put_together(shape, chunk, predict_core) -> np.ndarray:
    out = None
    for core in _tiles(shape, chunk):
        part = predict_core(core)
        out = np.zeros((part.shape[0], *shape), np.float32) if out is None else out
        out[(slice(None), *core)] = part
    return out


@pytest.mark.parametrize(("shape", "patch", "chunk"), [((70, 90), (16, 24), (20, 25)), ((19, 40, 33), (8, 16, 16), (7, 12, 10))])
def test_an_identity_model_over_many_chunks_gives_the_whole_image_exactly(shape, patch, chunk) -> None:
    """A 'network' that returns its input, and one that mixes each window (its mean): the chunks, each predicted
    alone from the windows that touch it, are the whole prediction bit for bit, across every chunk border."""
    image = np.random.default_rng(0).random((*shape, 2), dtype=np.float32)
    overlap = [0.5] * len(shape)
    identity = predict_windows(image, lambda x: x, patch, overlap, batch_size=3)
    np.testing.assert_allclose(identity, np.moveaxis(image, -1, 0), rtol=1e-6)  # identity blended is identity
    for fn in (lambda x: x, lambda x: x * 0 + x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)):
        whole = predict_windows(image, fn, patch, overlap, batch_size=3)
        chunked = _put_together(shape, chunk, lambda core, fn=fn: predict_windows(image, fn, patch, overlap, 3, core=core))
        np.testing.assert_array_equal(chunked, whole)


def test_a_trained_model_predicts_the_same_by_chunks_as_whole(checkpoint) -> None:
    """A real network: the same labels, and probabilities within float rounding (a batch holds other windows)."""
    predictor = Predictor.from_checkpoint(checkpoint)
    image = (np.random.default_rng(1).random((100, 75)) * 255).astype(np.uint8)
    whole = predictor.predict(image, batch_size=4)
    stats = predictor.normalizer.stats(image[..., None])
    chunked = np.moveaxis(_put_together((100, 75), (40, 30), lambda core: np.moveaxis(
        predictor.predict(image, batch_size=4, core=core, stats=stats), -1, 0)), 0, -1)  # fmt: skip
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    np.testing.assert_array_equal(predictor.labels(chunked), predictor.labels(whole))


def test_a_chunk_reads_only_the_windows_that_touch_it() -> None:
    image = np.zeros((64, 64, 1), np.float32)
    seen: list[int] = []
    predict_windows(image, lambda x: seen.append(x.shape[0]) or x, (16, 16), [0.0, 0.0], 1, core=(slice(16, 32), slice(0, 16)))
    assert len(seen) == 1  # the one window of the 4x4 grid that covers rows 16-31, columns 0-15
    seen.clear()
    predict_windows(image, lambda x: seen.append(x.shape[0]) or x, (16, 16), [0.5, 0.5], 1, core=(slice(16, 32), slice(0, 16)))
    assert len(seen) == 3 * 2  # starts 8, 16, 24 along y touch it; 0, 8 along x

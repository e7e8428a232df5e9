"""Section ``nuclei``: the memory of a whole job on many small images (issue 12).

A synthetic stand-in for a 531-image RGB nuclei training set with the size mix of the Data Science Bowl 2018
images (9 sizes from 256x256 to 1040x1388, most of them small), plus 65 test images of the same mix, made by the
benchmark. ``segflow run`` runs BiaPy's 2D template on it, as a user would (patches 128x128x3, batches of 8: 60
steps an epoch, validation 10 %, the test phase), while the parent samples the memory of the job's whole process
tree every 0.2 s: the sum of the processes' PSS (each shared page counted once, split between its sharers) and of
their RSS (shared pages counted in every reader). Figures for BiaPy come from the issue (another machine): its
whole job peaked at 1.47 GB on the real set, segflow 0.1's at 2.58 GB.

    python -m bench.sections.nuclei [--quick]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
import yaml

from bench.harness import ROOT, Context, TreePeak, main, now

# The Data Science Bowl 2018 stage 1 training images by size (670 in all), scaled to the 531.
DSB_SIZES = {
    (256, 256): 334, (256, 320): 112, (520, 696): 92, (360, 360): 91, (1024, 1024): 16,
    (512, 640): 13, (603, 1272): 6, (260, 347): 5, (1040, 1388): 1,
}  # fmt: skip
N_TRAIN, N_TEST = 531, 65
BIAPY_GB = 1.47  # the measurement of BiaPy's whole job on the real set (another machine)


def sizes(n: int) -> list[tuple[int, int]]:
    """``n`` image sizes in DSB 2018's proportions (each size at least once), largest first."""
    total = sum(DSB_SIZES.values())
    counts = {s: max(1, round(c * n / total)) for s, c in DSB_SIZES.items()}
    small = (256, 256)
    counts[small] += n - sum(counts.values())
    return [s for s, c in sorted(counts.items(), key=lambda kv: -kv[0][0] * kv[0][1]) for _ in range(c)]


def nucleus_pair(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image ``(y, x, 3)`` of bright round nuclei on a dark background, tinted, and its 0/1 mask."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint8)
    for _ in range(max(4, shape[0] * shape[1] // 6000)):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(6, 16)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    gray = 30 + 150 * mask + rng.normal(0, 12, shape)
    tint = rng.uniform(0.6, 1.0, 3)
    return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8), mask


def make_nuclei(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    """``root/{train,test}/{x,y}/nNNNN.tif``: RGB images and their masks in DSB 2018's size mix."""
    if (root / "done").is_file():
        return root
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for sub in ("x", "y"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for k, shape in enumerate(sizes(n)):
            image, mask = nucleus_pair(shape, rng)
            tifffile.imwrite(root / split / "x" / f"n{k:04d}.tif", image, photometric="rgb")
            tifffile.imwrite(root / split / "y" / f"n{k:04d}.tif", mask)
    (root / "done").write_text("")
    return root


def config(data: Path, epochs: int, workers: int) -> dict:
    """BiaPy's 2D semantic-segmentation template with this data, 128x128x3 patches and batches of 8."""
    template = yaml.safe_load((ROOT / "bench" / "nuclei_template.yaml").read_text())
    template["SYSTEM"]["NUM_WORKERS"] = workers
    d = template["DATA"]
    d["TRAIN"].update(PATH=str(data / "train/x"), GT_PATH=str(data / "train/y"))
    d["TEST"].update(PATH=str(data / "test/x"), GT_PATH=str(data / "test/y"))
    template["TRAIN"]["EPOCHS"] = epochs
    return template


def run_job(cfg_path: Path, result_dir: Path, interval: float = 0.2) -> dict:
    """``segflow run`` of ``cfg_path`` in a process of its own; the peak PSS and RSS of its tree while it ran."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "segflow", "run", "--config", str(cfg_path), "--result_dir", str(result_dir), "--name", "nuclei"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    start = now()
    with TreePeak(proc.pid, interval) as peak:
        out = proc.communicate()[0]
    said = [line.strip() for line in out.splitlines() if line.startswith("Training on") or "IoU" in line]
    return {"code": proc.returncode, "seconds": now() - start, "pss": peak.pss, "rss": peak.rss, "tail": out.splitlines()[-3:], "said": said[:1] + said[-1:]}


def nuclei_section(ctx: Context) -> None:
    """The whole job with 0 reader processes and with the template's; peak memory of the process tree."""
    start = now()
    data = make_nuclei(ctx.work / "nuclei")
    made = now() - start
    images = sum(h * w * 3 for h, w in sizes(N_TRAIN))
    epochs = 1 if ctx.quick else 2
    ctx.table.section(
        f"memory of a whole job (segflow run: {epochs} epoch(s) of 60 steps of 8x128x128x3 patches, then the test phase on "
        f"{N_TEST} images) on {N_TRAIN} synthetic RGB images in DSB 2018's size mix ({images / 2**20:.0f} MiB as uint8, made in "
        f"{made:.0f} s); peak PSS of the process tree, sampled every 0.2 s; baseline column: BiaPy's whole job on the real "
        f"set, {BIAPY_GB} GB, from the issue (another machine, not this run)"
    )
    for workers in (0, 2):
        path = ctx.work / f"nuclei{workers}.yaml"
        path.write_text(yaml.safe_dump(config(data, epochs, workers)))
        results = ctx.work / f"nuclei-res{workers}"
        shutil.rmtree(results, ignore_errors=True)  # a finished run would not train again (--keep)
        r = run_job(path, results)
        if r["code"] != 0:
            print(f"  ! nuclei job with {workers} readers failed: {' | '.join(r['tail'])}", flush=True)
            continue
        print(f"  nuclei job, {workers} readers: {r['seconds']:.0f} s; {' / '.join(r['said'])}", flush=True)
        label = f"peak MB (PSS) of the job's process tree, {workers} reader process(es) (RSS sum {r['rss'] * 2**20 / 1e6:.0f} MB; {r['seconds']:.0f} s)"
        ctx.table.row(label, r["pss"] * 2**20 / 1e6, BIAPY_GB * 1000, "{:.0f}", higher_better=False)


SECTIONS = {"nuclei": nuclei_section}

if __name__ == "__main__":
    main(SECTIONS, __doc__.splitlines()[0])

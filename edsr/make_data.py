"""Synthetic climate images in the EDSR layout, JPEG-compressed into their LR twins.

    python -m edsr.make_data --out data/edsr --rows 312 --cols 640 --train 64 --val 8 --test 8 \
        [--quality 10] [--depth 1]
    python -m edsr.make_data --demo data/edsr-demo

HR images are smooth fields with a red spectrum (power ~ k^-3.5, like a large-scale climate
variable) plus land masks whose sharp coastlines are where JPEG rings. LR is the same image saved
as JPEG at a very low quality and decoded back, stored as PNG. Layout as the seed's data set:
<out>/{train,val,test}/{HR,LR}/<id>.png; train ids run from 1, test ids have gaps; list.txt in
train/ and test/.
"""
import argparse
import io
import os

import numpy as np
from PIL import Image

from common.demo import write_once
from common.fields import red_field

DEMO = dict(rows=78, cols=160, train=48, val=8, test=8, quality=10, depth=1, seed=0)


def climate_image(rng, rows, cols, depth=1):
    """uint8 (rows, cols, depth): smooth fields, brighter land with sharp coastlines."""
    channels = []
    land = red_field(rng, rows, cols, slope=4.0) > 0.3
    for _ in range(depth):
        field = 0.5 + 0.12 * red_field(rng, rows, cols) + 0.04 * red_field(rng, rows, cols, 2.0)
        field = np.where(land, field + 0.25, field)
        channels.append(np.clip(field * 255.0, 0, 255))
    return np.stack(channels, axis=-1).astype(np.uint8)


def jpeg_twin(image, quality):
    """The image after a JPEG round trip at `quality`."""
    mode = "L" if image.shape[-1] == 1 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if mode == "L" else image, mode).save(
        buffer, "JPEG", quality=quality)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert(mode))
    return decoded.reshape(image.shape)


def split_ids(train, val, test, rng):
    """Train 1..n contiguous, val following, test ids drawn with gaps after those."""
    start = train + val + 1
    test_ids = np.sort(rng.choice(np.arange(start, start + 3 * test), test, replace=False))
    return {"train": list(range(1, train + 1)), "val": list(range(train + 1, start)),
            "test": [int(i) for i in test_ids]}


def write_dataset(out, rows, cols, train, val, test, quality=10, depth=1, seed=0):
    rng = np.random.default_rng(seed)
    for split, ids in split_ids(train, val, test, rng).items():
        for sub in ("HR", "LR"):
            os.makedirs(os.path.join(out, split, sub), exist_ok=True)
        for image_id in ids:
            hr = climate_image(rng, rows, cols, depth)
            for sub, image in (("HR", hr), ("LR", jpeg_twin(hr, quality))):
                pixels = image[..., 0] if depth == 1 else image
                Image.fromarray(pixels).save(os.path.join(out, split, sub, f"{image_id}.png"))
        if split in ("train", "test"):
            with open(os.path.join(out, split, "list.txt"), "w") as f:
                f.write("".join(f"{i}\n" for i in ids))


def write_demo(out):
    """The data configs/demo.yaml reads; skipped when a previous call completed."""
    print(f"synthetic {DEMO['cols']}x{DEMO['rows']} image pairs in {out}")
    write_once(out, lambda path: write_dataset(path, **DEMO))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", metavar="OUT", help="write the demo's data set to OUT")
    p.add_argument("--out")
    p.add_argument("--rows", type=int, default=312)
    p.add_argument("--cols", type=int, default=640)
    p.add_argument("--train", type=int, default=64)
    p.add_argument("--val", type=int, default=8)
    p.add_argument("--test", type=int, default=8)
    p.add_argument("--quality", type=int, default=10, help="JPEG quality of the LR images")
    p.add_argument("--depth", type=int, choices=(1, 3), default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.demo:
        return write_demo(a.demo)
    if not a.out:
        p.error("--out (or --demo) is required")
    write_dataset(a.out, a.rows, a.cols, a.train, a.val, a.test, a.quality, a.depth, a.seed)
    print(f"wrote {a.train}+{a.val}+{a.test} image pairs to {a.out}")


if __name__ == "__main__":
    main()

"""EDSR input: pairs of JPEG-compressed (LR) and original (HR) climate images of equal size.

Layout: <root>/{train,val,test}/{HR,LR}/<id>.png, with list.txt (one id per line) in train/ and
test/. A missing list.txt is written once, by rank 0 and atomically, from the HR folder; rank 0
reads the ids and broadcasts them. Every image is decoded once and kept in memory as uint8; each epoch
draws random aligned crops (the same window of LR and HR) from them, reproducibly from the run's
seed, the epoch and the crop's number, whatever the rank count. Validation and test use full
images. The label carries the JPEG input next to the target (channels [HR, LR]) so that the
input's own PSNR, the baseline, is reduced across ranks like every other metric.
"""
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from common.data import ShardedDataset
from common.distributed import World
from common.faults import fault_point
from common.staging import SplitFiles, stage_inputs

LISTED_SPLITS = ("train", "test")  # the splits that carry a list.txt
MODES = {1: ("L",), 3: ("RGB",)}


def natural_key(name):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def split_ids(root, split, world=None):
    """Image ids of a split: list.txt (written by rank 0 of `world` when missing) or the HR
    folder. Without a world nothing is written. With one, rank 0 alone looks at the folder and
    broadcasts the ids: a rank deciding for itself whether list.txt exists yet could skip the
    collective that rank 0 waits in."""
    folder = os.path.join(root, split)
    hr = os.path.join(folder, "HR")
    listing = os.path.join(folder, "list.txt")
    fault_point("edsr.list_ids")
    if world is None or split not in LISTED_SPLITS:
        return read_ids(hr, listing)
    result = None
    if world.is_root:
        try:
            if os.path.isdir(hr) and not os.path.exists(listing):
                write_list(hr, listing)
            result = {"ids": read_ids(hr, listing)}
        except (OSError, ValueError) as err:
            result = {"error": str(err), "missing": isinstance(err, FileNotFoundError)}
    result = world.broadcast_object(result)
    if "error" in result:
        raise (FileNotFoundError if result["missing"] else ValueError)(result["error"])
    return result["ids"]


def read_ids(hr, listing):
    """The ids in `listing` when it exists, else the HR folder's."""
    if not os.path.isdir(hr):
        folder = os.path.dirname(hr)
        raise FileNotFoundError(f"{hr}: missing; expected {folder}/HR and {folder}/LR")
    if os.path.exists(listing):
        with open(listing) as f:
            ids = [line.strip() for line in f if line.strip()]
        if not ids:
            raise ValueError(f"{listing}: lists no image ids")
        return ids
    return hr_ids(hr)


def hr_ids(hr):
    ids = sorted((os.path.splitext(n)[0] for n in os.listdir(hr) if n.endswith(".png")),
                 key=natural_key)
    if not ids:
        raise FileNotFoundError(f"{hr}: no .png images")
    return ids


def write_list(hr, listing):
    ids = hr_ids(hr)
    tmp = f"{listing}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("\n".join(ids) + "\n")
    os.replace(tmp, listing)  # readers never see half a file


def read_png(path, depth):
    """(H, W, depth) uint8; the file is named in every error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing")
    try:
        with Image.open(path) as image:
            image.load()
            mode, pixels = image.mode, np.asarray(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot decode as PNG ({err})") from None
    if mode not in MODES[depth]:
        raise ValueError(f"{path}: image mode {mode} ({1 if pixels.ndim == 2 else pixels.shape[-1]}"
                         f" channel(s)) does not match data.depth {depth}")
    return pixels.reshape(pixels.shape[:2] + (depth,)).astype(np.uint8)


def image_files(data_cfg, split, ids):
    """The HR and LR image of each id, interleaved: [HR, LR, HR, LR, ...]."""
    folder = os.path.join(data_cfg["root"], split)
    return [os.path.join(folder, kind, f"{image_id}.png") for image_id in ids
            for kind in ("HR", "LR")]


def load_pairs(data_cfg, split, ids, files=None):
    """(lr, hr) uint8 arrays (N, H, W, depth); sizes checked against each other and the config.
    `files` (in image_files order) are the paths to read when not the sources, e.g. staged."""
    files = files or image_files(data_cfg, split, ids)
    want = (data_cfg["num_rows"], data_cfg["num_cols"])
    lrs, hrs = [], []
    for hr_path, lr_path in zip(files[0::2], files[1::2]):
        if not os.path.isfile(lr_path):
            raise FileNotFoundError(f"{lr_path}: missing; it is the LR image of {hr_path}")
        hr, lr = read_png(hr_path, data_cfg["depth"]), read_png(lr_path, data_cfg["depth"])
        if hr.shape[:2] != want:
            raise ValueError(f"{hr_path}: {hr.shape[1]}x{hr.shape[0]} pixels, expected "
                             f"data.num_cols x data.num_rows = {want[1]}x{want[0]}")
        if lr.shape != hr.shape:
            raise ValueError(f"{lr_path}: {lr.shape[1]}x{lr.shape[0]} pixels, but its HR image "
                             f"{hr_path} is {hr.shape[1]}x{hr.shape[0]}")
        lrs.append(lr)
        hrs.append(hr)
    return np.stack(lrs), np.stack(hrs)


def first(ids, limit):
    return ids if limit is None else ids[:int(limit)]


def staged_pairs(data_cfg, world, ids):
    """{split: ids} -> {split: (lr, hr)}, read from data.stage_dir when it is set. Every rank
    decodes every image of a split, so a node stages them all, whatever data.shuffle says."""
    files = {split: SplitFiles(image_files(data_cfg, split, names))
             for split, names in ids.items()}
    located = stage_inputs(data_cfg, world, files)
    return {split: load_pairs(data_cfg, split, names, located[split])
            for split, names in ids.items()}


def make_datasets(data_cfg, local_batch, world=None, seed=0):
    """(train crops, validation full images) ShardedDatasets of (x, y=[HR, LR], weight) for this
    rank of `world` (default: a world of one)."""
    world = world or World()
    crop = data_cfg["crop"]
    if crop > min(data_cfg["num_rows"], data_cfg["num_cols"]):
        raise ValueError(f"data.crop {crop} is larger than the {data_cfg['num_cols']}x"
                         f"{data_cfg['num_rows']} images")
    ids = {split: first(split_ids(data_cfg["root"], split, world), data_cfg[limit])
           for split, limit in (("train", "max_train"), ("val", "max_val"))}
    pairs = staged_pairs(data_cfg, world, ids)
    lr, hr = pairs["train"]
    train = ShardedDataset(np.arange(len(ids["train"]) * data_cfg["crops_per_image"]),
                           crop_loader(lr, hr, crop, data_cfg["crops_per_image"]), local_batch,
                           world.rank, world.size, training=True, seed=seed, name="edsr train",
                           seeded_load=True, shuffle=data_cfg.get("shuffle", "global"))
    return train, full_images(data_cfg, "val", world, pairs=pairs["val"])


def full_images(data_cfg, split, world, limit=None, pairs=None):
    """Every full image of `split` once (padded shards), in batches of data.eval_batch.
    `pairs`: the split's (lr, hr) when already loaded."""
    if pairs is None:
        ids = first(split_ids(data_cfg["root"], split, world), limit)
        pairs = staged_pairs(data_cfg, world, {split: ids})[split]
    lr, hr = (tf.Variable(a, trainable=False) for a in pairs)

    def load(index):
        return tf.cast(lr[index], tf.float32), tf.cast(tf.concat([hr[index], lr[index]], -1),
                                                        tf.float32)
    return ShardedDataset(np.arange(len(pairs[0])), load, data_cfg["eval_batch"], world.rank,
                          world.size, training=False, name=f"edsr {split}")


def crop_loader(lr, hr, crop, crops_per_image):
    """key -> an aligned random crop of image key // crops_per_image, placed by the key's seed."""
    rows, cols = lr.shape[1:3]
    lr = tf.Variable(lr, trainable=False)  # variables: large images stay out of the data graph
    hr = tf.Variable(hr, trainable=False)

    def load(key, seed):
        index = key // crops_per_image
        corner = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int64.max,
                                             dtype=tf.int64) % [rows - crop + 1, cols - crop + 1]
        top, left = corner[0], corner[1]
        x = lr[index, top:top + crop, left:left + crop]
        y = hr[index, top:top + crop, left:left + crop]
        return tf.cast(x, tf.float32), tf.cast(tf.concat([y, x], -1), tf.float32)
    return load

"""data.stage_dir: copy the input files a node reads to node-local storage before training.

The ranks of a node share the copying; GZIP files are decompressed on the way when the reader
asks for it, so that training reads plain files. Every rank runs the same collectives (two
allgathers of a few numbers) whatever happens, and an error anywhere stops every rank with the
same message. File lists, which can run to 10^5 files per node, pass between a node's ranks
through files in the stage itself: the stage must be node-local (or at least per node).

A manifest in the stage records each staged file (source, size, mtime, staged size, whether it
was decompressed) and a complete flag written last: a later job reuses what is complete and
current, and redoes a stage that was cut short or whose sources changed.
"""
import gzip
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from common.config import with_defaults
from common.data import positions_read

MANIFEST = "manifest.json"
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class SplitFiles:
    """The source files of one split and which of them each sample key reads."""
    paths: list
    key_files: list = None  # per key, indices into paths; None: every rank reads every file
    training: bool = True
    gunzip: bool = False    # GZIP files are staged decompressed


class StagingError(RuntimeError):
    pass


def stage_inputs(data_cfg, world, splits, seed=0):
    """{split: SplitFiles} -> {split: paths to read}, in the same order. With data.stage_dir set,
    the files this node reads point into the stage; files it never reads keep their source."""
    data_cfg = with_defaults(data_cfg, "data")
    if not data_cfg["stage_dir"]:
        return {name: list(split.paths) for name, split in splits.items()}
    start = time.perf_counter()
    root, stage_root = stage_folder(data_cfg)
    node, me = node_ranks(world)
    wanted = files_read(splits, root, node, world.size, data_cfg["shuffle"], seed)
    leader, plan_file = node[0], os.path.join(stage_root, f".plan-{node[0]}.json")
    status, keep = {}, None
    if me == leader:
        status = plan_stage(stage_root, root, wanted, plan_file)
        keep = status.pop("keep", None)
    planned = gather_or_raise(world, status)
    copied = gather_or_raise(world, copy_share(plan_file, node.index(me), len(node),
                                               os.path.join(stage_root, f".done-{me}.json")))
    if me == leader:
        finish_manifest(stage_root, root, keep, node, plan_file)
    log_summary(stage_root, planned, copied, time.perf_counter() - start)
    return {name: [os.path.join(stage_root, wanted[p]["staged"]) if p in wanted else p
                   for p in split.paths] for name, split in splits.items()}


def stage_folder(data_cfg):
    """(source root, its folder in the stage): one folder per data root, so that the stages of a
    multi-resolution plan, or two datasets, never overwrite each other's files."""
    root = os.path.abspath(data_cfg["root"])
    tag = hashlib.sha1(root.encode()).hexdigest()[:8]
    return root, os.path.join(data_cfg["stage_dir"], f"{os.path.basename(root)}-{tag}")


def node_ranks(world):
    """(ranks on this node in rank order, this rank)."""
    if not world.parallel:
        return [world.rank], world.rank
    hosts = world.allgather_object(socket.gethostname())
    return [r for r, host in enumerate(hosts) if host == hosts[world.rank]], world.rank


def files_read(splits, root, node, size, shuffle, seed):
    """{path as listed: {source, staged name, gunzip}} of every file the node's ranks read."""
    wanted = {}
    for split in splits.values():
        if split.key_files is None:
            indices = range(len(split.paths))
        else:
            keys = positions_read(len(split.key_files), node, size, split.training, shuffle, seed)
            indices = sorted({int(i) for k in keys for i in np.atleast_1d(split.key_files[k])})
        for i in indices:
            source = os.path.abspath(split.paths[i])
            wanted[split.paths[i]] = {"source": source, "staged": staged_name(source, root),
                                      "gunzip": split.gunzip}
    return wanted


def staged_name(source, root):
    rel = os.path.relpath(source, root)
    if rel.startswith(".."):  # outside the data root: a flat, unique name
        rel = os.path.join("_outside", hashlib.sha1(source.encode()).hexdigest()[:8] + "-" +
                           os.path.basename(source))
    return rel


def plan_stage(stage_root, root, wanted, plan_file):
    """Run by one rank per node: checks that the stage is writable and has room, writes the
    files to copy to `plan_file` and returns the staged entries to keep, or {"error": text}."""
    try:
        check_writable(stage_root)
        keep = reusable_entries(stage_root)
        copy, need = [], 0
        for item in wanted.values():
            try:
                stat = os.stat(item["source"])
            except OSError as e:
                raise StagingError(f"{item['source']}: cannot stage: {e.strerror}") from None
            item.update(size=stat.st_size, mtime=stat.st_mtime)
            entry = keep.get(item["staged"])
            if entry and is_current(stage_root, entry, item):
                continue
            keep.pop(item["staged"], None)
            item["dest"] = os.path.join(stage_root, item["staged"])
            need += staged_size(item) - (os.path.getsize(item["dest"])
                                         if os.path.isfile(item["dest"]) else 0)
            copy.append(item)
        free = shutil.disk_usage(stage_root).free
        if need > free:
            raise StagingError(
                f"data.stage_dir {stage_root}: not enough space to stage {len(copy)} files: "
                f"they need {human(need)} ({need} bytes), {human(free)} ({free} bytes) free")
        if copy:  # a stage cut short from here on is redone by the next job
            write_manifest(stage_root, root, keep, complete=False)
        write_json(plan_file, copy)
        return {"keep": keep, "reused": len(wanted) - len(copy)}
    except (StagingError, OSError) as e:
        return {"error": str(e)}


def check_writable(stage_root):
    try:
        os.makedirs(stage_root, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=stage_root, prefix=".probe-"):
            pass
    except OSError as e:
        raise StagingError(f"data.stage_dir {stage_root}: not writable "
                           f"({e.strerror or e})") from None


def reusable_entries(stage_root):
    """Entries of a complete manifest; none when it is missing, unreadable or incomplete."""
    try:
        with open(os.path.join(stage_root, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return {}
    return dict(manifest.get("files", {})) if manifest.get("complete") is True else {}


def is_current(stage_root, entry, item):
    dest = os.path.join(stage_root, entry["staged"])
    return (entry["source"] == item["source"] and entry["size"] == item["size"] and
            entry["mtime"] == item["mtime"] and entry["gunzip"] == item["gunzip"] and
            os.path.isfile(dest) and os.path.getsize(dest) == entry["staged_size"])


def is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def staged_size(item):
    """Bytes the staged copy takes: a GZIP file's trailer holds its size decompressed (mod 4 GiB,
    ample for one sample per file)."""
    if not (item["gunzip"] and is_gzip(item["source"])):
        return item["size"]
    with open(item["source"], "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def copy_share(plan_file, share, shares, done_file):
    """Copy (or decompress) this rank's share of the node's plan, write its manifest entries to
    `done_file`; returns {"files", "bytes"} or {"error": text}."""
    try:
        items = read_json(plan_file)[share::shares]
    except (OSError, ValueError) as e:
        return {"error": f"{plan_file}: cannot read the node's staging plan: {e}"}
    entries = []
    for item in items:
        try:
            os.makedirs(os.path.dirname(item["dest"]), exist_ok=True)
            decompress = item["gunzip"] and is_gzip(item["source"])
            fd, part = tempfile.mkstemp(dir=os.path.dirname(item["dest"]), prefix=".part-")
            with (gzip.open if decompress else open)(item["source"], "rb") as src, \
                    os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
            os.replace(part, item["dest"])  # a file under its final name is whole
        except (OSError, EOFError) as e:
            return {"error": f"staging {item['source']} to {item['dest']} failed: {e}"}
        entries.append({k: item[k] for k in ("staged", "source", "size", "mtime", "gunzip")} |
                       {"staged_size": os.path.getsize(item["dest"]), "decompressed": decompress})
    try:
        write_json(done_file, entries)
    except OSError as e:
        return {"error": f"{done_file}: cannot write: {e}"}
    return {"files": len(entries), "bytes": sum(e["staged_size"] for e in entries)}


def finish_manifest(stage_root, root, keep, node, plan_file):
    """The node's manifest, complete: the entries kept plus those its ranks copied."""
    files = dict(keep)
    for rank in node:
        done_file = os.path.join(stage_root, f".done-{rank}.json")
        files.update((entry["staged"], entry) for entry in read_json(done_file))
        os.remove(done_file)
    os.remove(plan_file)
    write_manifest(stage_root, root, files, complete=True)


def gather_or_raise(world, result):
    """{rank: result} of every rank; if any rank reports an error, every rank raises it."""
    gathered = world.allgather_object(result)
    results = dict(zip(range(world.size) if world.parallel else [world.rank], gathered))
    errors = [(rank, r["error"]) for rank, r in results.items()
              if isinstance(r, dict) and "error" in r]
    if errors:
        where = f" (rank {errors[0][0]})" if world.parallel else ""
        raise StagingError(errors[0][1] + where)
    return results


def write_manifest(stage_root, root, files, complete):
    # complete comes last in the file, and the file is replaced whole
    write_json(os.path.join(stage_root, MANIFEST),
               {"source_root": root, "files": files, "complete": complete})


def write_json(path, value):
    part = path + ".part"
    with open(part, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(part, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def log_summary(stage_root, planned, copied, seconds):
    """Totals over every node, on rank 0."""
    nodes = [plan for plan in planned.values() if plan]
    files = sum(result["files"] for result in copied.values())
    size = sum(result["bytes"] for result in copied.values())
    logging.getLogger("train").info(
        f"staged {files} files ({human(size)}) to {stage_root} in {seconds:.1f} s on "
        f"{len(nodes)} node(s); reused {sum(plan['reused'] for plan in nodes)} staged earlier")


def human(size):
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000

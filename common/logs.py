"""Rank-0 console logging and the per-epoch metrics file (JSONL or CSV) that plots read."""
import csv
import json
import logging
import os
import sys


def get_logger(world, name="train"):
    """INFO on rank 0, warnings and errors only elsewhere, each line tagged with the rank."""
    logger = logging.getLogger(name)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    tag = f"[{world.rank}/{world.size}] " if world.size > 1 else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s {tag}%(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if world.is_root else logging.WARNING)
    logger.propagate = False
    return logger


class MetricsLog:
    """Appends one record per epoch; on resume drops records past the restored position."""

    def __init__(self, path, fmt):
        self.path, self.fmt = path, fmt

    def read(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            if self.fmt == "jsonl":
                return [json.loads(line) for line in f if line.strip()]
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def truncate_after(self, stage, epoch):
        kept = [r for r in self.read() if (r["stage"], r["epoch"]) <= (stage, epoch)]
        if os.path.exists(self.path):
            os.remove(self.path)
        for record in kept:
            self.append(record)

    def append(self, record):
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            if self.fmt == "jsonl":
                f.write(json.dumps(record) + "\n")
                return
            writer = csv.DictWriter(f, fieldnames=list(record))
            if new:
                writer.writeheader()
            writer.writerow(record)


def _number(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text

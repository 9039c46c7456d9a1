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
    """Appends one record per epoch (flushed to disk); on resume drops the records past the
    restored position. A torn last line (a kill mid-append) is dropped on reading."""

    def __init__(self, path, fmt):
        self.path, self.fmt = path, fmt

    def read(self):
        if not os.path.exists(self.path):
            return []
        try:
            with open(self.path, newline="") as f:
                text = f.read()
        except OSError as err:
            raise OSError(f"{self.path}: cannot read ({err})") from None
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()  # torn: the append that wrote it was cut short
        if self.fmt == "jsonl":
            return [self._json(line, number) for number, line in enumerate(lines, 1)
                    if line.strip()]
        rows = list(csv.DictReader(lines))
        if any(None in row.values() or None in row for row in rows):
            raise ValueError(f"{self.path}: a row does not match the header")
        return [{k: _number(v) for k, v in row.items()} for row in rows]

    def _json(self, line, number):
        try:
            return json.loads(line)
        except ValueError as err:
            raise ValueError(f"{self.path}: line {number} is not JSON ({err})") from None

    def truncate_after(self, stage, epoch):
        """Keep the records up to (stage, epoch); the file is replaced whole, so a kill leaves
        either the old or the new one."""
        if not os.path.exists(self.path):
            return
        kept = [r for r in self.read() if (r["stage"], r["epoch"]) <= (stage, epoch)]
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", newline="") as f:
            self._write(f, kept, header=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def append(self, record):
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        with open(self.path, "a", newline="") as f:
            self._write(f, [record], header=new)
            f.flush()
            os.fsync(f.fileno())

    def _write(self, f, records, header):
        if self.fmt == "jsonl":
            f.writelines(json.dumps(record) + "\n" for record in records)
            return
        if not records:
            return
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        if header:
            writer.writeheader()
        writer.writerows(records)


def _number(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text

"""How far gradient averaging overlaps the backward pass, read from a Horovod timeline (config
`horovod.timeline`, written by rank 0 under the output folder):

    python -m benchmarks.overlap runs/out/timeline.json [--skip 2]

Every gradient bucket (common.grad_buckets) is one named grouped allreduce; Horovod writes when
rank 0 enqueued it (the start of its NEGOTIATE_ALLREDUCE) and when its ALLREDUCE ran. The last
bucket holds the first layers' gradients, the last ones the backward pass computes: its enqueue
marks the end of the backward pass. Per step, the window from the earliest enqueue to the last
bucket's is the time communication can run behind the backward pass; as a fraction of the
step (from one step's first enqueue to the next's) it is the overlappable fraction that the
scaling model (benchmarks/scaling_model.py) takes. Analyse a run of one stage: steps are matched by
the order of each bucket's allreduces.
"""
import argparse
import json
import re
import statistics

from common.grad_buckets import BUCKET_NAME

_BUCKET = re.compile(r"^(.*?)" + re.escape(BUCKET_NAME) + r"(\d+)_")  # scope, bucket


def load_events(path):
    with open(path) as f:
        return json.load(f)


def start_epoch_us(events):
    """Wall-clock time (microseconds since the epoch) of the timeline's ts 0."""
    for e in events:
        if e.get("ph") == "M" and "start_time_since_epoch_in_micros" in e.get("args", {}):
            return e["args"]["start_time_since_epoch_in_micros"]
    raise ValueError("no start_time_since_epoch_in_micros in the timeline")


def tensor_spans(events):
    """tensor name -> [(phase name, start us, end us)] of its B/E pairs, in time order."""
    names, open_spans, spans = {}, {}, {}
    for e in events:
        ph, pid = e.get("ph"), e.get("pid")
        if ph == "M" and e.get("name") == "process_name" and "name" in e.get("args", {}):
            names[pid] = e["args"]["name"]
        elif ph == "B":
            open_spans.setdefault(pid, []).append((e["name"], e["ts"]))
        elif ph == "E" and open_spans.get(pid):
            name, start = open_spans[pid].pop()
            spans.setdefault(names.get(pid, str(pid)), []).append((name, start, e["ts"]))
    return spans


def bucket_steps(events, scope=""):
    """[[(enqueue us, allreduce start us, allreduce end us) per bucket] per step] of the
    gradient buckets under name scope `scope` (the training step's: none); each tensor's k-th
    allreduce belongs to step k."""
    per_bucket, scopes = {}, set()
    for name, spans in tensor_spans(events).items():
        match = _BUCKET.match(name)
        if match:
            scopes.add(match.group(1))
        if not match or match.group(1) != scope:
            continue
        enqueued = [s for phase, s, _ in spans if phase.startswith("NEGOTIATE")]
        reduced = [(s, e) for phase, s, e in spans if phase == "ALLREDUCE"]
        per_bucket.setdefault(int(match.group(2)), []).append((enqueued, reduced))
    if not per_bucket:
        raise ValueError(f"no '{scope}{BUCKET_NAME}*' allreduce in the timeline (scopes found: "
                         f"{sorted(scopes)}): was it written by a training run on more than "
                         "one rank?")
    for b, tensors in per_bucket.items():  # Horovod may log a group's negotiation once
        most = max(len(en) for en, _ in tensors)
        per_bucket[b] = [(en, re_) for en, re_ in tensors if len(en) == most]
    steps = min(min(len(en), len(re_)) for tensors in per_bucket.values()
                for en, re_ in tensors)
    return [[(min(en[k] for en, _ in per_bucket[b]),
              min(re_[k][0] for _, re_ in per_bucket[b]),
              max(re_[k][1] for _, re_ in per_bucket[b])) for b in sorted(per_bucket)]
            for k in range(steps)]


def _first(step):
    """The earliest enqueue of a step's buckets: TensorFlow's executor may hold a ready bucket
    back behind the backward pass (seen for bucket 0 on one inter-op thread), so it is not
    always bucket 0's."""
    return min(bucket[0] for bucket in step)


def overlap_report(events, skip=2, scope=""):
    """Medians over the steps after the first `skip` (tracing, Horovod's cache warming up):
    per bucket its enqueue after the step's first enqueue and before the backward pass ended
    (the last bucket's enqueue), its allreduce time and how much of it ran before that end; the step
    time and the overlappable fraction of the step."""
    steps = bucket_steps(events, scope)
    if len(steps) < skip + 2:
        raise ValueError(f"{len(steps)} steps in the timeline: need at least {skip + 2}")
    used = steps[skip:]
    periods = [_first(b) - _first(a) for a, b in zip(used, used[1:])]
    period = statistics.median(periods)
    used = used[:-1]  # the step each period follows
    buckets = []
    for b in range(len(used[0])):
        rows = [(step[b][0] - _first(step), step[-1][0] - step[b][0], step[b][2] - step[b][1],
                 max(0, min(step[b][2], step[-1][0]) - step[b][1])) for step in used]
        buckets.append({key: statistics.median(r[i] for r in rows) / 1e3 for i, key in enumerate(
            ("enqueued_ms", "ahead_of_backward_end_ms", "allreduce_ms", "hidden_ms"))})
    windows = [step[-1][0] - _first(step) for step in used]
    return {"steps": len(used), "step_ms": period / 1e3, "buckets": buckets,
            "window_ms": statistics.median(windows) / 1e3,
            "overlappable_fraction": statistics.median(w / period for w in windows),
            "hidden_fraction": sum(b["hidden_ms"] for b in buckets) /
            max(sum(b["allreduce_ms"] for b in buckets), 1e-9)}


def print_report(title, r):
    print(f"{title}: {len(r['buckets'])} gradient bucket(s), {r['steps']} steps, step "
          f"{r['step_ms']:.1f} ms (medians)")
    print(f"  {'bucket':>6s} {'enqueued ms':>12s} {'before backward end ms':>23s} "
          f"{'allreduce ms':>13s} {'of it hidden ms':>16s}")
    for i, b in enumerate(r["buckets"]):
        print(f"  {i:6d} {b['enqueued_ms']:12.2f} {b['ahead_of_backward_end_ms']:23.2f} "
              f"{b['allreduce_ms']:13.2f} {b['hidden_ms']:16.2f}")
    print(f"  overlappable: {r['window_ms']:.1f} ms of the step, fraction "
          f"{r['overlappable_fraction']:.3f}; allreduce time hidden behind the backward pass: "
          f"{r['hidden_fraction']:.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("timeline", nargs="+", help="timeline JSON file(s) of training runs")
    p.add_argument("--skip", type=int, default=2, help="first steps left out")
    p.add_argument("--scope", default="", help="name scope of the buckets (default: none)")
    args = p.parse_args(argv)
    for path in args.timeline:
        print_report(path, overlap_report(load_events(path), args.skip, args.scope))


if __name__ == "__main__":
    main()

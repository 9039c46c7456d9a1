"""Measurement tools: no training run imports them (training needs only common/ and its app).

    bench.py          what every app's benchmark shares: round-robin rates, medians, spreads
    epoch_bench.py    step settings over whole Trainer epochs (python -m benchmarks.epoch_bench)
    scaling.py        1 vs 2 ranks and one allreduce (python scripts/benchmark.py --scaling)
    scaling_model.py  predicted efficiency on a GPU cluster (scripts/benchmark.py --model-scaling)
    bucket_bench.py   gradient averaging variants per step (python -m benchmarks.bucket_bench)
    overlap.py        how far gradient buckets overlap the backward pass, from a Horovod timeline

An app's own benchmark (its throughput tables, the reference it is compared with) lives in its
package as its `benchmark` hook (common/apps.py): python scripts/benchmark.py --app APP.
"""

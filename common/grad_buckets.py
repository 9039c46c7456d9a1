"""Gradient averaging in buckets that start while the backward pass still runs.

The backward pass produces gradients roughly in reverse order of `model.trainable_variables`
(the last layers first). Cutting that order into buckets of about `bucket_bytes` and averaging
each bucket in its own Horovod grouped allreduce lets a bucket's allreduce start as soon as its
own gradients exist: in a traced step an op waits only for its inputs. One bucket
(`bucket_bytes` 0) waits for the last gradient: no overlap, but one op and one message.

On a CPU rank bound to one core, "as soon as" needs a second inter-op thread. TensorFlow's
executor runs an op that becomes ready on the thread that readied it only when it is cheap or the
thread has nothing else to run; a Horovod allreduce is an asynchronous kernel, which counts as
expensive on the CPU, so while the backward chain goes on it is handed to the inter-op pool.
mpiexec binds each rank to one core, TensorFlow then sizes that pool at one thread, and that
thread is the one running the backward chain: every bucket is enqueued at the end of the
backward pass (the Horovod timeline on 2 ranks shows all of them within microseconds of the
last). `TF_NUM_INTEROP_THREADS=2` gives the pool its second thread and the buckets their
overlap; it is not the default because the extra thread competes for the rank's one core (the
EDSR demo's 2-rank step under Eigen's kernels went from 284 to 379 ms). On a GPU, kernels
count as cheap and run in order, and a GPU node has several cores per rank.

Small float32 vectors that the step must also average (its loss and the ranks' stop requests)
ride in the last bucket, so a step needs no collective of its own for them.
"""
import tensorflow as tf

BUCKET_NAME = "gradient_bucket_"  # the Horovod op and timeline name prefix (benchmarks.overlap)


def plan_buckets(sizes, bucket_bytes):
    """Index lists into `sizes` (bytes per gradient, in variable order), backward order (the last
    index first), each closed once it holds at least `bucket_bytes`; 0: one bucket of all."""
    order = list(reversed(range(len(sizes))))
    if not bucket_bytes:
        return [order] if order else []
    buckets, current, filled = [], [], 0
    for i in order:
        current.append(i)
        filled += sizes[i]
        if filled >= bucket_bytes:
            buckets.append(current)
            current, filled = [], 0
    return buckets + [current] if current else buckets


def average_in_buckets(hvd, grads, bucket_bytes, compression=None, riders=None):
    """(gradients averaged over ranks, `riders` averaged) in one grouped allreduce per bucket.

    `grads` may hold None (variables without a gradient); they stay None. `compression` (a
    Horovod Compression) applies to the gradients only: the riders travel in float32 exactly,
    in a group of their own when the gradients travel as float16."""
    compression = compression or hvd.Compression.none
    present = [i for i, grad in enumerate(grads) if grad is not None]
    tensors = [tf.convert_to_tensor(grads[i]) for i in present]
    sizes = [t.shape.num_elements() * t.dtype.size for t in tensors]
    averaged = list(grads)
    buckets = plan_buckets(sizes, bucket_bytes) or [[]]
    for n, bucket in enumerate(buckets):
        compressed, contexts = zip(*[compression.compress(tensors[j]) for j in bucket]) \
            if bucket else ((), ())
        last = n == len(buckets) - 1 and riders is not None
        outputs = _grouped_by_dtype(hvd, list(compressed) + ([riders] if last else []),
                                    f"{BUCKET_NAME}{n}")
        for j, out, ctx in zip(bucket, outputs, contexts):
            averaged[present[j]] = compression.decompress(out, ctx)
        if last:
            riders = outputs[-1]
    return averaged, riders


def _grouped_by_dtype(hvd, inputs, name):
    """Averaged `inputs` in input order: one grouped allreduce per dtype (a Horovod group holds
    one), the first named `name`."""
    by_dtype = {}
    for i, tensor in enumerate(inputs):
        by_dtype.setdefault(tensor.dtype, []).append(i)
    outputs = [None] * len(inputs)
    for k, (dtype, indices) in enumerate(by_dtype.items()):
        reduced = hvd.grouped_allreduce([inputs[i] for i in indices], op=hvd.Average,
                                        name=name if k == 0 else f"{name}_{dtype.name}")
        for i, out in zip(indices, reduced):
            outputs[i] = out
    return outputs

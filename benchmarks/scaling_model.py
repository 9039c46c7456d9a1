"""Predicted data-parallel efficiency of an app's full-size network on a GPU cluster
(python scripts/benchmark.py --app APP --model-scaling [options]): what to weigh before choosing
a local batch and a node count.

- Parameters and gradient bytes: counted on the full-size model (the app's shipped MLPerf or
  seed config) built on the CPU; gradients are the trainable variables in float32 unless
  --gradient-bytes 2 (Horovod's fp16 compression).
- Step compute: FLOPs counted analytically from the shapes of every convolution and matrix
  product in the traced graph of one forward + backward pass (2 FLOPs per multiply-add;
  element-wise ops, normalisation and pooling are left out: they are memory-bound, which the
  utilisation factor absorbs), divided by the device's peak times a stated utilisation.
- Allreduce: a flat ring, t = 2(p-1)/p * bytes / bandwidth + 2(p-1) * latency.
- Efficiency t_c / (t_c + exposed communication): without overlap everything is exposed (one
  grouped allreduce after the backward pass, horovod.bucket_mb 0); with overlap the allreduce
  hides behind an overlappable fraction of the step and only its excess is exposed. That
  fraction is the app's measured one (ScalingApp.overlap: from a Horovod timeline of gradient
  buckets started during the backward pass, benchmarks/overlap.py), --overlap-fraction, or else the
  backward pass's share of the step's FLOPs (about 2/3, what per-tensor allreduces started the
  moment each gradient appears could reach); the output says which.
"""
import argparse
import math

import numpy as np
import tensorflow as tf

from benchmarks.bench import load_config

DEVICES = {"a100": ("A100 TF32 dense", 156.0), "h100": ("H100 SXM TF32 dense", 495.0)}


def parameter_counts(model):
    """(all parameters, trainable ones): the gradient holds the trainable ones."""
    def count(variables):
        return sum(v.shape.num_elements() for v in variables)
    return count(model.weights), count(model.trainable_weights)


def ring_allreduce_seconds(nbytes, ranks, bandwidth, latency):
    """Ring allreduce of `nbytes` over `ranks`: reduce-scatter then all-gather, 2(p-1) steps
    each moving bytes/p over every rank's link (bandwidth in bytes/s, latency in s per step)."""
    if ranks < 2:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def efficiency(compute, communication, overlappable=0.0):
    """t_c / (t_c + exposed communication), where `overlappable` seconds of the step can hide it."""
    exposed = max(0.0, communication - overlappable)
    return compute / (compute + exposed)


# FLOPs of one op from its static shapes: 2 per multiply-add.
def _conv(op):  # Conv2D/3D: every output element sums kernel volume x input channels products
    return 2 * _size(op.outputs[0]) * _size(op.inputs[1]) // op.inputs[1].shape[-1]


def _conv_backprop_input(op):  # inputs (input sizes, filter, output gradient)
    return 2 * _size(op.inputs[2]) * _size(op.inputs[1]) // op.inputs[1].shape[-1]


def _conv_backprop_filter(op):  # inputs (input, filter sizes, output gradient); out: filter
    return 2 * _size(op.inputs[2]) * _size(op.outputs[0]) // op.outputs[0].shape[-1]


def _depthwise(op):  # each output element: kernel area products
    return 2 * _size(op.outputs[0]) * math.prod(op.inputs[1].shape[:2])


def _depthwise_backprop_input(op):
    return 2 * _size(op.inputs[2]) * math.prod(op.inputs[1].shape[:2])


def _depthwise_backprop_filter(op):
    return 2 * _size(op.inputs[2]) * math.prod(op.outputs[0].shape[:2])


def _matmul(op):
    a = op.inputs[0].shape
    inner = a[0] if op.get_attr("transpose_a") else a[1]
    return 2 * _size(op.outputs[0]) * inner


FLOPS = {"Conv2D": _conv, "Conv3D": _conv, "MatMul": _matmul,
         "Conv2DBackpropInput": _conv_backprop_input, "Conv3DBackpropInputV2": _conv_backprop_input,
         "Conv2DBackpropFilter": _conv_backprop_filter,
         "Conv3DBackpropFilterV2": _conv_backprop_filter,
         "DepthwiseConv2dNative": _depthwise,
         "DepthwiseConv2dNativeBackpropInput": _depthwise_backprop_input,
         "DepthwiseConv2dNativeBackpropFilter": _depthwise_backprop_filter}


def _size(tensor):
    if not tensor.shape.is_fully_defined():
        raise ValueError(f"{tensor.name}: shape {tensor.shape} unknown, FLOPs cannot be counted")
    return tensor.shape.num_elements()


def training_flops(model, input_shape):
    """(forward FLOPs, backward FLOPs) of one step on a batch of `input_shape`, from the graph of
    a concrete function (the loss, a sum of outputs, adds nothing countable). An op whose result
    nothing uses (the gradient of the input image) is pruned before it runs: not counted."""
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    graph = step.get_concrete_function(tf.TensorSpec(input_shape, tf.float32)).graph
    forward = backward = 0
    for op in graph.get_operations():
        if op.type in FLOPS and op.outputs[0].consumers():
            flops = FLOPS[op.type](op)
            if "Backprop" in op.type or op.name.startswith("gradient_tape/"):
                backward += flops
            else:
                forward += flops
    return forward, backward


def full_size_local_batch(train_cfg):
    """The config's local batch; a strong-scaling config's whole global batch on one GPU."""
    strong = train_cfg["scaling"] == "strong"
    return train_cfg["global_batch"] if strong else train_cfg["local_batch"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides (default: the full-size scenario as shipped)")
    p.add_argument("--local-batch", type=int, help="default: the config's")
    p.add_argument("--device", choices=sorted(DEVICES), default="a100")
    p.add_argument("--peak-tflops", type=float, help="default: the device's")
    p.add_argument("--utilisation", type=float, default=0.4, help="of the peak, in a step")
    p.add_argument("--link-gbs", type=float, default=25.0,
                   help="GB/s per GPU (one 200 Gb/s Slingshot-11 NIC per GPU)")
    p.add_argument("--latency-us", type=float, default=5.0, help="per ring step")
    p.add_argument("--gradient-bytes", type=int, default=4, help="per value (2: fp16)")
    p.add_argument("--gpus", type=int, nargs="+", default=[4, 64, 1024])
    p.add_argument("--overlap-fraction", type=float,
                   help="of the step that communication can hide behind (default: the app's "
                        "measured one, else the backward pass's FLOPs share)")
    args = p.parse_args(argv)
    if args.overlap_fraction is not None and not 0 <= args.overlap_fraction <= 1:
        p.error(f"--overlap-fraction {args.overlap_fraction:g}: must be within [0, 1]")
    return args


def overlap_fraction(measured, given, forward, backward):
    """(fraction of the step communication can hide behind, where it comes from): the command
    line's, else the app's measured one ((fraction, source) or None), else the FLOPs share."""
    if given is not None:
        return given, "given (--overlap-fraction)"
    if measured is not None:
        return measured[0], f"measured: {measured[1]}"
    return backward / (forward + backward), \
        "assumed: the backward pass's FLOPs share (no measurement for this app)"


def predict(app, args):
    """The model's figures for one app, as a dict (printed by main)."""
    from benchmarks.scaling import load_app
    spec = load_app(app)
    cfg, stage = load_config(spec.defaults, spec.config, args.set)
    with tf.device("/CPU:0"):
        model = spec.make_task(cfg).build_model(stage)
        batch = args.local_batch or full_size_local_batch(stage.train)
        x = spec.random_batch(stage, 1, np.random.default_rng(0))[0]
        forward, backward = training_flops(model, (batch, *x.shape[1:]))
    params, trainable = parameter_counts(model)
    device, peak = DEVICES[args.device]
    peak = (args.peak_tflops or peak) * 1e12
    compute = (forward + backward) / (peak * args.utilisation)
    nbytes = trainable * args.gradient_bytes
    fraction, source = overlap_fraction(spec.overlap, args.overlap_fraction, forward, backward)
    rows = []
    for gpus in args.gpus:
        comm = ring_allreduce_seconds(nbytes, gpus, args.link_gbs * 1e9, args.latency_us * 1e-6)
        per_sample = compute / batch
        rows.append({"gpus": gpus, "allreduce_s": comm,
                     "efficiency": efficiency(compute, comm),
                     "efficiency_overlap": efficiency(compute, comm, compute * fraction),
                     # smallest local batch at 90% without overlap: t_c >= 9 t_comm
                     "batch_for_90": math.ceil(9 * comm / per_sample) if comm else 1,
                     # or micro-batches of `batch` per update (train.accumulate_steps): their
                     # gradients exist only after the last one, so none of it overlaps
                     "accumulate_for_90": math.ceil(9 * comm / compute) if comm else 1})
    return {"model": model.name, "input": x.shape[1:], "params": params, "trainable": trainable,
            "gradient_bytes": nbytes, "local_batch": batch, "forward_flops": forward,
            "backward_flops": backward, "compute_s": compute, "device": device, "peak": peak,
            "overlap_fraction": fraction, "overlap_source": source, "rows": rows}


def main(app, argv=None):
    args = parse_args(argv)
    r = predict(app, args)
    shape = "x".join(map(str, r["input"]))
    print(f"{app} scaling model: {r['model']}, input {shape}, local batch {r['local_batch']}")
    print(f"  parameters {r['params']:,} ({r['trainable']:,} trainable); gradient "
          f"{r['gradient_bytes'] / 1e6:.1f} MB at {args.gradient_bytes} bytes per value")
    print(f"  FLOPs per step {(r['forward_flops'] + r['backward_flops']) / 1e9:.1f} G "
          f"(forward {r['forward_flops'] / 1e9:.1f} G, backward {r['backward_flops'] / 1e9:.1f} "
          f"G; conv and matmul from the traced graph)")
    print(f"  compute per step {r['compute_s'] * 1e3:.2f} ms on {r['device']} at "
          f"{r['peak'] / 1e12:g} TFLOP/s x {args.utilisation:g} utilisation")
    print(f"  ring allreduce at {args.link_gbs:g} GB/s per GPU and {args.latency_us:g} us per "
          "step:")
    print(f"  overlap: {r['overlap_fraction']:.3f} of the step, {r['overlap_source']}")
    print(f"  {'GPUs':>6s} {'allreduce ms':>13s} {'efficiency':>11s} {'with overlap':>13s} "
          f"{'local batch for 0.9':>20s} {'or accumulate_steps':>20s}")
    for row in r["rows"]:
        print(f"  {row['gpus']:6d} {row['allreduce_s'] * 1e3:13.2f} {row['efficiency']:11.3f} "
              f"{row['efficiency_overlap']:13.3f} {row['batch_for_90']:20d} "
              f"{row['accumulate_for_90']:20d}")
    return r

"""tf.distribute: strategies by name, and the geodesic step across replicas.

Under a strategy with R replicas, each replica holds a slice of the global
batch. The metric is a mean over examples, so g v on the global batch is
the mean over replicas of each replica's g_r v (equal slice sizes, which
`drop_remainder=True` guarantees); likewise the objective's direction.
`ReplicaMeanOperator` all-reduces (MEAN) every metric-vector product and
quadratic form, and `replica_mean` the direction, so every replica runs the
same conjugate-gradient iterations on the same vectors and ends with the
same step: the single-device step on the union of the replicas' batches.

MirroredStrategy refuses cross-replica all-reduces inside `tf.while_loop`
(`merge_call` error), so the distributed step uses CG's unrolled form
(`conjugate_gradient(unroll=True)`): a fixed number of masked iterations in
straight-line code.
"""
from __future__ import annotations

import itertools
import os

import numpy as np
import tensorflow as tf
from absl import logging

from tfgeo import linear_operator

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str = "default", tpu: str | None = None,
                  connect_timeout: float = 300.0) -> tf.distribute.Strategy:
    """Builds a strategy by name.

    'default': the current (no-op) strategy; 'mirrored': all local GPUs (or
    the CPU); 'multi_worker': `MultiWorkerMirroredStrategy` from `TF_CONFIG`;
    'tpu': `TPUStrategy` on the TPU at `tpu` (address or name; '' or None
    for the local/auto-detected one).

    multi_worker: a TF_CONFIG that cannot describe this worker (not JSON, no
    cluster.worker list, an index outside it, an address named twice) raises
    ValueError before anything starts. TensorFlow then waits for every worker
    in native code that no signal interrupts; if they have not all joined one
    all-reduce within `connect_timeout` seconds, a watchdog process writes one
    line naming the workers to stderr and ends this process (status -9): a
    bounded wait instead of a hang.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        workers = check_tf_config(os.environ.get("TF_CONFIG"))
        if len(workers) < 2:
            return tf.distribute.MultiWorkerMirroredStrategy()
        watchdog = _watchdog(connect_timeout, (
            f"FATAL strategy multi_worker: the {len(workers)} workers of TF_CONFIG "
            f"({', '.join(workers)}) did not all join within {connect_timeout:g} s; start "
            f"every worker, or fix the addresses."))
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            # One all-reduce: every worker has joined when it returns.
            strategy.reduce(tf.distribute.ReduceOp.SUM,
                            strategy.run(lambda: tf.constant(1.0)), axis=None)
        finally:
            watchdog.kill()
            watchdog.wait()
        return strategy
    if not tpu and not _local_tpu_present():
        # Without this check TPUClusterResolver would query the GCE metadata
        # server, which blocks off Google Cloud.
        raise ValueError("strategy tpu: no TPU on this machine (no /dev/accel* or /dev/vfio, "
                         "no TPU_NAME); pass --tpu=<name or grpc://host:8470>.")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ValueError(f"strategy tpu: no TPU reachable at {tpu or '(auto-detect)'}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return tf.distribute.TPUStrategy(resolver)


def check_tf_config(text: str | None) -> list[str]:
    """The cluster's worker addresses from a TF_CONFIG JSON text (None: no
    TF_CONFIG, one local worker); ValueError naming what is wrong with it."""
    if text is None:
        return []
    import json

    try:
        config = json.loads(text)
        workers, index = config["cluster"]["worker"], config["task"]["index"]
        kind = config["task"].get("type", "worker")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"strategy multi_worker: TF_CONFIG is not a valid cluster spec "
                         f"with cluster.worker and task.index: {e!r}") from None
    if not isinstance(workers, list) or not workers or not all(
            isinstance(w, str) and ":" in w for w in workers):
        raise ValueError(f"strategy multi_worker: TF_CONFIG's cluster.worker must be a list of "
                         f"'host:port' addresses, got {workers!r}.")
    named_twice = sorted({w for w in workers if workers.count(w) > 1})
    if named_twice:
        raise ValueError(f"strategy multi_worker: TF_CONFIG names {', '.join(named_twice)} more "
                         f"than once in cluster.worker; every worker needs its own address.")
    if kind == "worker" and (isinstance(index, bool) or not isinstance(index, int)
                             or not 0 <= index < len(workers)):
        raise ValueError(f"strategy multi_worker: TF_CONFIG's task.index {index!r} is not the "
                         f"index of one of its {len(workers)} workers.")
    return list(workers)


#: Waits `seconds`, then (unless its parent has ended) writes the line and kills it.
_WATCHDOG = """import os, sys, time
parent, end = int(sys.argv[1]), time.time() + float(sys.argv[2])
while time.time() < end:
    time.sleep(0.2)
    try:
        os.kill(parent, 0)
    except OSError:
        sys.exit(0)
sys.stderr.write(sys.argv[3] + "\\n")
sys.stderr.flush()
os.kill(parent, 9)
"""


def _watchdog(seconds: float, line: str):
    """A process that ends this one after `seconds` unless killed first: the
    only bound on a wait inside TensorFlow's native code, which holds the
    interpreter (no thread or signal handler runs)."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds),
                             line])


def _local_tpu_present() -> bool:
    import glob

    return bool(os.environ.get("TPU_NAME") or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/*"))


def num_replicas() -> int:
    """Replicas in sync in the current replica context (1 outside any strategy)."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else int(ctx.num_replicas_in_sync)


def num_replicas_in_scope() -> int:
    """Replicas of the current strategy (1 outside any), from any context."""
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def replica_mean(value):
    """MEAN all-reduce of a (nested) value across replicas; identity for one replica."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, value)


class ReplicaMeanOperator(linear_operator.LinearOperator):
    """A per-replica operator averaged across replicas: products and quadratic
    forms are all-reduced (MEAN), giving the global-batch metric."""

    def __init__(self, operator: linear_operator.LinearOperator):
        super().__init__(operator.shapes, operator.dtype)
        self.operator = operator
        self.has_inverse = operator.has_inverse

    def dot(self, a, b):
        return self.operator.dot(a, b)

    def _matvec(self, vector):
        return list(replica_mean(list(self.operator.matvec(vector))))

    def _solve(self, vector):
        # A preconditioner built from replica-mean statistics is the same on
        # every replica; its inverse product needs no reduction.
        return self.operator.solve(vector)

    def quadratic_form(self, vector):
        return replica_mean(self.operator.quadratic_form(vector))


def apply_update(variables, step) -> None:
    """var += step for each variable, from replica context or not.

    In a replica context with several replicas, every replica computed the
    same step; one `merge_call` applies it to each mirrored variable once
    (`strategy.extended.update`), as Keras optimizers do.
    """
    apply_to_variables(variables, list(step), lambda v, d: v.assign_add(tf.cast(d, v.dtype)))


def apply_to_variables(variables, values, fn) -> None:
    """fn(var, value) for each variable (an assignment), from replica context or
    not; under several replicas through one `merge_call`, once per mirrored
    variable (`apply_update` is its += case)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        for var, value in zip(variables, values):
            fn(var, value)
        return

    def merge(strategy, values):
        for var, value in zip(variables, values):
            strategy.extended.update(var, fn, args=(value,), group=False)

    ctx.merge_call(merge, args=(list(values),))


def run_steps(strategy: tf.distribute.Strategy, model, dataset: tf.data.Dataset,
              steps: int) -> int:
    """Runs `model.train_step` on `steps` batches of `dataset` under `strategy`.

    Keras 3's `fit` does not support `MultiWorkerMirroredStrategy`
    (keras-team/keras#20585: it converts `PerReplica` batches eagerly), so
    multi-worker walks use this loop: one plain iterator reads the dataset and
    each step is `strategy.run(model.train_step)` on the batch split over the
    replicas (`replica_rows`), in one `tf.function`. Returns the number of
    steps taken (fewer if the data ends).
    """
    one_step = split_step(strategy, model)
    taken = 0
    for batch in dataset:
        if taken == steps:
            break
        one_step(batch)
        taken += 1
    return taken


def split_step(strategy: tf.distribute.Strategy, model):
    """A `tf.function` of one global batch: `model.train_step` on every replica,
    each on its rows of the batch (`replica_rows`)."""

    @tf.function
    def one_step(batch):
        strategy.run(model.train_step, args=(replica_rows(strategy, batch),))

    return one_step


def split_batch(strategy: tf.distribute.Strategy, fn, batch, size: int):
    """sum_r fn(rows_r, 1 / R) over the R replicas, from the cross-replica
    context (inside a `tf.function`).

    Replica r (its global id, across workers) gets rows [r s / R, (r + 1) s / R)
    of every tensor in `batch` (a nest; s = `size`, a multiple of R) and the
    weight 1 / R of its mean in the batch's mean: an fn that scales its loss by
    the weight before Keras's optimizer sums the replicas' gradients takes the
    single-device step on the whole batch, and returning weighted means makes
    the SUM-reduced result the batch's mean. Every replica gets the reduced
    value.
    """
    replicas = int(strategy.num_replicas_in_sync)
    if size % replicas:
        raise ValueError(f"A batch of {size} cannot be split evenly over {replicas} replicas; "
                         f"use a multiple of {replicas}.")
    shards = replica_rows(strategy, batch)
    result = strategy.run(lambda rows: fn(rows, 1.0 / replicas), args=(shards,))
    return tf.nest.map_structure(
        lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), result)


def fit(model, dataset: tf.data.Dataset, epochs: int = 1, steps_per_epoch: int | None = None,
        callbacks=(), verbose: int = 0, initial_epoch: int = 0) -> dict:
    """`model.fit` on one replica; under several replicas the same epochs by
    hand, with the callbacks' hooks called as fit calls them. Returns
    {name: [value per epoch]}.

    By hand, the dataset is read by one plain iterator and each batch is split
    over the replicas inside the step (`replica_rows`): every worker and
    replica sees the batches one device sees. Keras's fit would distribute the
    dataset instead, which makes iterators before the one it trains on (a
    `shuffle` pipeline reshuffles for each: other batches than one device's),
    and does not run at all under MultiWorkerMirroredStrategy
    (keras-team/keras#20585). `verbose` prints one line per epoch there.

    The model must be compiled; `dataset` yields global batches.
    """
    strategy = tf.distribute.get_strategy()
    if num_replicas_in_scope() == 1:
        return model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                         callbacks=list(callbacks), verbose=verbose, shuffle=False,
                         initial_epoch=initial_epoch).history
    import keras

    iterator = iter(dataset)
    first = next(iterator, None)
    if first is None:
        raise ValueError("the dataset is empty.")
    with strategy.scope():  # variables may not be created inside a replica's step
        if hasattr(model, "_symbolic_build"):  # compiled metrics and loss, as fit builds them
            model._symbolic_build(data_batch=first)
        if getattr(model, "optimizer", None) is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    iterator = itertools.chain([first], iterator)
    # Last, so that it records what earlier callbacks add to the epoch's logs.
    recorder = keras.callbacks.History()
    hooks = keras.callbacks.CallbackList([*callbacks, recorder], model=model, epochs=epochs,
                                         steps=steps_per_epoch, verbose=verbose)

    one_step = split_step(strategy, model)
    model.stop_training = False
    hooks.on_train_begin()
    logs: dict = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        hooks.on_epoch_begin(epoch)
        step = 0
        while steps_per_epoch is None or step < steps_per_epoch:
            batch = next(iterator, None)
            if batch is None:
                if steps_per_epoch is not None:
                    raise ValueError(f"the dataset ended after {step} of {steps_per_epoch} "
                                     f"steps in epoch {epoch + 1}; give a repeated dataset.")
                iterator = iter(dataset)  # an epoch is one pass, as in fit
                break
            rows = int(tf.nest.flatten(batch)[0].shape[0])
            if rows < strategy.num_replicas_in_sync:
                # A replica without rows would average over none (NaN gradients).
                logging.warning("Skipped a batch of %d rows: fewer than the %d replicas.",
                                rows, strategy.num_replicas_in_sync)
                continue
            hooks.on_train_batch_begin(step)
            one_step(batch)
            logs = {k: float(v) for k, v in model.get_metrics_result().items()}
            hooks.on_train_batch_end(step, logs)
            step += 1
            if model.stop_training:
                break
        hooks.on_epoch_end(epoch, logs)
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}: " + ", ".join(
                f"{k} {v[-1]:.4g}" for k, v in recorder.history.items()), flush=True)
        if model.stop_training:
            break
    hooks.on_train_end(logs)
    return recorder.history


def replica_rows(strategy: tf.distribute.Strategy, batch):
    """A distributed value: replica r of R (its global id, across workers)
    holds rows [r n / R, (r + 1) n / R) of every tensor in `batch` (a nest, n
    rows). Equal shares when R divides n; Keras's losses, which divide by R,
    are then the batch's mean exactly."""
    replicas = int(strategy.num_replicas_in_sync)

    def rows(ctx):
        r = ctx.replica_id_in_sync_group

        def part(a):
            n = tf.shape(a)[0]
            return a[n * r // replicas:n * (r + 1) // replicas]

        return tf.nest.map_structure(part, batch)

    return strategy.experimental_distribute_values_from_function(rows)


def on_one_replica(fn, *args):
    """fn(*args), run inside one replica when called from the cross-replica
    context of a multi-replica strategy.

    Tapes and forward accumulators cannot watch mirrored variables from the
    cross-replica context (`DistributedVariable.handle is not available`);
    one-off computations on a whole batch (a Fisher diagonal, a path's
    length, a timing probe) run per replica instead, each on the full
    arguments, and the first replica's result is returned.
    """
    strategy = tf.distribute.get_strategy()
    if (not tf.distribute.has_strategy() or not tf.distribute.in_cross_replica_context()
            or strategy.num_replicas_in_sync == 1):
        return fn(*args)
    result = strategy.run(fn, args=args)
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], result)


def under_strategy() -> bool:
    """Whether code runs inside an explicit strategy's scope (any number of
    replicas: even one replica's mirrored variables cannot be watched by a
    tape from the cross-replica context, so such code runs per replica)."""
    return tf.distribute.has_strategy()


def worker_share(strategy=None) -> tuple[int, int]:
    """(this worker's index, the number of workers) under
    MultiWorkerMirroredStrategy; (0, 1) under any other strategy or none."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 0, 1
    workers = len(resolver.cluster_spec().as_dict().get("worker", [])) or 1
    return int(resolver.task_id or 0), workers


def worker_rows(inputs):
    """This worker's rows of `inputs` (a nest of arrays [N, ...]): rows
    index, index + W, ... of W workers (all rows on one worker). With
    `sum_over_workers`, host-side sums over the inputs (the layer-wise
    reconstruction's statistics) are shared out and then totalled."""
    index, workers = worker_share()
    if workers == 1:
        return inputs
    n = int(tf.nest.flatten(inputs)[0].shape[0])
    if n < workers:
        raise ValueError(f"{n} examples cannot be shared by {workers} workers.")
    return tf.nest.map_structure(lambda a: a[index::workers], inputs)


def sum_over_workers(arrays):
    """Element-wise sums of host arrays (a list; float64) over the workers of a
    MultiWorkerMirroredStrategy: one SUM all-reduce of one flat vector, to
    which one replica per worker contributes; identity on one worker. Every
    worker must call it with arrays of the same shapes, in the same order."""
    _, workers = worker_share()
    if workers == 1:
        return arrays
    strategy = tf.distribute.get_strategy()
    per_worker = int(strategy.num_replicas_in_sync) // workers
    flat = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in arrays])
    local = tf.constant(flat)
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: local if ctx.replica_id_in_sync_group % per_worker == 0
        else tf.zeros_like(local))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()
    out, start = [], 0
    for a in arrays:
        size = int(np.size(a))
        out.append(total[start:start + size].reshape(np.shape(a)))
        start += size
    return out


class ShardedMean:
    """Means over N examples sharded across the replicas of a strategy.

    Replica r of R (its global id, across workers) holds examples r, r + R,
    r + 2R, ...; `function(fn)` builds a `tf.function` whose value is

        mean = (1 / N) sum_r n_r fn(shard_r, *args),

    fn a mean over one shard (a tensor or a nest of them), computed in each
    replica's context (where tapes and forward accumulators may watch mirrored
    variables) and all-reduced (SUM) once, so every replica and worker gets
    the same value: the single-device mean over all N examples, up to the
    order of the sum. Every worker must hold the same N examples and call the
    functions in the same order (collective all-reduces).
    """

    def __init__(self, strategy: tf.distribute.Strategy, data):
        self.strategy = strategy
        replicas = int(strategy.num_replicas_in_sync)
        first = tf.nest.flatten(data)[0]
        self.n = int(first.shape[0])
        if self.n < replicas:
            raise ValueError(f"{self.n} examples cannot be shared by {replicas} replicas.")
        shards = [(tf.nest.map_structure(lambda a: a[r::replicas], data),
                   float(len(range(r, self.n, replicas)))) for r in range(replicas)]
        self.values = strategy.experimental_distribute_values_from_function(
            lambda ctx: shards[ctx.replica_id_in_sync_group])

    def function(self, fn):
        """`fn(shard, *args)` (a mean over the shard) -> a tf.function of `*args`
        returning the all-reduced mean over all N examples."""

        structure = []

        def weighted(values, *args):
            shard, count = values
            out = fn(shard, *args)
            structure[:] = [out]
            # One flat vector: a single all-reduce per call, whatever the nest.
            return tf.concat([tf.reshape(t * tf.cast(count, t.dtype), [-1])
                              for t in tf.nest.flatten(out)], 0)

        @tf.function
        def mean(*args):
            total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(
                weighted, args=(self.values, *args)), axis=None) / self.n
            parts, start = [], 0
            for t in tf.nest.flatten(structure[0]):
                size = t.shape.num_elements()
                parts.append(tf.reshape(total[start:start + size], t.shape))
                start += size
            return tf.nest.pack_sequence_as(structure[0], parts)

        return mean


class FunctionOperator(linear_operator.LinearOperator):
    """A symmetric operator given by its product `matvec(vector) -> vector`
    (e.g. a `ShardedMean` function): the solvers' view of a product computed
    elsewhere."""

    def __init__(self, matvec, shapes, dtype):
        super().__init__(shapes, dtype)
        self._product = matvec

    def _matvec(self, vector):
        return list(self._product(vector))

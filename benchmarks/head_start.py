r"""Does a label-free projection give masked fine-tuning a head start? One stage,
measured in one run (validation accuracy; the label-using track's question).

    python benchmarks/head_start.py --start_model=runs/sparsify_mnist/start.keras \
        --manual_dir=../shared/data/mnist --output=benchmarks/head_start.json

From the dense start: magnitude-prune to --from_sparsity and fine-tune (the
"current" network of a stagewise run), then go to --to_sparsity by each start
(magnitude mask only; layer-wise reconstruction; the Gauss-Newton projection
from the mask on a small and a large calibration set), each followed by masked Adam
fine-tuning for each of --finetune_steps steps. Every start uses the same mask
(magnitude of the current network), batches and rate. Prints and writes the
accuracy of each start before and after fine-tuning, each start's cost in
gradient-equivalents (the rule of tfgeo/cost.py), and how far its
fine-tuned weights end from those fine-tuned from the magnitude start
(||w - w_magnitude|| / ||w_magnitude||: fine-tuning on the same batches
contracts the starts together, so a head start can vanish).
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("start_model", None, "A trained LeNet-300-100 (.keras) on MNIST.",
                    required=True)
flags.DEFINE_string("manual_dir", "../shared/data/mnist", "MNIST originals for tfds.")
flags.DEFINE_float("from_sparsity", 0.95, "Sparsity of the fine-tuned current network.")
flags.DEFINE_float("to_sparsity", 0.98, "Sparsity of the stage.")
flags.DEFINE_float("learning_rate", 3e-3, "Adam rate of every fine-tuning.")
flags.DEFINE_list("finetune_steps", ["500", "2000"], "Fine-tuning lengths after each start.")
flags.DEFINE_integer("current_steps", 2000, "Fine-tuning steps that make the current network.")
flags.DEFINE_integer("seed", 0, "Seed of the split, the calibration draw and the batches.")
flags.DEFINE_string("output", None, "Write the rows here as JSON.")


def main(_):
    import keras
    import numpy as np

    from tfgeo import representations
    from tfgeo.sparsify import geodesic_pruning as sparsification
    from tfgeo.sparsify import layerwise, projection, pruning
    from tfgeo import weights as weights_lib
    from tfgeo.experiments import config as config_lib
    from tfgeo import cost
    from tfgeo.experiments import data
    from tfgeo.experiments import sparsify_experiment as study

    _, train, val = data.load_splits(config_lib.DataConfig(
        dataset="mnist", manual_dir=FLAGS.manual_dir, validation_fraction=0.1), FLAGS.seed)
    model = keras.models.load_model(FLAGS.start_model)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    dense = weights_lib.get_trainable(model)
    which = pruning.prunable(dense, False, True)
    calibration = study.calibration_set(train, 8192, FLAGS.seed)  # the runner's draw

    def accuracy():
        return float(model.evaluate(val.x, val.y, batch_size=1024, verbose=0)[1])

    def finetune(start, masks, steps, seed):
        weights_lib.set_trainable(model, start)
        batches = data.to_dataset(train, 256, shuffle=True, seed=seed, drop_remainder=True,
                                  repeat=True)
        sparsification.masked_finetune(model, masks, batches, steps, FLAGS.learning_rate)
        return accuracy()

    previous = pruning.magnitude_masks(dense, FLAGS.from_sparsity, which)
    finetune(pruning.apply_masks(dense, previous), previous, FLAGS.current_steps, 1)
    current = weights_lib.get_trainable(model)
    rows = [{"start": "current", "sparsity": FLAGS.from_sparsity, "accuracy": accuracy()}]
    masks = pruning.magnitude_masks(current, FLAGS.to_sparsity, which)
    starts = {"magnitude": (pruning.apply_masks(current, masks), 0.0)}
    weights_lib.set_trainable(model, current)
    lw, _ = layerwise.reconstruct(model, masks, calibration)
    # The runner's rule: one forward pass per layer and one for the dense targets.
    forwards = len(representations.weighted_layers(model)) + 1
    starts["layerwise"] = (lw, cost.gradient_equivalents(forwards=forwards,
                                                         batch=len(calibration),
                                                         reference_batch=256))
    for n, steps in ((1024, 5), (8192, 10)):
        weights_lib.set_trainable(model, current)
        report = projection.gauss_newton_projection(
            model, masks, calibration[:n], steps=steps,  # from the mask, as the runner
            solver=projection.Solver(damping=1e-3, max_iterations=50, tolerance=0.1))
        starts[f"projection {n} inputs, {steps} steps"] = (
            weights_lib.get_trainable(model), cost.gradient_equivalents(
                metric_products=report["products"], quadratic_forms=report["quadratic_forms"],
                gradients=report["gradients"], forwards=report["forwards"], batch=n,
                reference_batch=256))
    flat = lambda ws: np.concatenate([np.ravel(w) for w in ws])  # noqa: E731
    reached = {}
    for name, (start, ge) in starts.items():
        weights_lib.set_trainable(model, start)
        row = {"start": name, "sparsity": FLAGS.to_sparsity, "accuracy": accuracy(),
               "gradient_equivalents": ge}
        for steps in map(int, FLAGS.finetune_steps):
            row[f"after_{steps}"] = finetune(start, masks, steps, 2)
            w = flat(weights_lib.get_trainable(model))
            base = reached.setdefault(steps, w)
            row[f"distance_{steps}"] = float(np.linalg.norm(w - base) / np.linalg.norm(base))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"flags": {k: FLAGS[k].value for k in (
                "start_model", "from_sparsity", "to_sparsity", "learning_rate",
                "finetune_steps", "current_steps", "seed")}, "rows": rows,
                "time": time.strftime("%Y-%m-%d")}, f, indent=1)


if __name__ == "__main__":
    app.run(main)

"""`tfgeo.sparsify.prune`, the library's label-free pruning call, and label-free
distillation: exact sparsity at every stage, nested masks, the distance each
method minimises checked against a NumPy reference, budgets, bad input."""
import keras
import numpy as np
import pytest

from tfgeo import weights as weights_lib
from tfgeo.sparsify import distillation
from tfgeo.sparsify import pruning
from tfgeo.sparsify import staged_pruning


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"),
                            keras.layers.Dense(12, activation="relu"), keras.layers.Dense(3)])
    x = np.random.default_rng(seed).normal(size=(256, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    net.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(x, y, epochs=20, batch_size=64, verbose=0)
    return net, x


def _kl_distance(z0, z):
    """The projection's D on the outputs for the Fisher metric, in NumPy (float64):
    mean KL(softmax z0 || softmax z) over the reference's mean squared norm."""
    z0, z = np.asarray(z0, np.float64), np.asarray(z, np.float64)

    def log_softmax(a):
        a = a - a.max(1, keepdims=True)
        return a - np.log(np.exp(a).sum(1, keepdims=True))

    p0 = np.exp(log_softmax(z0))
    kl = np.sum(p0 * (log_softmax(z0) - log_softmax(z)), axis=1).mean()
    return kl / np.mean(np.sum(z0 ** 2, axis=1))


def test_each_stage_is_exactly_sparse_and_masks_nest():
    net, x = _net()
    dense = weights_lib.get_trainable(net)
    seen = []
    report = staged_pruning.prune(net, x, [0.5, 0.7, 0.8], method="geodesic", steps=3,
                                  verbose=0, on_stage=lambda row: seen.append(
                                      weights_lib.get_trainable(net)))
    assert [s["stage"] for s in report.stages] == [1, 2, 3] and len(seen) == 3
    which = report.which
    for row, weights in zip(report.stages, seen):
        zeros, total = staged_pruning.exact_zero_count(weights, which)
        assert zeros == round(row["sparsity"] * total)  # magnitude_dense drops exactly
        assert row["measured_sparsity"] == pytest.approx(zeros / total)
    for earlier, later in zip(seen, seen[1:]):  # a weight pruned stays pruned
        for e, l, p in zip(earlier, later, which):
            if p:
                assert np.all(l[e == 0] == 0)
    assert report.gradient_equivalents == pytest.approx(
        sum(s["gradient_equivalents"] for s in report.stages))
    assert report.gradient_equivalents > 0
    # The dense start is the default reference: the distance is measured to it.
    logits = np.asarray(net(x))
    weights_lib.set_trainable(net, dense)
    expected = _kl_distance(np.asarray(net(x)), logits)
    assert report.stages[-1]["functional_distance"] == pytest.approx(expected, rel=1e-3)


def test_recovery_beats_one_shot_on_the_distance_it_minimises():
    distances = {}
    for method in ("magnitude", "layerwise", "geodesic", "distill"):
        net, x = _net()
        report = staged_pruning.prune(
            net, x, 0.8, method=method, steps=5, verbose=0,
            distillation_settings=staged_pruning.Distillation(steps=300, batch_size=64,
                                                              learning_rate=3e-3))
        distances[method] = report.stages[0]["functional_distance"]
    for method in ("layerwise", "geodesic", "distill"):
        assert distances[method] < 0.7 * distances["magnitude"], distances


def test_distillation_minimises_the_projections_distance_and_counts_its_budget():
    net, x = _net()
    dense = weights_lib.get_trainable(net)
    z0 = np.asarray(net(x))
    masks = pruning.magnitude_masks(dense, 0.6)
    res = distillation.distill(net, masks, x, steps=0)
    masked = np.asarray(net(x))
    assert res["distance"] == pytest.approx(_kl_distance(z0, masked), rel=1e-4)
    assert res["gradients"] == 0
    weights_lib.set_trainable(net, dense)
    res = distillation.distill(net, masks, x, steps=37, batch_size=32, learning_rate=3e-3)
    assert res["steps"] == res["gradients"] == 37 and res["batch"] == 32
    assert res["distance"] < _kl_distance(z0, masked)
    final = weights_lib.get_trainable(net)
    assert all(np.all(w[m == 0] == 0) for w, m in zip(final, masks))
    # prune's accounting: one gradient per step on `batch` inputs, plus the reference's
    # forward pass and the final distance over all N, in gradients on batches of 256.
    net, x = _net()
    report = staged_pruning.prune(net, x, 0.6, method="distill", verbose=0,
                                  distillation_settings=staged_pruning.Distillation(
                                      steps=37, batch_size=32, learning_rate=3e-3))
    assert report.stages[0]["steps"] == 37
    assert report.stages[0]["gradient_equivalents"] == pytest.approx(
        37 * 32 / 256 + 2 * (1 / 3) * 256 / 256)


def test_distill_defaults_are_prunes():
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(distillation.distill).parameters.items()}
    for field, value in staged_pruning.Distillation()._asdict().items():
        if field == "learning_rate":  # prune probes candidates; distill takes the safe one
            assert defaults[field] == min(staged_pruning.rate_candidates(value))
        elif field not in ("probe_steps", "held_out_checks", "intermediate_fraction"):
            # prune's, not distill's (one stage)
            assert defaults[field] == value, field


def test_the_runners_distillation_defaults_are_prunes():
    from tfgeo.experiments import sparsify_experiment

    runner = sparsify_experiment.SparsifyConfig()
    ours = staged_pruning.Distillation()
    assert (runner.distill_steps, runner.batch_size, runner.distill_learning_rate,
            runner.distill_schedule, runner.distill_probe_steps,
            runner.distill_held_out_checks, runner.distill_intermediate_fraction) == (
        ours.steps, ours.batch_size, staged_pruning.rate_candidates(ours.learning_rate),
        ours.schedule, ours.probe_steps or 0, ours.held_out_checks,
        ours.intermediate_fraction)


def test_rate_probes_keep_the_rate_nearest_the_reference_on_held_out_inputs_and_pay_for_it():
    # Candidates far apart: 3e-3 distils; 30 throws Adam far off (its D is many times
    # larger), so the choice holds on any CPU. Each stage's run at the chosen rate is the
    # same run as a call given that rate alone; the probes are counted on top.
    candidates, steps, probe, batch = (30.0, 3e-3), 40, 15, 32
    net, x = _net()
    dense = weights_lib.get_trainable(net)
    chosen = staged_pruning.prune(
        net, x, [0.5, 0.7], method="distill", verbose=0, batch_size=256,
        distillation_settings=staged_pruning.Distillation(steps, batch, candidates,
                                                          probe_steps=probe))
    net_single, _ = _net()
    single = staged_pruning.prune(
        net_single, x, [0.5, 0.7], method="distill", verbose=0, batch_size=256,
        distillation_settings=staged_pruning.Distillation(steps, batch, 3e-3))
    for row, alone in zip(chosen.stages, single.stages):
        assert row["learning_rate"] == 3e-3
        assert set(row["rate_distances"]) == set(candidates)
        assert row["rate_distances"][30.0] > 3 * row["rate_distances"][3e-3], row
        assert row["functional_distance"] == pytest.approx(alone["functional_distance"],
                                                           rel=1e-4)
        # The probes: `probe` steps on `batch` inputs per rate, their reference and final
        # forward passes over the 224 inputs they fit, and two passes over the 32 held out
        # (a forward pass is a third of a gradient).
        held = staged_pruning.probe_held_out(len(x))
        assert held == 32
        probes = len(candidates) * (probe * batch + (2 * (len(x) - held) + 2 * held) / 3) / 256
        assert row["gradient_equivalents"] == pytest.approx(
            alone["gradient_equivalents"] + probes, rel=1e-9)
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in weights_lib.get_trainable(net)]),
                               np.concatenate([w.ravel() for w in weights_lib.get_trainable(
                                   net_single)]), rtol=1e-4, atol=1e-5)
    # The reference is the dense start in both calls.
    assert not np.allclose(dense[0], weights_lib.get_trainable(net)[0])


def test_the_probes_choose_by_their_held_out_distance_not_by_the_order_of_the_candidates():
    got = []
    for candidates in ((3e-3, 30.0), (30.0, 3e-3)):
        net, x = _net()
        row = staged_pruning.prune(
            net, x, 0.6, method="distill", verbose=0, distillation_settings=staged_pruning.
            Distillation(20, 32, candidates, probe_steps=10)).stages[0]
        got.append((row["learning_rate"], row["rate_distances"]))
    # An eighth held out, in multiples of 8 (so it splits over 2, 4 or 8 replicas).
    for n, held in ((2, 1), (16, 2), (97, 16), (256, 32), (1400, 176), (8192, 1024)):
        assert staged_pruning.probe_held_out(n) == held, n
    # The default probe is an eighth of the steps (at least one).
    assert staged_pruning.Distillation().probe_length == staged_pruning.Distillation().steps // 8
    assert staged_pruning.Distillation(steps=3).probe_length == 1
    assert got[0][0] == got[1][0] == 3e-3
    for rate in (3e-3, 30.0):
        assert got[0][1][rate] == pytest.approx(got[1][1][rate], rel=1e-4)


def test_one_calibration_input_distils_at_the_smallest_candidate_without_probes():
    got = []
    for rate in ((1e-2, 3e-3), 3e-3):
        net, x = _net()
        row = staged_pruning.prune(net, x[:1], 0.5, method="distill", verbose=0,
                                   distillation_settings=staged_pruning.Distillation(
                                       5, 32, rate)).stages[0]
        got.append((row, weights_lib.get_trainable(net)))
    assert "learning_rate" not in got[0][0]
    assert got[0][0]["gradient_equivalents"] == pytest.approx(got[1][0]["gradient_equivalents"])
    for a, b in zip(got[0][1], got[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("settings, message", [
    (staged_pruning.Distillation(learning_rate=()), "at least one"),
    (staged_pruning.Distillation(learning_rate=(1e-2, -1.0)), "learning_rate"),
    (staged_pruning.Distillation(learning_rate=(1e-2, float("nan"))), "learning_rate"),
    (staged_pruning.Distillation(learning_rate="fast"), "learning_rate"),
    (staged_pruning.Distillation(probe_steps=0), "probe_steps"),
    (staged_pruning.Distillation(held_out_checks=-1), "held_out_checks"),
    (staged_pruning.Distillation(held_out_checks=2.0), "held_out_checks"),
    (staged_pruning.Distillation(steps=2.5), "steps"),
    (staged_pruning.Distillation(steps=-1), "steps must be an integer >= 0"),
    (staged_pruning.Distillation(steps=(100, 200)), "2 counts for a schedule of 1 stage"),
    (staged_pruning.Distillation(steps=(-1,)), "each of Distillation.steps"),
    (staged_pruning.Distillation(steps=(1.5,)), "each of Distillation.steps"),
    (staged_pruning.Distillation(intermediate_fraction=-0.5), "intermediate_fraction"),
    (staged_pruning.Distillation(intermediate_fraction=float("inf")), "intermediate_fraction"),
    (staged_pruning.Distillation(intermediate_fraction="half"), "intermediate_fraction"),
    (staged_pruning.Distillation(batch_size=0), "batch_size"),
    (staged_pruning.Distillation(schedule="linear"), "schedule"),
    ((4000, 256, 3e-3), "Distillation"),
])
def test_bad_distillation_settings_are_refused_before_any_stage(settings, message):
    net, x = _net()
    before = weights_lib.get_trainable(net)
    with pytest.raises(ValueError, match=message):
        staged_pruning.prune(net, x, 0.5, method="distill", verbose=0,
                             distillation_settings=settings)
    for a, b in zip(before, weights_lib.get_trainable(net)):
        np.testing.assert_array_equal(a, b)


def test_per_stage_step_counts_equal_one_call_per_stage_with_its_count():
    # Stage k distils Distillation.steps[k] steps (the probes an eighth of the last
    # count at every stage): the same stages, GE and weights as one call per stage
    # resuming the last, seeded as that stage, with the dense network as reference.
    net, x = _net()
    dense = weights_lib.get_trainable(net)
    rates = (30.0, 3e-3)
    staged = staged_pruning.prune(
        net, x, [0.5, 0.7], method="distill", verbose=0,
        distillation_settings=staged_pruning.Distillation((16, 48), 32, rates))
    assert [s["steps"] for s in staged.stages] == [16, 48]
    alone, _ = _net()
    stages = [staged_pruning.prune(
        alone, x, [s], method="distill", verbose=0, reference=dense, seed=k,
        distillation_settings=staged_pruning.Distillation(count, 32, rates, probe_steps=6)
    ).stages[0]
        for k, (s, count) in enumerate(((0.5, 16), (0.7, 48)))]
    for row, one in zip(staged.stages, stages):
        assert row["gradient_equivalents"] == pytest.approx(one["gradient_equivalents"],
                                                            rel=1e-9)
        assert row["functional_distance"] == pytest.approx(one["functional_distance"],
                                                           rel=1e-4)
    # The same probes and passes over the inputs: the stages differ by 32 steps on
    # batches of 32 (gradients of 256).
    assert staged.stages[1]["gradient_equivalents"] - staged.stages[0][
        "gradient_equivalents"] == pytest.approx(32 * 32 / 256, rel=1e-9)
    for a, b in zip(weights_lib.get_trainable(net), weights_lib.get_trainable(alone)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # intermediate_fraction = 1/3 gives every stage but the last 16 of 48: the same call.
    again, _ = _net()
    short_then_long = staged_pruning.prune(
        again, x, [0.5, 0.7], method="distill", verbose=0,
        distillation_settings=staged_pruning.Distillation(48, 32, rates,
                                                          intermediate_fraction=1 / 3))
    assert [s["steps"] for s in short_then_long.stages] == [16, 48]
    for a, b in zip(weights_lib.get_trainable(net), weights_lib.get_trainable(again)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Other methods ignore the distillation settings, per-stage counts too.
    other, _ = _net()
    assert len(staged_pruning.prune(
        other, x, [0.5, 0.7], method="geodesic", steps=1, verbose=0,
        distillation_settings=staged_pruning.Distillation(steps=(1,))).stages) == 2
    # Rounded; a sequence ignores the fraction; the probes are the last stage's.
    assert staged_pruning.Distillation(10, intermediate_fraction=0.25).stage_steps(3) == [
        2, 2, 10]
    assert staged_pruning.Distillation(10, intermediate_fraction=0).stage_steps(2) == [0, 10]
    assert staged_pruning.Distillation(10, intermediate_fraction=1).stage_steps(2) == [10, 10]
    assert staged_pruning.Distillation().stage_steps(3) == [1000, 1000, 4000]  # the default
    assert staged_pruning.Distillation((5, 7), intermediate_fraction=0.5).stage_steps(2) == [5, 7]
    assert staged_pruning.Distillation(48, intermediate_fraction=0.25).probe_length == 6


def test_the_projection_from_a_short_distillation_only_lowers_its_distance_and_pays_both():
    settings = staged_pruning.Distillation(steps=40, batch_size=64, learning_rate=3e-3)
    got = {}
    for method, start in (("distill", "mask"), ("geodesic", "distill")):
        net, x = _net()
        got[start] = staged_pruning.prune(net, x, 0.8, method=method, start=start, steps=3,
                                          distillation_settings=settings, verbose=0).stages[0]
    # Same seed, same distillation; the Gauss-Newton steps keep only decreases of D.
    assert got["distill"]["functional_distance"] < got["mask"]["functional_distance"]
    assert got["distill"]["steps"] >= 1 and got["distill"]["start"] == "distill"
    # Its budget: the distillation's, plus the projection's (more than 0).
    assert got["distill"]["gradient_equivalents"] > got["mask"]["gradient_equivalents"]


def test_a_seed_makes_a_call_reproducible():
    out = []
    for _ in range(2):
        net, x = _net()
        staged_pruning.prune(net, x, 0.7, method="distill", verbose=0,
                             distillation_settings=staged_pruning.Distillation(steps=20),
                             seed=3)
        out.append(weights_lib.get_trainable(net))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_progress_lines(capsys):
    net, x = _net()
    staged_pruning.prune(net, x, [0.5, 0.7], method="layerwise", verbose=1)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("Stage")]
    assert len(lines) == 2 and "Stage 2/2: sparsity 70.00% (layerwise)" in lines[1]


@pytest.mark.parametrize("kwargs, message", [
    ({"sparsity": 1.0}, "in \\[0, 1\\)"),
    ({"sparsity": [0.5, 0.4]}, "must increase"),
    ({"sparsity": []}, "non-empty"),
    ({"sparsity": float("nan")}, "in \\[0, 1\\)"),
    ({"method": "nope"}, "method must be one of"),
    ({"mask": "random"}, "mask must be one of"),
    ({"start": "middle"}, "start must be one of"),
    ({"start": "distill", "method": "layerwise"}, "starts the geodesic projection"),
    ({"steps": 0}, "steps must be an integer"),
    ({"verbose": 3}, "verbose must be"),
    ({"inputs": np.zeros((0, 6), "float32")}, "no examples"),
    ({"inputs": np.full((4, 6), np.nan, "float32")}, "NaN"),
    ({"inputs": np.zeros((4, 5), "float32")}, "does not accept"),
])
def test_bad_input_is_refused_in_one_line(kwargs, message):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)])
    before = weights_lib.get_trainable(net)
    args = {"inputs": np.ones((16, 6), "float32"), "sparsity": 0.5, "verbose": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        staged_pruning.prune(net, args.pop("inputs"), args.pop("sparsity"), **args)
    for a, b in zip(before, weights_lib.get_trainable(net)):  # nothing changed
        np.testing.assert_array_equal(a, b)


def test_a_softmax_output_is_refused():
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="softmax"):
        staged_pruning.prune(net, np.zeros((8, 4), "float32"), 0.5, verbose=0)


def test_a_staged_distillation_with_rate_probes_logs_no_retracing_warning():
    # Each distill call traces its own step once; TensorFlow's counter (keyed by code
    # object) warned "triggered tf.function retracing" from the fifth call on.
    import logging

    import tensorflow as tf

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    tf.get_logger().addHandler(handler)
    try:
        net, x = _net()
        staged_pruning.prune(net, x, [0.5, 0.6, 0.7], method="distill", verbose=0,
                             distillation_settings=staged_pruning.Distillation(
                                 10, 32, (1e-2, 3e-3), probe_steps=5))
    finally:
        tf.get_logger().removeHandler(handler)
    assert not [m for m in seen if "retracing" in m], seen


def _kl_on_rows(net, dense, x, rows):
    """D on `rows` of `x` at the net's weights, with the scale c = 1 / (the
    reference's mean squared norm over all of `x`), as `distill` measures it."""
    current = weights_lib.get_trainable(net)
    weights_lib.set_trainable(net, dense)
    z0 = np.asarray(net(x), np.float64)
    weights_lib.set_trainable(net, current)
    z = np.asarray(net(x), np.float64)
    scale = np.mean(np.sum(z0 ** 2, axis=1)) / np.mean(np.sum(z0[rows] ** 2, axis=1))
    return _kl_distance(z0[rows], z[rows]) / scale


def test_early_stopping_keeps_the_weights_nearest_the_reference_on_held_out_inputs():
    # 24 calibration inputs, 8 held out, Adam 3e-2 at a constant rate: the held-out D
    # falls, then rises as the 16 fitted inputs are overfitted (about 1.7x by step 300).
    net, x = _net(2)
    x = x[:24]
    dense = weights_lib.get_trainable(net)
    masks = pruning.magnitude_masks(dense, 0.5)
    held = staged_pruning.held_out_rows(len(x), 0)
    assert len(held) == 8 and len(np.unique(held)) == 8
    seen = []
    report = distillation.distill(
        net, masks, x, steps=300, batch_size=16, learning_rate=3e-2, schedule="constant",
        held_out=held, checks=15,
        on_check=lambda k, d: seen.append([k, d, _kl_on_rows(net, dense, x, held)]))
    steps, values = zip(*report["held_out_history"])
    # Each check is reported with the model holding that step's weights.
    assert [s[:2] for s in seen] == report["held_out_history"]
    for _, d, recomputed in seen:
        assert recomputed == pytest.approx(d, rel=1e-4)
    assert list(steps) == list(range(0, 301, 20))
    assert report["best_step"] == steps[int(np.argmin(values))]
    assert report["held_out_distance"] == min(values)
    assert 0 < report["best_step"] < 300
    assert values[-1] > 1.3 * min(values), values
    # The model holds the kept weights: their held-out D and D over all 24 inputs,
    # recomputed in NumPy, are the report's; the mask's zeros hold.
    assert _kl_on_rows(net, dense, x, held) == pytest.approx(report["held_out_distance"],
                                                              rel=1e-4)
    assert _kl_on_rows(net, dense, x, np.arange(24)) == pytest.approx(report["distance"],
                                                                      rel=1e-4)
    assert all(np.all(w[m == 0] == 0) for w, m in zip(weights_lib.get_trainable(net), masks))
    assert report["held_out_forwards"] == 16 and report["held_out_examples"] == 8


def test_early_stopping_descends_on_the_other_inputs_only():
    # Permuting the held-out rows among themselves leaves the descent as it was (the
    # scale c is a sum over all rows); putting a held-out row among the fitted ones
    # changes it.
    net, x = _net()
    x = x[:40]
    dense = weights_lib.get_trainable(net)
    masks = pruning.magnitude_masks(dense, 0.8)
    held = staged_pruning.held_out_rows(len(x), 0)
    fitted = np.setdiff1d(np.arange(40), held)
    swapped, mixed = x.copy(), x.copy()
    swapped[held] = x[held[::-1]]
    mixed[[held[0], fitted[0]]] = x[[fitted[0], held[0]]]
    got = []
    for inputs in (x, swapped, mixed):
        weights_lib.set_trainable(net, dense)
        report = distillation.distill(net, masks, inputs, steps=30, batch_size=16,
                                      learning_rate=3e-3, held_out=held, checks=1)
        # 80% pruned, the descent lowers the held-out D (by about 30%): the end is kept.
        assert report["best_step"] == 30
        got.append(np.concatenate([w.ravel() for w in weights_lib.get_trainable(net)]))
    np.testing.assert_allclose(got[1], got[0], rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(got[2] - got[0])) > 1e-3


def test_prune_stops_early_on_the_probes_held_out_inputs_and_pays_for_the_checks():
    net, x = _net()
    report = staged_pruning.prune(
        net, x, [0.5, 0.7], method="distill", verbose=0,
        distillation_settings=staged_pruning.Distillation(40, 32, 3e-3, held_out_checks=4,
                                                          intermediate_fraction=1))
    held = staged_pruning.probe_held_out(len(x))
    for k, row in enumerate(report.stages):
        assert row["best_step"] in (0, 10, 20, 30, 40)
        assert row["held_out_distance"] > 0
        # 40 gradients on 32 inputs, the reference and the final D over all 256, and
        # five checks over the 32 held out (a forward pass is a third of a gradient).
        assert row["gradient_equivalents"] == pytest.approx(
            (40 * 32 + 2 * 256 / 3 + 5 * held / 3) / 256, rel=1e-9)
        # The stage's held-out rows are the probes' own draw.
        np.testing.assert_array_equal(staged_pruning.held_out_rows(len(x), k),
                                      np.sort(np.random.default_rng(k).permutation(256)[:held]))


@pytest.mark.parametrize("kwargs, message", [
    ({"held_out": [0, 0, 1]}, "distinct"),
    ({"held_out": [3, 300]}, r"in \[0, 256\)"),
    ({"held_out": [-1]}, "held_out"),
    ({"held_out": []}, "at least one"),
    ({"held_out": np.arange(256)}, "none left"),
    ({"held_out": [1, 2], "checks": 0}, "checks must be an integer >= 1"),
])
def test_bad_early_stopping_input_is_refused_before_any_step(kwargs, message):
    net, x = _net()
    before = weights_lib.get_trainable(net)
    masks = pruning.magnitude_masks(before, 0.5)
    with pytest.raises(ValueError, match=message):
        distillation.distill(net, masks, x, steps=5, **kwargs)
    for a, b in zip(before, weights_lib.get_trainable(net)):
        np.testing.assert_array_equal(a, b)


def test_restarts_end_each_cycle_as_a_run_of_that_many_steps_would():
    # "restarts": a cosine decay to 0 over each of the `checks` cycles, so the first
    # check sees the weights a 10-step cosine run ends with; one cycle is "cosine".
    net, x = _net()
    dense = weights_lib.get_trainable(net)
    masks = pruning.magnitude_masks(dense, 0.7)
    held = staged_pruning.held_out_rows(len(x), 0)

    def weights_at_checks(steps, checks, schedule):
        weights_lib.set_trainable(net, dense)
        seen = {}
        distillation.distill(net, masks, x, steps=steps, batch_size=32, learning_rate=1e-2,
                             schedule=schedule, held_out=held, checks=checks,
                             on_check=lambda k, d: seen.update(
                                 {k: np.concatenate([w.ravel() for w in
                                                     weights_lib.get_trainable(net)])}))
        return seen

    cycles = weights_at_checks(40, 4, "restarts")
    assert sorted(cycles) == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(cycles[10], weights_at_checks(10, 1, "cosine")[10],
                               rtol=1e-5, atol=1e-6)
    # Later cycles restart at the full rate: they are not the 40-step cosine run's.
    long = weights_at_checks(40, 4, "cosine")
    assert np.max(np.abs(cycles[40] - long[40])) > 1e-3
    np.testing.assert_allclose(weights_at_checks(40, 1, "restarts")[40], long[40],
                               rtol=1e-5, atol=1e-6)

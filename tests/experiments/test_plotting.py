"""Plots: laid out to be read at 100 %."""
import matplotlib.image
import numpy as np

from tfgeo.experiments import plotting


def test_eight_heat_maps_are_a_near_square_grid_not_a_strip(tmp_path):
    # runners.continual's accuracy.png: one map per method, eight methods.
    matrices = {f"method {i}": np.random.default_rng(i).random((5, 5)) for i in range(8)}
    path = plotting.matrix_plot(str(tmp_path / "m.png"), matrices, "task j", "task i", "R")
    height, width = matrix_shape = matplotlib.image.imread(path).shape[:2]
    assert 0.5 < width / height < 2.0, matrix_shape  # a row of eight was 3,168 x 432
    assert width <= 1800


def _visible_tick_labels(ax):
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    low, high = ax.get_xlim()
    labels = [(t.get_position()[0], t.get_text(), t.get_window_extent(renderer))
              for axis_ticks in (ax.xaxis.get_major_ticks(), ax.xaxis.get_minor_ticks())
              for t in (tick.label1 for tick in axis_ticks)
              if t.get_visible() and t.get_text() and low <= t.get_position()[0] <= high]
    return sorted(labels, key=lambda label: label[0])


def test_log_axes_over_one_decade_have_plain_labels_that_do_not_overlap():
    # The frontier plots: gradient-equivalents 434 ... 4,335 on a 5-inch panel, where
    # matplotlib's default labelled the minor ticks and 3x10^3 ran into 4x10^3.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for xs in ([434, 867, 1994, 4335], [434, 867, 1994], [600, 900, 1300], [10, 1e5]):
        fig, ax = plt.subplots(figsize=(5.0, 4.0), dpi=120)
        ax.plot(xs, np.arange(len(xs)))
        ax.set_xscale("log")
        plotting._plain_log_ticks(ax, xs)
        labels = _visible_tick_labels(ax)
        plt.close(fig)
        assert len(labels) >= 2, (xs, [text for _, text, _ in labels])
        for (_, text, box), (_, next_text, next_box) in zip(labels, labels[1:]):
            # a gap of a character's width at least: "800900" touched but did not overlap
            assert next_box.x0 - box.x1 > 0.5 * box.height, (xs, text, next_text)
        assert all("^" not in text and "times" not in text for _, text, _ in labels), labels

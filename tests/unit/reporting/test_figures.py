"""What the figures promise: one colour per method everywhere, coinciding lines kept apart and
named, error bars described only as what they are, learning curves from the stored epochs."""

import matplotlib.colors as mcolors
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import sparsetrain as st
from sparsetrain.reporting.curves import has_curves, plot_run_curves, run_curves_figure
from sparsetrain.reporting.study import seeds_note
from sparsetrain.reporting.style import coinciding, method_color, plot_layer_lines


def test_every_registered_method_has_its_own_fixed_colour():
    colours = {m: method_color(m) for m in st.list_methods()}
    shared = sorted(m for m in colours if list(colours.values()).count(colours[m]) > 1)
    assert not shared, f"methods {shared} share a colour: give them their own in style.METHOD_COLORS"
    assert method_color("dense") == "#000000"
    assert method_color("some-new-method") == method_color("some-new-method")  # stable by name
    assert all(mcolors.is_color_like(c) for c in colours.values())


def test_coinciding_layer_lines_are_drawn_side_by_side_and_named_in_the_legend():
    erk = [1.0, 0.06, 0.03, 0.6]
    lines = {"static": ("static", erk), "rigl": ("rigl", list(erk)), "snip": ("snip", [0.5, 0.1, 0.05, 0.4])}
    assert coinciding(lines) == {"static": ["rigl"], "rigl": ["static"]}
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    plot_layer_lines(ax, lines)
    drawn = {line.get_label(): line for line in ax.get_lines()}
    assert set(drawn) == {"static [A]", "rigl [A]", "snip"}  # the shared allocation is named by its letter
    drawn = {label.split(" [")[0]: line for label, line in drawn.items()}
    assert drawn["static"].get_color() == method_color("static") and drawn["rigl"].get_color() == method_color("rigl")
    # equal values, different x: both stay visible; markers and dashes differ too
    assert list(drawn["static"].get_ydata()) == list(drawn["rigl"].get_ydata())
    assert all(a != b for a, b in zip(drawn["static"].get_xdata(), drawn["rigl"].get_xdata()))
    assert drawn["static"].get_marker() != drawn["rigl"].get_marker()
    assert drawn["static"].get_linestyle() != drawn["rigl"].get_linestyle()
    assert "same allocation" in ax.get_legend().get_title().get_text()


def test_error_bars_are_called_std_over_seeds_only_with_two_or_more():
    assert seeds_note([{"n_seeds": 1}, {"n_seeds": 1}]) == "one seed: no error bars"
    assert seeds_note([{"n_seeds": 3}, {"n_seeds": 3}]) == "mean ± std over 3 seeds"
    assert seeds_note([{"n_seeds": 1}, {"n_seeds": 2}]) == "mean ± std where n ≥ 2 seeds"


def test_learning_curves_come_from_the_stored_epochs(tmp_path):
    epochs = [{"epoch": k, "train_loss": 2.0 / k, "val_loss": 2.1 / k, "test_loss": 2.2 / k, "train_acc": 0.2 * k,
               "val_acc": 0.19 * k, "test_acc": 0.18 * k, "density": 0.1, "itop_rate": 0.1 + 0.05 * k}
              for k in (1, 2, 3)]
    assert has_curves(epochs) and not has_curves([{"epoch": 1}])
    loss, acc, sparse = run_curves_figure(epochs).axes
    lines = {(ax, line.get_label()): list(line.get_ydata()) for ax in (loss, acc, sparse) for line in ax.get_lines()}
    assert lines[(loss, "val")] == pytest.approx([2.1, 1.05, 0.7])
    assert lines[(loss, "test")] == pytest.approx([2.2, 1.1, 2.2 / 3])
    assert lines[(acc, "train")] == pytest.approx([20, 40, 60])  # accuracy in %
    assert lines[(sparse, "density")] == pytest.approx([0.1] * 3)
    assert lines[(sparse, "ITOP rate")] == pytest.approx([0.15, 0.2, 0.25])
    assert list(loss.get_lines()[0].get_xdata()) == [1, 2, 3]
    png = plot_run_curves(epochs, tmp_path / "c.png", title="r/seed_0")
    assert png.read_bytes()[:4] == b"\x89PNG"


def _axis_after(values):
    from matplotlib.figure import Figure

    from sparsetrain.reporting.style import accuracy_axis

    ax = Figure().subplots()
    ax.plot(range(len(values)), values)
    before = ax.get_ylim()
    accuracy_axis(ax)
    return before, ax.get_ylim()


def test_an_accuracy_axis_spans_at_least_ten_points_inside_0_to_100():
    _, near_top = _axis_after([97.1, 97.6])       # middle 97.35: 92.35..102.35 would pass 100
    assert near_top == pytest.approx((90.0, 100.0))
    _, near_zero = _axis_after([2.0, 3.0])         # middle 2.5: -2.5..7.5 would pass 0
    assert near_zero == pytest.approx((0.0, 10.0))
    _, middle = _axis_after([50.0, 51.0])          # matplotlib's 5% margins keep the middle at 50.5
    assert middle == pytest.approx((45.5, 55.5))
    before, wide = _axis_after([40.0, 90.0])       # already wider than 10 points: left as it is
    assert wide == before and wide[1] - wide[0] > 50

"""figures.label_points: every point's name readable beside it (no name over another name, a marker or the
legend), checked on the figure's own pixel boxes with matplotlib's Bbox.overlaps."""

import itertools

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from sparsebert import figures


@pytest.fixture
def ax():
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.set(xlim=(0, 10), ylim=(0, 10))
    yield ax
    plt.close(fig)


def boxes(texts, renderer) -> list[Bbox]:
    out = []
    for t in texts:
        t.update_positions(renderer)
        out.append(Text.get_window_extent(t, renderer))
    return out


def marker_box(ax, x, y) -> Bbox:
    px, py = ax.transData.transform((x, y))
    half = 3 * ax.figure.dpi / 72  # a default scatter marker is 6 points wide
    return Bbox.from_bounds(px - half, py - half, 2 * half, 2 * half)


def test_tied_and_close_points_get_one_free_place_each(ax):
    """Three variants with equal scores and one beside them: at one fixed offset their names would be printed
    over each other (the smoke figure's dense / no_diagonal)."""
    named = [("dense", 5, 5), ("no_diagonal", 5, 5), ("strided", 5, 5), ("star", 5.2, 5)]
    texts = figures.label_points(ax, named)
    renderer = ax.figure.canvas.get_renderer()
    placed = boxes(texts, renderer)
    assert [t.get_text() for t in texts] == ["dense", "no_diagonal", "strided", "star"]
    assert [t.xy for t in texts] == [(5, 5), (5, 5), (5, 5), (5.2, 5)]
    for a, b in itertools.combinations(placed, 2):
        assert not a.overlaps(b)
    for box, (x, y) in itertools.product(placed, [(5, 5), (5.2, 5)]):
        assert not box.overlaps(marker_box(ax, x, y))
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in placed)


def test_a_lone_point_is_named_up_and_right_without_a_leader_line(ax):
    (text,) = figures.label_points(ax, [("dense", 2, 2)])
    assert text.get_position() == (4, 4) and text.get_anncoords() == "offset points"
    assert (text.get_ha(), text.get_va()) == ("left", "bottom") and text.arrow_patch is None


def test_a_name_at_the_right_edge_goes_left_inside_the_frame(ax):
    (text,) = figures.label_points(ax, [("a_long_variant_name", 9.9, 5)])
    renderer = ax.figure.canvas.get_renderer()
    (box,) = boxes([text], renderer)
    assert text.get_ha() == "right" and box.x1 <= ax.get_window_extent(renderer).x1


def test_a_name_beyond_the_nearest_ring_gets_a_leader_line(ax):
    """Nine tied points do not fit in the nearest ring (eight places, some of which overlap for these names):
    the names placed farther out get a line to their point, the near ones none, and none overlaps another."""
    texts = figures.label_points(ax, [(f"v{i}", 5, 5) for i in range(9)])
    far = [max(map(abs, t.get_position())) > 4 for t in texts]
    assert any(far) and [t.arrow_patch is not None for t in texts] == far
    for a, b in itertools.combinations(boxes(texts, ax.figure.canvas.get_renderer()), 2):
        assert not a.overlaps(b)


def test_names_keep_clear_of_the_legend(ax):
    ax.scatter([9], [9], label="a legend entry")
    ax.legend(loc="upper right")
    renderer = ax.figure.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    (text,) = figures.label_points(ax, [("under_the_legend", 8.5, 9.2)])
    (box,) = boxes([text], renderer)
    assert not box.overlaps(legend)


@pytest.mark.parametrize("a, b, area", [
    ((0, 0, 2, 2), (1, 1, 3, 3), 1.0),      # a 1 x 1 corner
    ((0, 0, 4, 2), (1, -1, 2, 5), 2.0),     # a 1 x 2 strip
    ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),      # touching edges share no area
    ((0, 0, 1, 1), (3, 3, 4, 4), 0.0)])  # fmt: skip
def test_overlap_area(a, b, area):
    assert figures.overlap_area(Bbox.from_extents(*a), Bbox.from_extents(*b)) == area
    assert figures.overlap_area(Bbox.from_extents(*b), Bbox.from_extents(*a)) == area


def test_a_later_tight_layout_does_not_move_the_axes_under_the_names(ax):
    """save() runs tight_layout after the names are placed in pixels: a name that could not fit inside the frame
    must not make it shrink the axes (which would move every point away from its name)."""
    ax.figure.tight_layout()
    before = ax.get_position().bounds
    figures.label_points(ax, [("a" * 95, 5, 5)])  # wider than the axes (390 pixels), narrower than the figure
    ax.figure.tight_layout()
    assert ax.get_position().bounds == pytest.approx(before, abs=1e-9)

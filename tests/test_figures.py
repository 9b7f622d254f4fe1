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


def counting_annotate(ax, monkeypatch) -> list:
    calls = []
    annotate = ax.annotate
    monkeypatch.setattr(ax, "annotate", lambda *a, **kw: calls.append(kw["xytext"]) or annotate(*a, **kw))
    return calls


def test_a_lone_point_is_named_up_and_right_in_one_try_without_a_leader_line(ax, monkeypatch):
    calls = counting_annotate(ax, monkeypatch)
    (text,) = figures.label_points(ax, [("dense", 2, 2)])
    assert text.get_position() == (4, 4) and text.get_anncoords() == "offset points" and text.get_fontsize() == 7
    assert (text.get_ha(), text.get_va()) == ("left", "bottom") and text.arrow_patch is None
    assert calls == [(4, 4)]  # the search stops at the first free place
    assert figures.label_points(ax, [("big", 5, 5)], fontsize=9)[0].get_fontsize() == 9
    assert figures.label_points(ax, []) == []


def test_a_name_at_the_right_edge_goes_left_inside_the_frame(ax, monkeypatch):
    calls = counting_annotate(ax, monkeypatch)
    (text,) = figures.label_points(ax, [("a_long_variant_name", 9.9, 5)])
    renderer = ax.figure.canvas.get_renderer()
    (box,) = boxes([text], renderer)
    assert text.get_ha() == "right" and box.x1 <= ax.get_window_extent(renderer).x1
    assert calls == [(4, 4), (4, -4), (-4, 4)]  # both places on the right leave the frame


def test_a_name_keeps_clear_of_a_neighbours_marker(ax):
    """The neighbour sits where the first point's name would go first (up and right): the name goes elsewhere."""
    px, py = ax.transData.transform((5, 5))
    scale = ax.figure.dpi / 72
    nx, ny = ax.transData.inverted().transform((px + 10 * scale, py + 7 * scale))  # inside that first place
    first, _ = figures.label_points(ax, [("a_variant", 5, 5), ("b", nx, ny)])
    (box,) = boxes([first], ax.figure.canvas.get_renderer())
    assert first.get_position() != (4, 4) and not box.overlaps(marker_box(ax, nx, ny))


def test_each_name_touches_its_offset_on_the_side_facing_its_point(ax):
    """A name right of its point starts at the offset (left-aligned), one left of it ends there, one straight
    above or below is centred on it; the same for the rows: the name sits beside the point, never over it."""
    texts = figures.label_points(ax, [(f"v{i}", 5, 5) for i in range(12)])
    renderer = ax.figure.canvas.get_renderer()
    px, py = ax.transData.transform((5, 5))
    scale = ax.figure.dpi / 72
    directions = {tuple(int(v > 0) - int(v < 0) for v in t.get_position()) for t in texts}
    assert directions >= {(1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)}
    for text, box in zip(texts, boxes(texts, renderer)):
        dx, dy = text.get_position()
        x = box.x0 if dx > 0 else box.x1 if dx < 0 else (box.x0 + box.x1) / 2
        y = box.y0 if dy > 0 else box.y1 if dy < 0 else (box.y0 + box.y1) / 2
        assert (x, y) == (pytest.approx(px + dx * scale, abs=1.5), pytest.approx(py + dy * scale, abs=1.5))


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
    ((0, 0, 2, 1), (0, 3, 2, 4), 0.0),      # one above the other: they share columns, not rows
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

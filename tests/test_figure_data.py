"""What the claim figures draw: the lines, bands and images of figures.keep_trajectories, importance,
dam_u_snapshots and loss_curves, read back from matplotlib's artists, hold the run's numbers. The runs are tiny and
made by hand with values that differ in every seed, step, head and offset, so that a figure drawing the wrong
seed, head, offset or statistic shows a wrong number here; expected values are computed in plain Python loops."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from sparsebert import figures

STEPS = np.array([0, 10, 20])
SEEDS = (0, 1)


def dam_s_keep(seed: int, heads: int = 2, L: int = 12) -> np.ndarray:
    """(T, H, L) keep probabilities per offset, distinct everywhere: 0.9 - offset / 20 - step index / 50 plus a
    head and seed term (offset 0, the diagonal, is the largest at step 0 and falls fastest)."""
    t, h, k = np.meshgrid(np.arange(len(STEPS)), np.arange(heads), np.arange(L), indexing="ij")
    return 0.9 - k / 20 - t / 50 * (1 + 3 * (k == 0)) + h / 100 + seed / 1000


def dam_u_keep(seed: int, heads: int = 2, L: int = 3) -> np.ndarray:
    """(T, H, L, L) keep probabilities per entry, distinct everywhere."""
    t, h, i, j = np.meshgrid(np.arange(len(STEPS)), np.arange(heads), np.arange(L), np.arange(L), indexing="ij")
    return 0.2 + i / 10 + j / 40 + t / 100 + h / 7 + seed / 1000


def write_run(tmp_path, searches: dict) -> dict:
    """A run's params ({name: keep(seed)} for the searches, one fixed variant besides) with snapshots.npz and
    log.jsonl files; the log's losses: mlm = step / 10 + seed, nsp = 1 + variant index."""
    variants = []
    for index, (name, keep_of) in enumerate({"dense": None, **searches}.items()):
        for seed in SEEDS:
            folder = tmp_path / name / str(seed)
            folder.mkdir(parents=True)
            if keep_of is not None:
                np.savez(folder / "snapshots.npz", steps=STEPS, keep_prob=keep_of(seed))
            rows = [{"step": int(s), "mlm_loss": s / 10 + seed, "nsp_loss": 1.0 + index} for s in (5, 10)]
            (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        kind = "fixed" if keep_of is None else name.split("_lambda")[0]
        variants.append({"name": name, "kind": kind, "role": "fixed" if keep_of is None else "search",
                         "pretrained": str(tmp_path / name / "{seed}")})
    return {"seeds": list(SEEDS), "variants": variants, "scale": "hand-made"}


@pytest.fixture
def drawn(monkeypatch):
    """The figures that `save` was given, by name, instead of files."""
    figs = {}
    monkeypatch.setattr(figures, "save", lambda fig, out, name, tight=True: figs.update({name: fig}))
    return figs


def line(ax, label: str):
    (found,) = [ln for ln in ax.lines if ln.get_label() == label]
    return found


def band(collection: PolyCollection) -> tuple[list[float], list[float]]:
    """The lower and upper edge of a fill_between band at each of STEPS."""
    vertices = collection.get_paths()[0].vertices
    lows = [min(y for x, y in vertices if x == s) for s in STEPS]
    highs = [max(y for x, y in vertices if x == s) for s in STEPS]
    return lows, highs


def test_keep_trajectories_draw_each_seeds_diagonal_and_the_offsets_bands_of_each_head(tmp_path, drawn):
    p = write_run(tmp_path, {"dam_s_lambda1": dam_s_keep, "dam_u_lambda1": dam_u_keep})
    figures.keep_trajectories(p, tmp_path)
    axes = np.array(drawn["keep_trajectories"].axes).reshape(2, 2)  # (runs, heads)
    keeps = {seed: dam_s_keep(seed) for seed in SEEDS}
    for h, ax in enumerate(axes[0]):
        diagonals = [ln for ln in ax.lines if ln.get_color() == "tab:red"]
        assert [ln.get_ydata().tolist() for ln in diagonals] == [
            pytest.approx([keeps[s][t][h][0] for t in range(3)]) for s in SEEDS]
        for label, offsets, polygon in (("offsets 1-8 (mean, range)", range(1, 9), 1),
                                        ("offsets > 8 (mean, range)", range(9, 12), 0)):
            values = [[keeps[s][t][h][k] for s in SEEDS for k in offsets] for t in range(3)]
            assert line(ax, label).get_ydata() == pytest.approx([sum(v) / len(v) for v in values])
            assert band(ax.collections[polygon]) == (pytest.approx([min(v) for v in values]),
                                                    pytest.approx([max(v) for v in values]))
        assert [ln.get_ydata()[0] for ln in ax.lines if ln.get_linestyle() in ("--", ":")] == [0.25, 0.5]
    # DAM_u: the diagonal is the mean of the L diagonal entries (L = 3: offsets 1 and 2 only, the far band empty).
    for h, ax in enumerate(axes[1]):
        keeps = {seed: dam_u_keep(seed) for seed in SEEDS}
        diagonals = [ln.get_ydata().tolist() for ln in ax.lines if ln.get_color() == "tab:red"]
        assert diagonals == [pytest.approx([sum(keeps[s][t][h][i][i] for i in range(3)) / 3 for t in range(3)])
                             for s in SEEDS]
        entries = {k: [(i, j) for i in range(3) for j in range(3) if abs(i - j) == k] for k in (1, 2)}  # both sides
        means = [[sum(keeps[s][t][h][i][j] for i, j in entries[k]) / len(entries[k]) for s in SEEDS for k in (1, 2)]
                 for t in range(3)]  # fmt: skip
        assert line(ax, "offsets 1-8 (mean, range)").get_ydata() == pytest.approx([sum(m) / 4 for m in means])
        assert len(ax.collections) == 1 and not [ln for ln in ax.lines if ln.get_label().startswith("offsets >")]


def test_importance_draws_every_head_and_seed_with_the_other_positions_mean_and_range(tmp_path, drawn):
    p = write_run(tmp_path, {"dam_s_lambda1": dam_s_keep})
    figures.importance(p, tmp_path)
    (ax,) = drawn["importance"].axes
    keeps = {seed: dam_s_keep(seed) for seed in SEEDS}
    heads = [(s, h) for s in SEEDS for h in range(2)]  # seeds' heads side by side, seed by seed
    red = [ln.get_ydata().tolist() for ln in ax.lines if ln.get_color() == "tab:red"]
    blue = [ln.get_ydata().tolist() for ln in ax.lines if ln.get_color() == "tab:blue"]
    assert red == [pytest.approx([keeps[s][t][h][0] for t in range(3)]) for s, h in heads]
    assert blue == [pytest.approx([sum(keeps[s][t][h][1:]) / 11 for t in range(3)]) for s, h in heads]
    others = [[keeps[s][t][h][k] for s, h in heads for k in range(1, 12)] for t in range(3)]
    assert band(ax.collections[0]) == (pytest.approx([min(v) for v in others]), pytest.approx([max(v) for v in others]))
    assert ax.get_title() == "dam_s_lambda1 (2 seed(s))"


def test_dam_u_snapshots_show_the_head_mean_at_evenly_spaced_steps_on_a_scale_centred_on_one_half(tmp_path, drawn):
    p = write_run(tmp_path, {"dam_u_lambda1": dam_u_keep})
    figures.dam_u_snapshots(p, tmp_path, shown=2)
    fig = drawn["dam_u_snapshots"]
    panels = [ax for ax in fig.axes if ax.images]
    keep = dam_u_keep(0)  # the first seed
    assert [ax.get_title() for ax in panels] == ["dam_u_lambda1 s0\nstep 0", "dam_u_lambda1 s0\nstep 20"]
    for ax, t in zip(panels, (0, 2)):
        expected = [[(keep[t][0][i][j] + keep[t][1][i][j]) / 2 for j in range(3)] for i in range(3)]
        assert ax.images[0].get_array().tolist() == [pytest.approx(row) for row in expected]
    deviation = max(abs((keep[t][0][i][j] + keep[t][1][i][j]) / 2 - 0.5)
                    for t in range(3) for i in range(3) for j in range(3))
    assert panels[0].images[0].get_clim() == pytest.approx((0.5 - deviation, 0.5 + deviation))


def test_loss_curves_are_mlm_plus_nsp_averaged_over_seeds_in_the_figure_and_its_csv(tmp_path, drawn):
    p = write_run(tmp_path, {"dam_s_lambda1": dam_s_keep})
    figures.loss_curves(p, tmp_path)
    # mlm = step / 10 + seed (seeds 0 and 1: mean step / 10 + 0.5), nsp = 1 + the variant's index
    expected = {"dense": [0.5 + 0.5 + 1, 1.0 + 0.5 + 1], "dam_s_lambda1": [0.5 + 0.5 + 2, 1.0 + 0.5 + 2]}
    (ax,) = drawn["loss_curves"].axes
    assert {ln.get_label(): ln.get_ydata().tolist() for ln in ax.lines} == expected
    assert [ln.get_xdata().tolist() for ln in ax.lines] == [[5, 10], [5, 10]]
    csv = (tmp_path / "loss_curves.csv").read_text().splitlines()
    assert csv == ["step,dense,dam_s_lambda1", "5,2.0,3.0", "10,2.5,3.5"]

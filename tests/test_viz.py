"""Tests for jrs_jax.viz (headless matplotlib figures)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from matplotlib.image import imread

from jrs_jax import viz

PNG_SIG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_pyplot_figures():
    import matplotlib.pyplot as plt

    before = list(plt.get_fignums())
    yield
    assert plt.get_fignums() == before == []


def _labels2d(h=12, w=12):
    lab = np.zeros((h, w), np.int32)
    lab[2:6, 2:6] = 1
    lab[7:11, 6:10] = 3
    return lab


def _save_and_check(fig, tmp_path, name="fig.png"):
    assert isinstance(fig, Figure)
    out = viz.save_figure(fig, tmp_path / "sub" / name)
    assert out.read_bytes()[:8] == PNG_SIG
    arr = imread(out)
    w, h = fig.get_size_inches() * fig.dpi
    assert arr.shape[:2] == (round(h), round(w))
    leftovers = [p.name for p in out.parent.iterdir() if p.name != name]
    assert leftovers == []
    return arr


def _contour_gids(ax):
    return sorted(c.get_gid() for c in ax.collections if isinstance(c, ContourSet))


def _lines(ax, kind):
    return {
        int(line.get_gid().split(":")[1]): line
        for line in ax.lines
        if (line.get_gid() or "").startswith(kind + ":")
    }


def _folding_pct(ax):
    m = re.search(r"folding ([0-9.]+) %", ax.get_title())
    assert m, ax.get_title()
    return float(m.group(1))


# ---------------------------------------------------------------------------- save_figure


def test_save_figure_atomic_and_overwrites(tmp_path):
    fig = viz.overlay(np.zeros((8, 8)))
    _save_and_check(fig, tmp_path)
    _save_and_check(fig, tmp_path)  # overwrite in place, still no temp files


def test_save_figure_failure_leaves_no_temp(tmp_path):
    class Boom:
        dpi = 100

        def savefig(self, *a, **k):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        viz.save_figure(Boom(), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- overlay


def test_overlay_2d_one_contour_per_label(tmp_path):
    rng = np.random.default_rng(0)
    fig = viz.overlay(rng.random((12, 12)), _labels2d(), title="t")
    ax = fig.axes[0]
    assert _contour_gids(ax) == ["label:1", "label:3"]
    _save_and_check(fig, tmp_path)


def test_overlay_contours_of_and_colours():
    fig = viz.overlay(np.zeros((12, 12)), _labels2d(), contours_of=[3])
    assert _contour_gids(fig.axes[0]) == ["label:3"]
    # Same label value -> same colour across figures.
    a = viz.overlay(np.zeros((12, 12)), _labels2d()).axes[0]
    b = viz.overlay(np.zeros((12, 12)), _labels2d()).axes[0]
    ca = [c for c in a.collections if isinstance(c, ContourSet)]
    cb = [c for c in b.collections if isinstance(c, ContourSet)]
    for x, y in zip(ca, cb):
        np.testing.assert_allclose(x.get_edgecolor(), y.get_edgecolor())
    assert not np.allclose(ca[0].get_edgecolor(), ca[1].get_edgecolor())


def test_overlay_3d_channels_batch_and_jax(tmp_path):
    import jax.numpy as jnp

    lab = np.zeros((6, 12, 12), np.int32)
    lab[3] = _labels2d()
    lab[0, 1:4, 1:4] = 2  # not in the middle slice
    img = jnp.asarray(np.random.default_rng(1).random((1, 6, 12, 12, 2)), jnp.float32)
    fig = viz.overlay(img, jnp.asarray(lab)[None])
    assert _contour_gids(fig.axes[0]) == ["label:1", "label:3"]
    fig0 = viz.overlay(img, lab, axis=0, index=0)
    assert _contour_gids(fig0.axes[0]) == ["label:2"]
    fig2 = viz.overlay(np.zeros((6, 12, 12)), lab, axis=2, index=3)
    assert fig2.axes[0].images[0].get_array().shape == (6, 12)
    _save_and_check(fig, tmp_path)


def test_overlay_image_only_shapes():
    assert viz.overlay(np.zeros((1, 8, 10))).axes[0].images[0].get_array().shape == (8, 10)
    assert viz.overlay(np.zeros((8, 10, 1))).axes[0].images[0].get_array().shape == (8, 10)
    vol = viz.overlay(np.zeros((6, 8, 10)), axis=1)
    assert vol.axes[0].images[0].get_array().shape == (6, 10)


def test_overlay_bad_inputs():
    with pytest.raises(ValueError, match=r"\(12, 12\)"):
        viz.overlay(np.zeros((10, 10)), _labels2d())
    with pytest.raises(ValueError, match=r"\(5,\)"):
        viz.overlay(np.zeros(5))
    with pytest.raises(ValueError, match="integer"):
        viz.overlay(np.zeros((12, 12)), _labels2d() + 0.5)
    with pytest.raises(ValueError, match="index"):
        viz.overlay(np.zeros((4, 8, 8)), axis=0, index=9)
    with pytest.raises(ValueError, match="axis"):
        viz.overlay(np.zeros((4, 8, 8)), axis=3)


# ---------------------------------------------------------------------------- deformation_grid


@pytest.mark.parametrize("batch", [False, True])
def test_deformation_grid_shift_axis0_moves_rows_down(batch, tmp_path):
    zero = np.zeros((9, 9, 2), np.float32)
    shift = zero.copy()
    shift[..., 0] = 2.0
    if batch:
        zero, shift = zero[None], shift[None]
    a = viz.deformation_grid(zero, spacing=4).axes[0]
    b = viz.deformation_grid(shift, spacing=4).axes[0]
    rows_a, rows_b = _lines(a, "row"), _lines(b, "row")
    assert sorted(rows_a) == sorted(rows_b) == [0, 4, 8]
    assert sorted(_lines(a, "col")) == [0, 4, 8]
    for r in rows_a:
        np.testing.assert_allclose(rows_a[r].get_ydata(), r)
        np.testing.assert_allclose(rows_b[r].get_ydata(), np.asarray(rows_a[r].get_ydata()) + 2)
        np.testing.assert_allclose(rows_b[r].get_xdata(), rows_a[r].get_xdata())
    # imshow orientation: y axis inverted (larger y drawn lower).
    lo, hi = b.get_ylim()
    assert lo > hi
    _save_and_check(b.figure, tmp_path)


def test_deformation_grid_shift_axis1_moves_cols_right():
    zero = np.zeros((9, 9, 2))
    shift = zero.copy()
    shift[..., 1] = 2.0
    a = _lines(viz.deformation_grid(zero, spacing=4).axes[0], "col")
    b = _lines(viz.deformation_grid(shift, spacing=4).axes[0], "col")
    for c in a:
        np.testing.assert_allclose(a[c].get_xdata(), c)
        np.testing.assert_allclose(b[c].get_xdata(), np.asarray(a[c].get_xdata()) + 2)
        np.testing.assert_allclose(b[c].get_ydata(), a[c].get_ydata())


def test_deformation_grid_3d_in_plane_components():
    u = np.zeros((5, 8, 8, 3))
    u[..., 0] = 7.0  # out of plane for axis=0: must not show
    u[..., 1] = 1.0  # rows of the axis-0 plane
    u[..., 2] = -1.0  # columns
    ax = viz.deformation_grid(u, spacing=4, axis=0).axes[0]
    rows, cols = _lines(ax, "row"), _lines(ax, "col")
    np.testing.assert_allclose(rows[4].get_ydata(), 5.0)
    np.testing.assert_allclose(cols[4].get_xdata(), 3.0)
    # axis=2 plane: rows = array axis 0 (component 0), columns = axis 1 (component 1).
    ax2 = viz.deformation_grid(u, spacing=4, axis=2).axes[0]
    np.testing.assert_allclose(_lines(ax2, "row")[4].get_ydata(), 11.0)
    np.testing.assert_allclose(_lines(ax2, "col")[4].get_xdata(), 5.0)
    assert len(_lines(ax2, "row")[0].get_xdata()) == 8


def test_deformation_grid_bad_inputs():
    with pytest.raises(ValueError, match=r"\(8, 8, 3\)"):
        viz.deformation_grid(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        viz.deformation_grid(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="spacing"):
        viz.deformation_grid(np.zeros((8, 8, 2)), spacing=0)


# ---------------------------------------------------------------------------- jacobian_map


def test_jacobian_map_identity_and_folded(tmp_path):
    fig = viz.jacobian_map(np.zeros((10, 10, 2)))
    assert _folding_pct(fig.axes[0]) == 0.0
    assert len(fig.axes) == 2  # image + colorbar
    _save_and_check(fig, tmp_path)

    u = np.zeros((10, 10, 2))
    u[..., 0] = -1.5 * np.arange(10)[:, None]  # d u0 / d x0 = -1.5 -> J = -0.5
    fig = viz.jacobian_map(u)
    assert _folding_pct(fig.axes[0]) == pytest.approx(100.0)
    assert len(fig.axes[0].images) == 2  # map + folding highlight


def test_jacobian_map_3d_partial_folding():
    u = np.zeros((6, 8, 8, 3), np.float32)
    u[:, 2:5, :, 1] = -3.0 * np.arange(3)[None, :, None]  # compress/fold along axis 1
    fig = viz.jacobian_map(u, axis=2)
    pct = _folding_pct(fig.axes[0])
    assert 0.0 < pct < 100.0
    assert "slice" in fig.axes[0].get_title()
    assert fig.axes[0].images[0].get_array().shape == (6, 8)


def test_jacobian_map_bad_input():
    with pytest.raises(ValueError, match=r"\(4, 4, 4, 2\)"):
        viz.jacobian_map(np.zeros((4, 4, 4, 2)))


# ---------------------------------------------------------------------------- registration_panel


def test_registration_panel_2d(tmp_path):
    rng = np.random.default_rng(2)
    f, m = rng.random((12, 12)), rng.random((12, 12))
    lf = _labels2d()
    lm = np.roll(lf, 1, axis=0)
    fig = viz.registration_panel(
        f, m, f, fixed_labels=lf, moving_labels=lm, warped_labels=lf, disp=np.zeros((12, 12, 2))
    )
    assert len(fig.axes) == 8  # 7 panels + Jacobian colorbar
    warped_ax = fig.axes[2]
    sets = [c for c in warped_ax.collections if isinstance(c, ContourSet)]
    assert len(sets) == 4  # own (solid) + fixed (dashed), 2 labels each
    assert "mean 0" in fig.axes[4].get_title()
    _save_and_check(fig, tmp_path)


def test_registration_panel_3d_no_disp(tmp_path):
    rng = np.random.default_rng(3)
    vol = rng.random((6, 10, 10, 1))
    fig = viz.registration_panel(vol, vol[None], vol[..., 0], axis=1, index=2)
    assert len(fig.axes) == 5
    assert fig.axes[0].images[0].get_array().shape == (6, 10)
    _save_and_check(fig, tmp_path)


def test_registration_panel_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(10, 10\).*\(12, 12\)"):
        viz.registration_panel(np.zeros((12, 12)), np.zeros((10, 10)), np.zeros((12, 12)))
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        viz.registration_panel(
            np.zeros((12, 12)),
            np.zeros((12, 12)),
            np.zeros((12, 12)),
            fixed_labels=np.zeros((8, 8), np.int32),
        )
    with pytest.raises(ValueError, match=r"\(12, 12\).*\(6, 6\)"):
        viz.registration_panel(
            np.zeros((12, 12)), np.zeros((12, 12)), np.zeros((12, 12)), disp=np.zeros((6, 6, 2))
        )


# ---------------------------------------------------------------------------- field_comparison


def _mean_epe(ax):
    m = re.search(r"mean ([-0-9.e+]+)", ax.get_title())
    assert m, ax.get_title()
    return float(m.group(1))


def _fields2d(h=16, w=16):
    rng = np.random.default_rng(4)
    gt = rng.normal(size=(h, w, 2))
    other = gt + rng.normal(scale=0.5, size=(h, w, 2))
    return gt, other


def test_field_comparison_with_gt_and_regions(tmp_path):
    gt, other = _fields2d()
    regions = _labels2d(16, 16)
    fig = viz.field_comparison(
        {"exact": gt.copy(), "noisy": other[None]}, gt=gt, regions=regions, spacing=4
    )
    assert len(fig.axes) == 7  # 2 rows x (ground truth + 2 fields) + EPE colorbar
    top, bottom = fig.axes[:3], fig.axes[3:6]
    assert [ax.get_title() for ax in top] == ["ground truth", "exact", "noisy"]
    # top row: grids of each field, region contours on top
    for ax in top:
        assert sorted(_lines(ax, "row")) == sorted(_lines(ax, "col")) == [0, 4, 8, 12]
        assert _contour_gids(ax) == ["label:1", "label:3"]
    rows = _lines(top[2], "row")
    np.testing.assert_allclose(rows[4].get_ydata(), 4 + other[4, :, 0])
    np.testing.assert_allclose(rows[4].get_xdata(), np.arange(16) + other[4, :, 1])
    # bottom row: EPE maps on one colour scale, titled with their mean
    epe = np.linalg.norm(other - gt, axis=-1)
    assert _mean_epe(bottom[0]) == 0.0 and _mean_epe(bottom[1]) == 0.0
    assert _mean_epe(bottom[2]) == pytest.approx(epe.mean(), rel=5e-3)
    np.testing.assert_allclose(bottom[2].images[0].get_array(), epe)
    np.testing.assert_allclose(bottom[1].images[0].get_array(), 0.0)
    for ax in bottom:
        assert ax.images[0].get_clim() == pytest.approx((0.0, epe.max()))
        assert _contour_gids(ax) == ["label:1", "label:3"]
    _save_and_check(fig, tmp_path)


def test_field_comparison_without_gt_or_regions(tmp_path):
    gt, other = _fields2d()
    fig = viz.field_comparison({"a": gt, "b": other})
    assert len(fig.axes) == 2  # one row, no error maps, no colorbar
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    for ax in fig.axes:
        assert sorted(_lines(ax, "row")) == list(range(16))  # default pitch: 16 lines across
        assert _contour_gids(ax) == [] and not ax.images
    _save_and_check(fig, tmp_path)


def test_field_comparison_3d_slice(tmp_path):
    rng = np.random.default_rng(5)
    gt = rng.normal(size=(6, 8, 8, 3))
    u = gt.copy()
    u[2, ..., 0] += 1.0  # 1 voxel off in the shown slice (axis 0, index 2) only
    reg = np.zeros((6, 8, 8), np.int32)
    reg[2, 2:5, 2:5] = 2
    fig = viz.field_comparison({"u": u}, gt=gt[None], regions=reg, axis=0, index=2, spacing=4)
    assert len(fig.axes) == 5  # 2 x (ground truth + u) + colorbar
    assert "[axis 0, 2]" in fig.get_suptitle()
    grid, err = fig.axes[1], fig.axes[3]
    assert _contour_gids(grid) == _contour_gids(err) == ["label:2"]
    np.testing.assert_allclose(err.images[0].get_array(), 1.0)
    assert _mean_epe(err) == pytest.approx(1 / 6, rel=5e-3)  # mean over the whole volume
    np.testing.assert_allclose(_lines(grid, "row")[4].get_ydata(), 4 + u[2, 4, :, 1])
    fig2 = viz.field_comparison({"u": u}, gt=gt, axis=2)  # middle slice along axis 2
    assert fig2.axes[2].images[0].get_array().shape == (6, 8)
    _save_and_check(fig, tmp_path)


def test_field_comparison_bad_inputs():
    gt, _ = _fields2d()
    with pytest.raises(ValueError, match="at least one field"):
        viz.field_comparison({})
    with pytest.raises(ValueError, match=r"'small'.*\(12, 12\).*\(16, 16\)"):
        viz.field_comparison({"a": gt, "small": np.zeros((12, 12, 2))})
    with pytest.raises(ValueError, match=r"'gt'.*\(8, 8\)"):
        viz.field_comparison({"a": gt}, gt=np.zeros((8, 8, 2)))
    with pytest.raises(ValueError, match="'bad'"):
        viz.field_comparison({"a": gt, "bad": np.zeros((16, 16, 3))})
    with pytest.raises(ValueError, match="regions"):
        viz.field_comparison({"a": gt}, regions=np.zeros((8, 8), np.int32))


# ---------------------------------------------------------------------------- training_curves


def test_training_curves_groups_points_and_nan(tmp_path):
    hist = [
        {"step": 0, "loss": 1.0, "sim": 0.9, "seconds": 3.0},  # elapsed time: not plotted
        {"step": 10, "loss": 0.5, "sim": float("nan"), "seconds": 90.0},
        {"step": 20, "loss": 0.25, "sim": 0.5, "val/dice": 0.6},
        {"step": 30, "loss": math.inf, "val/dice": 0.7, "note": "x"},
    ]
    fig = viz.training_curves(hist)
    assert len(fig.axes) == 2
    train, val = fig.axes
    lines = {ln.get_label(): ln for ln in train.lines}
    assert sorted(lines) == ["loss", "sim"]
    np.testing.assert_allclose(lines["loss"].get_xdata(), [0, 10, 20])
    np.testing.assert_allclose(lines["loss"].get_ydata(), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(lines["sim"].get_xdata(), [0, 20])
    (vline,) = val.lines
    assert vline.get_label() == "val/dice"
    np.testing.assert_allclose(vline.get_xdata(), [20, 30])
    _save_and_check(fig, tmp_path)


def test_training_curves_keys_logy_and_jsonl(tmp_path):
    import json

    hist = [{"step": i, "loss": 2.0**-i, "reg": 0.0} for i in range(5)]
    fig = viz.training_curves(hist, keys=["loss"], log_y=True)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 5
    timed = [{"step": i, "seconds": 1.0 + i} for i in range(3)]  # asked for: plotted
    assert len(viz.training_curves(timed, keys=["seconds"]).axes[0].lines) == 1
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in hist) + "\n")
    fig2 = viz.training_curves(p, log_y=True)
    reg = next(ln for ln in fig2.axes[0].lines if ln.get_label() == "reg")
    assert len(reg.get_xdata()) == 0  # non-positive values masked on a log axis


def test_training_curves_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        viz.training_curves([])
    with pytest.raises(ValueError, match="numeric"):
        viz.training_curves([{"step": 1, "note": "x"}])


# ---------------------------------------------------------------------------- threads


def test_thread_safe_figures(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def job(i):
        fig = viz.overlay(np.full((8, 8), float(i)), _labels2d(8, 8))
        return viz.save_figure(fig, tmp_path / f"f{i}.png")

    with ThreadPoolExecutor(2) as ex:
        paths = list(ex.map(job, range(4)))
    assert all(p.read_bytes()[:8] == PNG_SIG for p in paths)

"""Tests for jrs_jax.metrics (host-side, numpy/scipy references; small shapes)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from jrs_jax.metrics import (
    assd,
    boundary_band,
    component_counts,
    dice_per_channel,
    dice_per_label,
    endpoint_error,
    folding_fraction,
    hd95,
    jacobian_determinant,
    jacobian_determinant_l2r,
    mean_dice,
    mean_dice_multilabel,
    non_diffeomorphic_volume,
    sdlogj,
    spurious_components,
    summarize_jacobian,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _grid(shape):
    """Identity coordinates ``[*S, D]`` (ij)."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)


def _affine_disp(shape, a):
    """``u(x) = (A - I) x`` in voxel units."""
    x = _grid(shape)
    return x @ (np.asarray(a, float) - np.eye(len(shape))).T


def _smooth_disp(shape, amp, seed=0):
    """Small smooth field: sums of low-frequency sines, amplitude ``amp`` voxels."""
    rng = np.random.default_rng(seed)
    x = _grid(shape)
    d = len(shape)
    u = np.zeros((*shape, d))
    for c in range(d):
        for _ in range(2):
            k = rng.uniform(0.5, 1.0, size=d) * 2 * np.pi / np.asarray(shape)
            u[..., c] += amp * np.sin(x @ k + rng.uniform(0, 2 * np.pi))
    return u


def _folded_block(shape, lo, hi):
    """Zero field except ``u_0 = -2 (x_0 - c)`` on the block ``[lo, hi)^D`` (J = -1 inside)."""
    d = len(shape)
    u = np.zeros((*shape, d))
    block = tuple(slice(lo, hi) for _ in range(d))
    c = (lo + hi - 1) / 2
    u[(*block, 0)] = -2.0 * (_grid(shape)[(*block, 0)] - c)
    return u


def _ref_surface(mask):
    """Surface voxels by scipy binary erosion (face connectivity, outside = background)."""
    st = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=st, border_value=0)


def _ref_directed(a, b, spacing):
    """Brute-force directed surface distances via all-pairs Euclidean distances."""
    pa = np.argwhere(_ref_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(_ref_surface(b)) * np.asarray(spacing)
    dm = cdist(pa, pb)
    return dm.min(axis=1), dm.min(axis=0)


def _ref_jacdet_l2r(disp):
    """Independent L2R-style reference: channel-first field, n-D correlate, np.linalg.det."""
    d = disp.shape[-1]
    f = np.moveaxis(disp, -1, 0)  # [D, *S]
    jac = np.zeros((*disp.shape[:-1], d, d))
    for k in range(d):
        kshape = [1] * d
        kshape[k] = 3
        kern = np.array([-0.5, 0.0, 0.5]).reshape(kshape)
        for c in range(d):
            jac[..., c, k] = ndimage.correlate(f[c], kern, mode="constant", cval=0.0)
    return np.linalg.det(jac + np.eye(d))


def _ref_ndv_percent(disp):
    """Brute-force NDV: loop over cells, build every simplex from its vertices, attribute it to
    its owner vertex, keep owners in the interior [1:-1], average the two decompositions."""
    shape = disp.shape[:-1]
    d = len(shape)
    phi = _grid(shape) + disp
    ident = _grid(shape)
    total = 0.0
    fact = math.factorial(d)

    def signed(points, ref_points):
        e = np.stack([p - points[0] for p in points[1:]], axis=-1)
        e_ref = np.stack([p - ref_points[0] for p in ref_points[1:]], axis=-1)
        return np.linalg.det(e) * np.sign(np.linalg.det(e_ref)) / fact

    def interior(v):
        return all(1 <= v[i] <= shape[i] - 2 for i in range(d))

    for o in itertools.product(*[range(n - 1) for n in shape]):
        o = np.asarray(o)
        simplices = []  # (owner vertex, vertex list)
        for c in itertools.product((0, 1), repeat=d):
            v = o + np.asarray(c)
            s = 1 - 2 * np.asarray(c)
            simplices.append((v, [v] + [v + s[k] * np.eye(d, dtype=int)[k] for k in range(d)]))
        if d == 3:
            even = [(0, 0, 0), (1, 1, 0), (1, 0, 1), (0, 1, 1)]
            odd = [(1, 1, 1), (0, 0, 1), (0, 1, 0), (1, 0, 0)]
            simplices.append((o, [o + np.asarray(p) for p in even]))
            simplices.append((o + 1, [o + np.asarray(p) for p in odd]))
        for owner, verts in simplices:
            if not interior(owner):
                continue
            vol = signed([phi[tuple(v)] for v in verts], [ident[tuple(v)] for v in verts])
            total += 0.5 * max(-vol, 0.0)
    n_interior = np.prod([n - 2 for n in shape])
    return 100.0 * total / n_interior


# --------------------------------------------------------------------------------------------
# Dice
# --------------------------------------------------------------------------------------------


def test_dice_identical_and_disjoint():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, size=(6, 7, 5))
    assert dice_per_label(lab, lab) == {1: 1.0, 2: 1.0, 3: 1.0}
    assert mean_dice(lab, lab) == 1.0
    a = np.zeros((6, 6), int)
    b = np.zeros((6, 6), int)
    a[:3] = 1
    b[3:] = 1
    assert dice_per_label(a, b) == {1: 0.0}


def test_dice_hand_made_value():
    a = np.array([[1, 1, 0, 3], [0, 2, 2, 3]])
    b = np.array([[1, 0, 0, 3], [2, 2, 2, 0]])
    # label 1: |A|=2 |B|=1 inter=1 -> 2/3; label 2: |A|=2 |B|=3 inter=2 -> 4/5; label 3: 2/3
    d = dice_per_label(a, b)
    assert list(d) == [1, 2, 3]
    np.testing.assert_allclose([d[1], d[2], d[3]], [2 / 3, 4 / 5, 2 / 3])
    np.testing.assert_allclose(mean_dice(a, b), (2 / 3 + 4 / 5 + 2 / 3) / 3)
    assert dice_per_label(a, b, labels=[2]) == {2: pytest.approx(0.8)}


def test_dice_absent_label_is_nan_and_mean_ignores_it():
    a = np.array([[1, 1], [0, 0]])
    b = np.array([[1, 1], [2, 0]])  # label 2 only in b
    d = dice_per_label(a, b, labels=[1, 2, 5])  # 5 absent from both
    assert d[1] == 1.0 and math.isnan(d[2]) and math.isnan(d[5])
    assert mean_dice(a, b, labels=[1, 2, 5]) == 1.0
    assert math.isnan(mean_dice(a, b, labels=[2, 5]))
    assert math.isnan(mean_dice(np.zeros((3, 3)), np.zeros((3, 3))))  # no labels at all


def test_dice_accepts_jax_and_float_labels():
    jnp = pytest.importorskip("jax.numpy")
    a = np.array([[0, 1, 1], [2, 2, 0]])
    d = dice_per_label(jnp.asarray(a), a.astype(np.float64))
    assert d == {1: 1.0, 2: 1.0}
    assert all(type(k) is int for k in d)
    with pytest.raises(ValueError):
        dice_per_label(a, a[:, :2])


# --------------------------------------------------------------------------------------------
# HD95 / ASSD
# --------------------------------------------------------------------------------------------


def test_surface_distances_hand_made_point_vs_square():
    a = np.zeros((5, 5), int)
    a[2, 2] = 1
    b = np.zeros((5, 5), int)
    b[1:4, 1:4] = 1  # surface = 8-voxel ring (centre is interior under 4-connectivity)
    # a -> b: 1; b -> a: four at 1, four at sqrt(2)
    assert hd95(a, b, percentile=100)[1] == pytest.approx(math.sqrt(2))
    assert hd95(a, b)[1] == pytest.approx(math.sqrt(2))
    assert assd(a, b)[1] == pytest.approx((1 + 4 + 4 * math.sqrt(2)) / 9)
    # anisotropic: axis-0 neighbours 2 mm away, axis-1 neighbours 1 mm, corners sqrt(5)
    sp = (2.0, 1.0)
    assert hd95(a, b, spacing=sp, percentile=100)[1] == pytest.approx(math.sqrt(5))
    assert assd(a, b, spacing=sp)[1] == pytest.approx((1 + 2 * 2 + 2 * 1 + 4 * math.sqrt(5)) / 9)
    # symmetric in its arguments
    assert hd95(b, a, spacing=sp)[1] == pytest.approx(hd95(a, b, spacing=sp)[1])


def test_surface_distances_concentric_cubes_analytic():
    n, r, dr = 15, 2, 2
    c = n // 2
    x = _grid((n, n, n)) - c
    cheb = np.abs(x).max(-1)
    inner = (cheb <= r).astype(int)
    outer = (cheb <= r + dr).astype(int)
    # inner surface -> outer surface: every inner surface voxel is exactly dr from a face plane
    n_in = int((cheb == r).sum())
    d_in = np.full(n_in, float(dr))
    # outer surface -> inner surface: distance to the (solid) inner cube = |max(|p| - r, 0)|
    p = np.abs(x[cheb == r + dr])
    d_out = np.linalg.norm(np.maximum(p - r, 0.0), axis=-1)
    assert d_out.max() == pytest.approx(dr * math.sqrt(3))
    for q in (50, 95, 100):
        expect = max(np.percentile(d_in, q), np.percentile(d_out, q))
        assert hd95(inner, outer, percentile=q)[1] == pytest.approx(expect)
    expect_assd = (d_in.sum() + d_out.sum()) / (d_in.size + d_out.size)
    assert assd(inner, outer)[1] == pytest.approx(expect_assd)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2])
def test_hausdorff_of_shift_is_k_times_spacing(axis, k):
    sp = (1.0, 2.0, 0.5)
    # single voxel shifted by k along `axis`
    a = np.zeros((6, 6, 6), int)
    a[2, 2, 2] = 1
    b = np.roll(a, k, axis=axis)
    assert hd95(a, b, spacing=sp)[1] == pytest.approx(k * sp[axis])
    assert assd(a, b, spacing=sp)[1] == pytest.approx(k * sp[axis])
    # a box of equal physical size (8 mm) per axis, shifted by k voxels along `axis`
    ext = [int(8 / s) for s in sp]
    shape = tuple(e + 6 for e in ext)
    a = np.zeros(shape, int)
    a[tuple(slice(2, 2 + e) for e in ext)] = 1
    b = np.roll(a, k, axis=axis)
    assert hd95(a, b, spacing=sp, percentile=100)[1] == pytest.approx(k * sp[axis])


def test_surface_distances_identical_is_zero_and_absent_is_nan():
    rng = np.random.default_rng(1)
    lab = ndimage.median_filter(rng.integers(0, 3, size=(9, 9, 9)), size=3)
    for lab_, d in hd95(lab, lab, spacing=(1, 2, 3)).items():
        assert d == 0.0, lab_
    assert all(v == 0.0 for v in assd(lab, lab).values())
    a = np.zeros((5, 5), int)
    a[1:3, 1:3] = 1
    b = a.copy()
    b[4, 4] = 2
    h, s = hd95(a, b), assd(a, b, labels=[1, 2, 7])
    assert h[1] == 0.0 and math.isnan(h[2])
    assert s[1] == 0.0 and math.isnan(s[2]) and math.isnan(s[7])


@pytest.mark.parametrize(
    ("shape", "spacing"), [((12, 10), (1.0, 1.0)), ((12, 10), (0.7, 2.0)), ((8, 9, 7), (1, 2, 3))]
)
def test_surface_distances_match_brute_force(shape, spacing):
    rng = np.random.default_rng(len(shape) + int(10 * spacing[0]))
    a = ndimage.gaussian_filter(rng.normal(size=shape), 1.0) > 0.1
    b = ndimage.gaussian_filter(rng.normal(size=shape), 1.0) > 0.1
    assert a.any() and b.any()
    d_ab, d_ba = _ref_directed(a, b, spacing)
    for q in (0, 50, 95, 100):
        expect = max(np.percentile(d_ab, q), np.percentile(d_ba, q))
        assert hd95(a, b, spacing=spacing, percentile=q)[1] == pytest.approx(expect)
    expect = (d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size)
    assert assd(a, b, spacing=spacing)[1] == pytest.approx(expect)


def test_surface_distance_argument_checks():
    a = np.ones((4, 4), int)
    with pytest.raises(ValueError):
        hd95(a, a, percentile=101)
    with pytest.raises(ValueError):
        assd(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        hd95(a, a, spacing=(1.0, 0.0))


# --------------------------------------------------------------------------------------------
# Jacobian determinant, SDlogJ, folding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 6), (6, 7, 5)])
def test_jacobian_identity_is_one(shape):
    u = np.zeros((*shape, len(shape)))
    np.testing.assert_array_equal(jacobian_determinant(u), 1.0)
    jl = jacobian_determinant_l2r(u)
    assert jl.shape == shape
    np.testing.assert_array_equal(jl, 1.0)  # zero field: zero padding is harmless


@pytest.mark.parametrize(
    "a",
    [
        [[1.2, 0.3], [-0.1, 0.9]],
        [[1.1, 0.2, 0.0], [0.05, 0.8, -0.1], [0.1, 0.0, 1.3]],
        [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]],
    ],
)
def test_jacobian_affine_field(a):
    a = np.asarray(a)
    shape = (7, 8, 6)[: len(a)]
    u = _affine_disp(shape, a)
    inner = tuple(slice(1, -1) for _ in shape)
    np.testing.assert_allclose(jacobian_determinant_l2r(u)[inner], np.linalg.det(a), atol=1e-12)
    # np.gradient is exact for a linear field everywhere, including the border
    np.testing.assert_allclose(jacobian_determinant(u), np.linalg.det(a), atol=1e-12)
    # the L2R zero padding makes the border wrong (the reason for the [2:-2] crop)
    assert not np.allclose(jacobian_determinant_l2r(u), np.linalg.det(a))


@pytest.mark.parametrize("shape", [(9, 8), (7, 8, 6)])
def test_jacobian_l2r_matches_independent_reference(shape):
    rng = np.random.default_rng(3)
    u = rng.normal(scale=0.7, size=(*shape, len(shape)))
    np.testing.assert_allclose(jacobian_determinant_l2r(u), _ref_jacdet_l2r(u), atol=1e-12)
    # batch axis
    ub = np.stack([u, 2 * u])
    jb = jacobian_determinant_l2r(ub)
    np.testing.assert_allclose(jb[1], _ref_jacdet_l2r(2 * u), atol=1e-12)
    # the two schemes coincide on [1:-1]
    inner = tuple(slice(1, -1) for _ in shape)
    np.testing.assert_allclose(
        jacobian_determinant(u, scheme="central")[inner], jacobian_determinant_l2r(u)[inner]
    )


def test_sdlogj_identity_and_smooth_field_formula():
    assert sdlogj(np.zeros((8, 8, 8, 3))) == 0.0
    assert sdlogj(np.zeros((8, 9, 2))) == 0.0
    for shape in [(12, 10, 9), (14, 11)]:
        u = _smooth_disp(shape, amp=1.0, seed=len(shape))
        d = len(shape)
        grads = np.stack(
            [np.stack(np.gradient(u[..., c], axis=tuple(range(d))), -1) for c in range(d)], -2
        )
        jac = np.linalg.det(grads + np.eye(d))
        inner = tuple(slice(2, -2) for _ in shape)
        expect = np.log(np.clip(jac[inner] + 3, 1e-9, 1e9)).std()
        assert sdlogj(u) == pytest.approx(expect, rel=1e-12)
        assert sdlogj(u) > 0
        # batch of two cases
        np.testing.assert_allclose(sdlogj(np.stack([u, 0 * u])), [expect, 0.0], atol=1e-12)
    with pytest.raises(ValueError):
        sdlogj(np.zeros((4, 8, 8, 3)))  # cannot crop 2 voxels per side


def test_folding_fraction():
    shape = (12, 12, 12)
    assert folding_fraction(np.zeros((*shape, 3))) == 0.0
    smooth = _smooth_disp(shape, amp=0.5)
    assert jacobian_determinant(smooth).min() > 0
    assert folding_fraction(smooth) == 0.0
    assert folding_fraction(smooth, scheme="l2r") == 0.0
    folded = _folded_block(shape, 4, 9)
    jac = jacobian_determinant(folded)
    assert (jac[5:8, 5:8, 5:8] == -1).all()
    expect = 100.0 * np.mean(jac <= 0)
    assert folding_fraction(folded) == pytest.approx(expect)
    assert folding_fraction(folded) >= 100.0 * 27 / 12**3
    assert folding_fraction(folded, scheme="l2r") > 0
    # crop / mask semantics
    assert folding_fraction(folded, crop=3) == pytest.approx(
        100.0 * np.mean(jac[3:-3, 3:-3, 3:-3] <= 0)
    )
    mask = np.zeros(shape, bool)
    mask[5:8, 5:8, 5:8] = True
    assert folding_fraction(folded, mask=mask) == 100.0
    # reflected affine: everything folds; 2-D too
    assert folding_fraction(_affine_disp((6, 6), [[-1, 0], [0, 1]])) == 100.0
    assert folding_fraction(_folded_block((10, 10), 3, 7)) > 0
    with pytest.raises(ValueError):
        folding_fraction(folded, scheme="forward")


# --------------------------------------------------------------------------------------------
# non-diffeomorphic volume
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(10, 9), (8, 9, 7)])
def test_ndv_zero_for_identity_and_smooth_field(shape):
    d = len(shape)
    assert non_diffeomorphic_volume(np.zeros((*shape, d))) == 0.0
    smooth = _smooth_disp(shape, amp=0.4, seed=d)
    assert non_diffeomorphic_volume(smooth) == 0.0
    # orientation-preserving affine: 0 as well
    a = np.eye(d) + 0.2 * np.ones((d, d))
    assert non_diffeomorphic_volume(_affine_disp(shape, a)) == 0.0


@pytest.mark.parametrize("shape", [(10, 10), (10, 10, 10)])
def test_ndv_positive_for_folded_field(shape):
    folded = _folded_block(shape, 3, 7)
    ndv = non_diffeomorphic_volume(folded)
    assert ndv > 0
    pct, m = non_diffeomorphic_volume(folded, return_map=True)
    assert pct == ndv and m.shape == tuple(n - 2 for n in shape)
    assert m.sum() * 100 / m.size == pytest.approx(ndv)


@pytest.mark.parametrize(
    "a",
    [
        [[-0.5, 0.0], [0.0, 1.0]],
        [[0.3, 1.0], [1.0, 0.2]],
        [[-0.5, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        [[0.2, 1.0, 0.0], [1.0, 0.1, 0.0], [0.0, 0.3, 1.5]],
    ],
)
def test_ndv_affine_known_value(a):
    # every simplex of an affine map scales by det A: NDV = 100 |det A| when det A < 0
    a = np.asarray(a)
    det = np.linalg.det(a)
    assert det < 0
    shape = (6, 7, 5)[: len(a)]
    assert non_diffeomorphic_volume(_affine_disp(shape, a)) == pytest.approx(100 * abs(det))


@pytest.mark.parametrize("shape", [(7, 6), (5, 6, 5)])
def test_ndv_matches_brute_force_simplices(shape):
    rng = np.random.default_rng(7)
    u = rng.normal(scale=0.6, size=(*shape, len(shape)))
    ref = _ref_ndv_percent(u)
    assert ref > 0
    assert non_diffeomorphic_volume(u) == pytest.approx(ref, rel=1e-10)
    # batch
    np.testing.assert_allclose(non_diffeomorphic_volume(np.stack([u, 0 * u])), [ref, 0.0])


def test_ndv_detects_folding_hidden_from_central_differences():
    # Liu et al.'s checkerboard problem: a lone displaced voxel leaves its own central-difference
    # J at 1, but inverts simplices around it.
    u = np.zeros((7, 7, 7, 3))
    u[3, 3, 3, 0] = 3.0
    assert jacobian_determinant(u)[3, 3, 3] == 1.0
    assert non_diffeomorphic_volume(u) > 0
    mask = np.zeros((7, 7, 7), bool)
    mask[0] = True  # only the border slab: cropped away -> nothing left
    assert math.isnan(non_diffeomorphic_volume(u, mask=mask))
    mask[1] = True  # slab x0 = 1 sees nothing of the fold
    assert non_diffeomorphic_volume(u, mask=mask) == 0.0


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


def test_summarize_jacobian():
    shape = (10, 10, 10)
    folded = _folded_block(shape, 3, 7)
    s = summarize_jacobian(folded)
    assert set(s) == {
        "folding_percent",
        "ndv_percent",
        "sdlogj",
        "jac_min",
        "jac_max",
        "jac_mean",
        "jac_std",
    }
    assert all(isinstance(v, float) for v in s.values())
    jac = jacobian_determinant(folded)
    assert s["folding_percent"] == folding_fraction(folded)
    assert s["ndv_percent"] == non_diffeomorphic_volume(folded)
    assert s["sdlogj"] == sdlogj(folded)
    assert (s["jac_min"], s["jac_max"]) == (jac.min(), jac.max())
    assert s["jac_mean"] == pytest.approx(jac.mean())
    s_l2r = summarize_jacobian(folded, scheme="l2r")
    assert s_l2r["folding_percent"] == folding_fraction(folded, scheme="l2r", crop=2)
    sb = summarize_jacobian(np.stack([folded, 0 * folded]))
    assert sb["ndv_percent"].shape == (2,)
    assert sb["ndv_percent"][1] == 0.0 and sb["jac_mean"][1] == 1.0
    assert sb["folding_percent"][0] == s["folding_percent"]


def test_field_shape_checks():
    with pytest.raises(ValueError):
        jacobian_determinant(np.zeros((5, 5, 5, 4)))  # D not in (2, 3)
    with pytest.raises(ValueError):
        jacobian_determinant(np.zeros((5, 5, 5, 5, 2)))  # D != len(S)
    with pytest.raises(ValueError):
        non_diffeomorphic_volume(np.zeros((2, 5, 5, 3)))  # spatial size < 3
    with pytest.raises(ValueError):
        folding_fraction(np.zeros((5, 5, 5, 3)), mask=np.ones((4, 4, 4)))


def test_dice_missing_zero_scores_unpredicted_structures_as_misses():
    pred = np.zeros((4, 4), int)
    pred[0, 0] = 1
    target = np.zeros((4, 4), int)
    target[0, 0] = 1
    target[3, 3] = 2
    assert dice_per_label(pred, target, missing="zero") == {1: 1.0, 2: 0.0}
    assert mean_dice(pred, target, missing="zero") == 0.5
    assert mean_dice(pred, target) == 1.0  # Learn2Reg semantics ignore label 2
    assert np.isnan(dice_per_label(pred, target, labels=[3], missing="zero")[3])
    with pytest.raises(ValueError, match="missing"):
        dice_per_label(pred, target, missing="ignore")


# --------------------------------------------------------------------------------------------
# multi-label Dice, endpoint error
# --------------------------------------------------------------------------------------------


def test_dice_per_channel_hand_computed():
    p = np.zeros((4, 3, 3), np.uint8)  # [H, W, K], channels overlap
    t = np.zeros((4, 3, 3), np.uint8)
    p[:2, :, 0] = 1  # 6 voxels
    t[:1, :, 0] = 1  # 3 voxels, all inside p
    p[:, 0, 1] = t[:, 0, 1] = 1  # identical channel 1, overlapping channel 0
    t[3, 2, 2] = 1  # channel 2 only in the target
    d = dice_per_channel(p, t)
    assert list(d) == [0, 1, 2]
    assert d[0] == pytest.approx(2 * 3 / (6 + 3)) and d[1] == 1.0 and math.isnan(d[2])
    assert dice_per_channel(p, t, missing="zero")[2] == 0.0
    assert dice_per_channel(p, t, channels=[1]) == {1: 1.0}
    assert mean_dice_multilabel(p, t) == pytest.approx((2 / 3 + 1.0) / 2)
    assert mean_dice_multilabel(p, t, missing="zero") == pytest.approx((2 / 3 + 1.0) / 3)
    empty = np.zeros((4, 3, 2), np.uint8)
    assert math.isnan(mean_dice_multilabel(empty, empty))
    # channel k scored alone: the same as dice_per_label on the k-th binary map
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 6, 5, 4, 3)) > 0.5
    for k, v in dice_per_channel(a, b).items():
        assert v == pytest.approx(dice_per_label(a[..., k].astype(int), b[..., k].astype(int))[1])
    with pytest.raises(ValueError, match="shapes differ"):
        dice_per_channel(p, t[..., :2])
    with pytest.raises(ValueError, match="out of range"):
        dice_per_channel(p, t, channels=[3])


def test_endpoint_error_analytic():
    u = np.zeros((5, 4, 2))
    g = np.zeros((5, 4, 2))
    g[..., 0], g[..., 1] = 3.0, 4.0
    assert endpoint_error(u, g) == pytest.approx(5.0)
    assert endpoint_error(g, u) == pytest.approx(5.0)
    assert endpoint_error(u, g, spacing=(2.0, 1.0)) == pytest.approx(math.hypot(6.0, 4.0))
    assert endpoint_error(u, g, spacing=0.5) == pytest.approx(2.5)
    # errors on half the voxels only: the mask selects them
    h = g.copy()
    h[:2] = 0.0
    mask = np.zeros((5, 4), bool)
    mask[:2] = True
    assert endpoint_error(u, h) == pytest.approx(5.0 * 3 / 5)
    assert endpoint_error(u, h, mask=mask) == 0.0
    assert endpoint_error(u, h, mask=~mask) == pytest.approx(5.0)
    assert math.isnan(endpoint_error(u, h, mask=np.zeros((5, 4))))
    # batched 3-D: mean over every voxel of the batch
    v = np.zeros((2, 3, 3, 3, 3))
    v[1, ..., 2] = 2.0
    assert endpoint_error(v, np.zeros_like(v)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        endpoint_error(u, g[:4])
    with pytest.raises(ValueError, match="mask shape"):
        endpoint_error(u, g, mask=np.ones((4, 4)))


# --------------------------------------------------------------------------------------------
# boundary band
# --------------------------------------------------------------------------------------------


def _band_brute_force(r: np.ndarray, width: int) -> np.ndarray:
    """``x`` in the band iff a voxel of another value lies within Chebyshev distance ``width``."""
    idx = np.stack(np.meshgrid(*map(np.arange, r.shape), indexing="ij"), -1).reshape(-1, r.ndim)
    vals = r.reshape(-1)
    cheb = cdist(idx, idx, metric="chebyshev")
    return ((cheb <= width) & (vals[:, None] != vals[None, :])).any(1).reshape(r.shape)


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
@pytest.mark.parametrize("width", [0, 1, 2, 3])
def test_boundary_band_matches_brute_force(shape, width):
    rng = np.random.default_rng(sum(shape) + width)
    # blocky maps (a coarse random map, upsampled) and noise, with up to 4 values
    coarse = rng.integers(0, 4, size=tuple(-(-n // 3) for n in shape))
    blocky = np.kron(coarse, np.ones((3,) * len(shape), int))[tuple(slice(n) for n in shape)]
    for r in (blocky, rng.integers(0, 3, size=shape), (blocky == 2).astype(np.float32)):
        band = boundary_band(r, width=width)
        assert band.dtype == bool and band.shape == r.shape
        np.testing.assert_array_equal(band, _band_brute_force(r, width))
    batch = np.stack([blocky, np.roll(blocky, 2, 0)])
    np.testing.assert_array_equal(
        boundary_band(batch, width=width, batched=True),
        np.stack([_band_brute_force(b, width) for b in batch]),
    )


def test_boundary_band_analytic():
    r = np.zeros((10, 10), int)
    r[:, 5:] = 3  # a half-plane split between columns 4 and 5
    band = boundary_band(r)
    assert band.sum() == 40
    np.testing.assert_array_equal(np.flatnonzero(band.all(0)), [3, 4, 5, 6])
    assert not band[:, [0, 1, 2, 7, 8, 9]].any()
    np.testing.assert_array_equal(np.flatnonzero(boundary_band(r, width=1).any(0)), [4, 5])
    assert not boundary_band(r, width=0).any()
    # the image border is no boundary: a constant map, and a map whose one region is a border
    # row, have bands only around the region boundary
    assert not boundary_band(np.full((6, 6, 6), 2)).any()
    r = np.zeros((8, 8), int)
    r[0] = 1
    np.testing.assert_array_equal(np.flatnonzero(boundary_band(r, width=2).any(1)), [0, 1, 2])
    # 3-D: a cube of 4^3 inside a 12^3 background: the band is the 8^3 cube less the 0^3 core
    r = np.zeros((12, 12, 12), int)
    r[4:8, 4:8, 4:8] = 1
    assert boundary_band(r, width=2).sum() == 8**3
    assert boundary_band(r, width=1).sum() == 6**3 - 2**3
    assert boundary_band(r.astype(bool), width=1).sum() == 6**3 - 2**3


def test_boundary_band_argument_checks():
    with pytest.raises(ValueError, match="width"):
        boundary_band(np.zeros((4, 4)), width=-1)
    with pytest.raises(ValueError, match="width"):
        boundary_band(np.zeros((4, 4)), width=1.5)
    with pytest.raises(ValueError, match="batched=True"):
        boundary_band(np.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match="len"):
        boundary_band(np.zeros((2, 4)), batched=True)


# --------------------------------------------------------------------------------------------
# connected components
# --------------------------------------------------------------------------------------------


def _flood_fill_count(mask: np.ndarray, connectivity: int) -> int:
    """Independent reference: components of a boolean mask by breadth-first flood fill, the
    neighbours being the offsets with at most ``connectivity`` non-zero entries in {-1, 0, 1}."""
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=mask.ndim)
               if 0 < sum(map(abs, o)) <= connectivity]  # fmt: skip
    seen = np.zeros(mask.shape, bool)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        seen[start] = True
        queue = [start]
        while queue:
            p = queue.pop()
            for o in offsets:
                q = tuple(pi + oi for pi, oi in zip(p, o))
                if all(0 <= qi < n for qi, n in zip(q, mask.shape)) and mask[q] and not seen[q]:
                    seen[q] = True
                    queue.append(q)
    return count


def test_component_counts_hand_made_2d():
    lab = np.zeros((8, 9), np.int16)
    lab[0:2, 0:2] = 1  # label 1: a square, a single voxel and an L: 3 pieces
    lab[4, 4] = 1
    lab[6:8, 6] = 1
    lab[7, 7:9] = 1
    lab[0, 6] = lab[1, 7] = 2  # label 2: two voxels touching diagonally
    lab[4, 0:3] = 3  # label 3: one bar
    assert component_counts(lab) == {1: 3, 2: 2, 3: 1}
    assert component_counts(lab, connectivity=2) == {1: 3, 2: 1, 3: 1}
    assert list(component_counts(lab, labels=[3, 1])) == [3, 1]  # ordered as asked
    assert component_counts(lab, labels=[2, 5, 0]) == {2: 2, 5: 0, 0: 1}  # absent: 0
    assert spurious_components(lab) == {1: 2, 2: 1, 3: 0}
    assert spurious_components(lab, connectivity=2, labels=[2, 5]) == {2: 0, 5: 0}
    # integer-valued floats (as nibabel loads them) give the same, with int keys
    got = component_counts(lab.astype(np.float32))
    assert got == {1: 3, 2: 2, 3: 1} and all(type(k) is int for k in got)
    assert component_counts(np.zeros((4, 4), int)) == {}


def test_component_counts_hand_made_3d_connectivities():
    lab = np.zeros((6, 6, 6), np.int32)
    lab[0, 0, 0] = lab[1, 1, 1] = 1  # corners only: 26-connected
    lab[3, 3, 0] = lab[4, 4, 0] = 2  # an edge: 18-connected
    lab[0:2, 4:6, 3:6] = 3  # one block
    lab[5, 0, 5] = 3  # plus a far voxel
    want = {1: {1: 2, 2: 2, 3: 1}, 2: {1: 2, 2: 1, 3: 1}, 3: {1: 2, 2: 2, 3: 2}}
    for conn in (1, 2, 3):
        got = component_counts(lab, connectivity=conn)
        assert got == {k: want[k][conn] for k in (1, 2, 3)}, conn
        assert spurious_components(lab, connectivity=conn) == {
            k: want[k][conn] - 1 for k in (1, 2, 3)
        }


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
def test_component_counts_match_flood_fill(shape):
    rng = np.random.default_rng(len(shape))
    lab = rng.integers(0, 4, shape) * (rng.uniform(size=shape) < 0.45)  # many small islands
    for conn in range(1, len(shape) + 1):
        got = component_counts(lab, connectivity=conn)
        assert set(got) == set(np.unique(lab)) - {0}
        for k, c in got.items():
            assert c == _flood_fill_count(lab == k, conn), (k, conn)
            assert c > 1  # a random map: fragments, so the check is not trivial
        assert spurious_components(lab, connectivity=conn) == {k: c - 1 for k, c in got.items()}
    # a coarser neighbourhood can only split components
    counts = [component_counts(lab, connectivity=c) for c in range(1, len(shape) + 1)]
    assert all(counts[i][k] >= counts[i + 1][k] for i in range(len(counts) - 1) for k in counts[0])


def test_component_counts_multi_label_channels():
    m = np.zeros((6, 7, 3), np.uint8)
    m[0:2, 0:2, 0] = 1
    m[4:6, 4:7, 0] = 1  # channel 0: two blobs
    m[1:5, 1:5, 1] = 1  # channel 1: one blob overlapping both of channel 0's
    m[3, 3, 2] = m[4, 4, 2] = 0  # channel 2: empty
    assert component_counts(m, multi_label=True) == {0: 2, 1: 1, 2: 0}
    assert spurious_components(m, multi_label=True) == {0: 1, 1: 0, 2: 0}
    assert component_counts(m, multi_label=True, labels=[1]) == {1: 1}
    m[5, 0, 2] = m[4, 1, 2] = 1  # channel 2: a diagonal pair
    assert component_counts(m, multi_label=True, labels=[2]) == {2: 2}
    assert component_counts(m, multi_label=True, labels=[2], connectivity=2) == {2: 1}
    m3 = np.zeros((4, 4, 4, 2), bool)
    m3[0, 0, 0, 1] = m3[3, 3, 3, 1] = True
    assert component_counts(m3, multi_label=True) == {0: 0, 1: 2}


def test_component_counts_argument_checks():
    with pytest.raises(ValueError, match="connectivity"):
        component_counts(np.zeros((4, 4), int), connectivity=3)
    with pytest.raises(ValueError, match="connectivity"):
        component_counts(np.zeros((4, 4), int), connectivity=0)
    with pytest.raises(ValueError, match="label_map"):
        component_counts(np.zeros((4,), int))
    with pytest.raises(ValueError, match="multi-label"):
        component_counts(np.zeros((4, 4), int), multi_label=True)
    with pytest.raises(ValueError, match="out of range"):
        spurious_components(np.zeros((4, 4, 2), int), multi_label=True, labels=[2])

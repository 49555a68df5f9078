"""The ``sliding`` scenario (:mod:`jrs_jax.data.sliding`): organs that slide against their
surroundings, each claimed property tested: the jump of the ground truth exactly at the
region-mask boundaries, the exactness of the layer-wise pair ground truth (and why
composing through the template is not enough), the labels and masks, 2-D and 3-D,
determinism, the files and the command line."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jrs_jax.data import (
    fill_organs,
    load_learn2reg,
    make_sliding_subjects,
    make_template,
    pair_batch,
    sliding_pair_field,
    write_sliding_dataset,
)
from jrs_jax.data.datasets import _DeferredField
from jrs_jax.data.scenarios import SCENARIOS
from jrs_jax.evaluation import evaluate
from jrs_jax.spatial import compose, warp_labels

SHAPES = {2: (48, 48), 3: (24, 24, 24)}
# 24^3 structures are a few voxels wide: a gentler body motion there (as test_synthetic).
AMPLITUDE = {2: 2.0, 3: 1.0}
N = 8  # the CLI tests write 8 subjects too: the jitted generator compiles once per shape
ORGANS = ((2,), (3, 4))


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def population(request):
    d = request.param
    template = make_template(jax.random.PRNGKey(0), SHAPES[d])
    subjects = make_sliding_subjects(
        jax.random.PRNGKey(1), template, num_subjects=N, amplitude=AMPLITUDE[d], motion="shift"
    )
    return template, subjects


def _slices(shape, ax):
    lo = tuple(slice(0, n - 1) if a == ax else slice(None) for a, n in enumerate(shape))
    hi = tuple(slice(1, None) if a == ax else slice(None) for a in range(len(shape)))
    return lo, hi


def _boundary_pairs(mask: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Face-adjacent voxel pairs with one voxel in region ``g`` and one in the body layer
    (0): their coordinates ``[P, D]`` (organ side, body side)."""
    organ, body = [], []
    for ax in range(mask.ndim):
        e = np.eye(mask.ndim, dtype=np.int64)[ax]
        lo, hi = _slices(mask.shape, ax)
        a, b = mask[lo], mask[hi]
        p = np.argwhere((a == g) & (b == 0))
        organ.append(p)
        body.append(p + e)
        p = np.argwhere((a == 0) & (b == g))
        organ.append(p + e)
        body.append(p)
    return np.concatenate(organ), np.concatenate(body)


def _at(field: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return field[tuple(idx.T)]


def _in_region_differences(mask: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Norms of the field differences of face-adjacent voxels of one region."""
    out = []
    for ax in range(mask.ndim):
        lo, hi = _slices(mask.shape, ax)
        d = np.linalg.norm(field[hi] - field[lo], axis=-1)
        out.append(d[mask[lo] == mask[hi]])
    return np.concatenate(out)


def _touches_background(labels: np.ndarray, mask: np.ndarray) -> int:
    n = 0
    for ax in range(labels.ndim):
        lo, hi = _slices(labels.shape, ax)
        n += np.sum((mask[lo] > 0) & (labels[hi] == 0)) + np.sum((mask[hi] > 0) & (labels[lo] == 0))
    return int(n)


def _dice(a: np.ndarray, b: np.ndarray, k: int, where: np.ndarray) -> float:
    a, b = (a == k) & where, (b == k) & where
    return float(2 * np.sum(a & b) / (np.sum(a) + np.sum(b)))


# --------------------------------------------------------------------------------------------
# the jump
# --------------------------------------------------------------------------------------------


def test_subject_field_jumps_by_the_organ_motion_exactly_at_the_mask(population):
    template, s = population
    d = template.ndim
    lo, hi = 2.0, 4.0  # the default shift
    jumps, within = [], []
    for i in range(N):
        u, mask, layers = s["disp"][i], s["masks"][i], s["layer_disp"][i]
        u_b = layers[0]
        for g in (1, 2):
            organ, body = _boundary_pairs(mask, g)
            assert len(organ) > 10
            jump = _at(u, organ) - _at(u, body)
            # the field difference is the difference of the two motions there...
            np.testing.assert_allclose(jump, _at(layers[g], organ) - _at(u_b, body), atol=1e-5)
            # ... u_g = compose(t_g, u_b) (psi_b o T_g): t_g + u_b(x + t_g) - u_b(x')
            t = s["shifts"][i, g - 1]
            shifted = organ + t
            u_b_there = np.stack(
                [
                    ndimage.map_coordinates(u_b[..., k], shifted.T, order=1, mode="nearest")
                    for k in range(d)
                ],
                -1,
            )
            np.testing.assert_allclose(jump, t + u_b_there - _at(u_b, body), atol=1e-4)
            jumps.append(np.linalg.norm(jump, axis=-1))
        within.append(_in_region_differences(mask, u))
    jumps, within = np.concatenate(jumps), np.concatenate(within)
    # |t_g| in [2, 4], changed by the body motion's variation over t_g
    assert lo <= np.median(jumps) <= hi
    assert np.mean((jumps >= 0.8 * lo) & (jumps <= 1.25 * hi)) > 0.9
    # continuity: inside every region the field varies far less than across boundaries
    assert within.max() < jumps.min() / 1.5
    assert np.percentile(within, 99) < 0.2 * np.median(jumps)


def test_written_pair_field_jumps_at_the_fixed_mask(sliding_2d):
    path, mem = sliding_2d
    ds = load_learn2reg(path)
    pairs = np.asarray(ds.val_pairs)
    assert len(pairs) == 6 and ds.has_ground_truth(pairs)
    assert all(isinstance(v, _DeferredField) for v in ds.pair_fields.values())  # lazy
    gt = pair_batch(ds, pairs, fields=True)["gt_disp"]
    idx = {i: int(s.name[4:8]) for i, s in enumerate(ds.subjects)}  # sub_NNNN_0000
    for b, (f, m) in enumerate(pairs.tolist()):
        fm, mm = idx[f], idx[m]
        mask = ds.subjects[f].mask
        np.testing.assert_array_equal(mask, mem["masks"][fm])
        np.testing.assert_array_equal(gt[b], sliding_pair_field(mem, fm, mm))
        # layer l: the fixed subject's layer l followed by the moving subject's inverse
        layer = np.asarray(
            compose(jnp.asarray(mem["layer_disp"][fm]), jnp.asarray(mem["layer_disp_inv"][mm]))
        )
        for g in (1, 2):
            organ, body = _boundary_pairs(mask, g)
            jump = _at(gt[b], organ) - _at(gt[b], body)
            np.testing.assert_allclose(jump, _at(layer[g], organ) - _at(layer[0], body), atol=1e-4)
            # the relative sliding of the organ in the two subjects, through the body motions
            rel = mem["shifts"][fm, g - 1] - mem["shifts"][mm, g - 1]
            assert np.linalg.norm(jump.mean(0) - rel) < 1.5


# --------------------------------------------------------------------------------------------
# exactness of the pair ground truth
# --------------------------------------------------------------------------------------------


def test_pair_ground_truth_is_exact_but_for_occlusion(population):
    template, s = population
    pairs = [(f, m) for f in range(N) for m in range(N) if f != m]
    f, m = (list(c) for c in zip(*pairs, strict=True))
    k = int(template.max()) + 1
    gt = sliding_pair_field(s, f, m)
    assert gt.shape == (len(pairs), *template.shape, template.ndim)
    fixed = s["labels"][f]

    def warped(arr, field, classes):
        return np.asarray(
            warp_labels(jnp.asarray(arr), jnp.asarray(field), num_classes=classes, mode="nearest")
        )

    # occluded: the tissue a fixed voxel maps to is covered by another layer in the moving
    # subject (body tissue under an organ that slid over it): no field can recover it.
    occluded = warped(s["masks"][m], gt, 3) != s["masks"][f]
    visible = ~occluded
    assert 0.005 < occluded.mean() < 0.05
    exact = warped(s["labels"][m], gt, k)
    assert np.mean(exact[visible] == fixed[visible]) > 0.97
    for lab in range(1, k):
        assert np.mean([_dice(exact[p], fixed[p], lab, visible[p]) for p in range(len(pairs))]) > (
            0.95 if template.ndim == 2 else 0.9
        )
    # what remains is nearest-neighbour rounding on label boundaries (as for `anatomy`)
    near = np.stack(
        [
            ndimage.morphological_gradient(fixed[p], size=(5,) * template.ndim) > 0
            for p in range(len(pairs))
        ]
    )
    assert np.mean((exact != fixed) & visible & ~near) < 1e-3

    # composing subject fields through the template is wrong near the organ boundaries
    naive = np.asarray(compose(jnp.asarray(s["disp"][f]), jnp.asarray(s["disp_inv"][m])))
    wrong = np.linalg.norm(naive - gt, axis=-1) > 1.0
    band = np.stack(
        [ndimage.morphological_gradient(s["masks"][fp], size=(9,) * template.ndim) > 0 for fp in f]
    )
    assert wrong.mean() > 0.005 and np.mean(wrong & ~band) < 1e-3  # only there
    through = warped(s["labels"][m], naive, k)
    there = wrong & visible
    assert np.mean((exact == fixed)[there]) > 0.95 > 0.6 > np.mean((through == fixed)[there])

    def organ_dice(w):
        return np.mean(
            [_dice(w[p], fixed[p], lab, visible[p]) for p in range(len(pairs)) for lab in (2, 3, 4)]
        )

    assert organ_dice(through) < organ_dice(exact) - 0.05


# --------------------------------------------------------------------------------------------
# labels, masks, determinism
# --------------------------------------------------------------------------------------------


def test_labels_and_masks(population):
    template, s = population
    k = int(template.max()) + 1
    assert s["organs"] == ORGANS
    assert s["labels"].dtype == np.int32 and s["masks"].dtype == np.int32
    assert s["images"].shape == (N, *template.shape, 1) and s["images"].dtype == np.float32
    assert s["layer_disp"].shape == (N, 3, *template.shape, template.ndim)
    norms = np.linalg.norm(s["shifts"], axis=-1)
    assert s["shifts"].shape == (N, 2, template.ndim) and np.all((norms >= 2) & (norms <= 4))
    for i in range(N):
        lab, mask = s["labels"][i], s["masks"][i]
        assert sorted(np.unique(lab).tolist()) == list(range(k))  # every label present
        assert sorted(np.unique(mask).tolist()) == [0, 1, 2]
        for g, group in enumerate(ORGANS, 1):  # mask boundaries = organ label boundaries
            np.testing.assert_array_equal(mask == g, np.isin(lab, group))
        assert _touches_background(lab, mask) == 0  # organs inside the body
        # the subject field is its layer's field
        np.testing.assert_array_equal(
            s["disp"][i], np.take_along_axis(s["layer_disp"][i], mask[None, ..., None], 0)[0]
        )
    # the vacated space is filled by the surrounding tissue
    fill = s["template_fill"]
    organ = np.isin(template, [2, 3, 4])
    assert not np.isin(fill, [2, 3, 4]).any()
    np.testing.assert_array_equal(fill[~organ], template[~organ])
    np.testing.assert_array_equal(fill, fill_organs(template))


def test_layer_inverses_and_own_motion():
    template = make_template(jax.random.PRNGKey(0), SHAPES[2])
    s = make_sliding_subjects(
        jax.random.PRNGKey(5), template, num_subjects=N, organ_amplitude=1.0, motion="shift"
    )
    rigid = make_sliding_subjects(jax.random.PRNGKey(5), template, num_subjects=N, motion="shift")
    assert not np.allclose(s["layer_disp"][:, 1:], rigid["layer_disp"][:, 1:])
    np.testing.assert_array_equal(s["layer_disp"][:, 0], rigid["layer_disp"][:, 0])
    for g, group in enumerate(ORGANS, 1):
        inner = ndimage.binary_erosion(np.isin(template, group), iterations=2)
        # psi_g o psi_g^-1 = id on the template organ (up to interpolation)
        back = np.asarray(
            compose(jnp.asarray(s["layer_disp_inv"][:, g]), jnp.asarray(s["layer_disp"][:, g]))
        )
        assert np.abs(back[:, inner]).max() < 0.25
        for i in range(N):
            np.testing.assert_array_equal(s["masks"][i] == g, np.isin(s["labels"][i], group))


def test_deterministic_and_key_dependent(population):
    template, s = population
    again = make_sliding_subjects(
        jax.random.PRNGKey(1),
        template,
        num_subjects=N,
        amplitude=AMPLITUDE[template.ndim],
        motion="shift",
    )
    other = make_sliding_subjects(
        jax.random.PRNGKey(2),
        template,
        num_subjects=N,
        amplitude=AMPLITUDE[template.ndim],
        motion="shift",
    )
    for k in ("images", "labels", "masks", "disp", "layer_disp", "layer_disp_inv", "shifts"):
        np.testing.assert_array_equal(s[k], again[k])
        assert not np.array_equal(s[k], other[k])


def test_settings_are_checked():
    template = make_template(jax.random.PRNGKey(0), SHAPES[2])
    for bad, match in (
        ({"organs": ((7,), (8, 9))}, "no sliding organ"),
        ({"shift": (3.0, 2.0)}, "shift"),
        ({"organs": ((2,), (2, 3))}, "share"),
        ({"organs": ((0,),)}, "background"),
        ({"organ_amplitude": -1.0}, "organ_amplitude"),
    ):
        with pytest.raises(ValueError, match=match):
            make_sliding_subjects(jax.random.PRNGKey(0), template, num_subjects=1, **bad)


# --------------------------------------------------------------------------------------------
# files, command line, evaluation
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sliding_2d(tmp_path_factory):
    """(dataset.json of a written 2-D sliding dataset, the in-memory subjects behind it)."""
    root = tmp_path_factory.mktemp("sliding") / "d"
    path = write_sliding_dataset(
        root,
        key=3,
        shape=SHAPES[2],
        num_subjects=N,
        num_heldout=3,
        num_val_pairs=6,
        motion="shift",
    )
    k_template, k_subjects, _ = jax.random.split(jax.random.PRNGKey(3), 3)
    template = make_template(k_template, SHAPES[2])
    return path, make_sliding_subjects(k_subjects, template, num_subjects=N, motion="shift")


def test_written_files_and_json(sliding_2d):
    path, _ = sliding_2d
    root = os.path.dirname(path)
    meta = json.load(open(path))
    block = meta["jrs_jax"]
    assert block["generator"] == "jrs_jax.data.sliding" and block["seed"] == 3
    assert block["sliding"]["organs"] == [[2], [3, 4]]
    assert block["sliding"]["shift"] == [2.0, 4.0]
    assert set(block["sliding"]["mask"]) == {"0", "1", "2"}
    assert "exact" in block["pair_fields"] and "not written" in block["subject_fields"]
    assert "fields" not in block and not os.path.exists(os.path.join(root, "fieldsTr"))
    assert all(e["disp"].startswith("./fieldsVal/") for e in meta["registration_val"])
    assert len(os.listdir(os.path.join(root, "fieldsVal"))) == 6
    assert len(os.listdir(os.path.join(root, "masksTr"))) == N
    ds = load_learn2reg(path)
    assert not any(s.has_field for s in ds.subjects) and all(s.has_mask for s in ds.subjects)
    assert not ds.has_ground_truth([[0, 1]])  # training pairs: no ground truth
    with pytest.raises(ValueError, match=r"pair \(fixed=0, moving=1\)"):
        pair_batch(ds, [[0, 1]], fields=True)
    assert SCENARIOS["sliding"] is write_sliding_dataset


def test_evaluation_reports_endpoint_error(sliding_2d, predict_only):
    class GroundTruth(predict_only):
        name = "ground_truth"
        tasks = {"register": ("moving", "fixed", "gt_disp")}  # noqa: RUF012

        def predict(self, variables, batch):
            return {"disp": batch["gt_disp"], "warped": batch["moving"]}

    path, _ = sliding_2d
    ds = load_learn2reg(path)
    ev = evaluate(GroundTruth({"eval": {}}, shape=ds.shape, num_classes=5), {}, ds)
    assert ev.summary["val/epe"] == pytest.approx(0.0, abs=1e-6)
    assert len(ev.pairs) == 6 and all("epe" in r for r in ev.pairs)


@pytest.mark.parametrize(
    "argv, shape",
    [(["--shape", "48", "48"], (48, 48)), (["--3d", "--shape", "24", "24", "24"], (24, 24, 24))],
    ids=["2d", "3d"],
)
def test_cli(run_cli, tmp_path, argv, shape):
    out = tmp_path / "sliding"
    rc, stdout, _ = run_cli(
        ["make-synthetic", "--scenario", "sliding", "--out", out, "--subjects", N, *argv]
    )
    assert rc == 0 and "scenario sliding" in stdout
    ds = load_learn2reg(out / "dataset.json")
    assert ds.shape == shape and len(ds) == N and len(ds.val_pairs) == 2
    assert ds.has_ground_truth(ds.val_pairs) and ds.has_masks
    gt = pair_batch(ds, ds.val_pairs, fields=True)["gt_disp"]
    assert gt.shape == (2, *shape, len(shape)) and np.isfinite(gt).all()
    for f, _ in ds.val_pairs:  # discontinuous at the fixed mask
        assert sorted(np.unique(ds.subjects[f].mask).tolist()) == [0, 1, 2]


# --------------------------------------------------------------------------------------------
# the default motion: organs turning in place (tangential sliding), textured tissue
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def turning():
    template = make_template(jax.random.PRNGKey(0), (64, 64))
    return template, make_sliding_subjects(jax.random.PRNGKey(1), template, num_subjects=N)


def test_rotation_slides_along_the_boundary(turning):
    """The jump at an organ boundary is the difference of the two motions, mostly tangential
    (the organ turns in place): its arc is in ``shift`` (2..4 voxels) and its normal part is
    small, unlike a translation."""
    _, s = turning
    tangential, normal = [], []
    for i in range(N):
        u, mask, layers = s["disp"][i], s["masks"][i], s["layer_disp"][i]
        organ, body = _boundary_pairs(mask, 1)  # the round organ (label 2)
        jump = _at(u, organ) - _at(u, body)
        np.testing.assert_allclose(jump, _at(layers[1], organ) - _at(layers[0], body), atol=1e-5)
        # boundary normal ~ the direction from the organ's centroid (a near-round organ)
        centre = np.argwhere(mask == 1).mean(0)
        radial = organ - centre
        radial /= np.linalg.norm(radial, axis=-1, keepdims=True)
        n_part = np.abs(np.sum(jump * radial, -1))
        normal.append(n_part)
        tangential.append(np.sqrt(np.maximum(np.sum(jump**2, -1) - n_part**2, 0)))
        assert s["shifts"].shape == (N, 2, 3) and s["shifts"][i, :, :2].max() == 0.0
    tangential, normal = np.concatenate(tangential), np.concatenate(normal)
    assert 1.6 <= np.median(tangential) <= 4.5
    assert np.median(normal) < 0.35 * np.median(tangential)


def test_rotation_has_less_occlusion_than_a_shift(turning):
    """Warping the moving labels with the exact pair field reproduces the fixed labels on
    more voxels when the organs turn in place than when they translate (less tissue covered
    or uncovered), and almost everywhere."""
    template, s = turning
    shifted = make_sliding_subjects(jax.random.PRNGKey(1), template, num_subjects=N, motion="shift")
    f, m = list(range(N - 1)), list(range(1, N))

    def agreement(subjects):
        gt = sliding_pair_field(subjects, f, m)
        w = warp_labels(
            jnp.asarray(subjects["labels"][m]), jnp.asarray(gt), num_classes=5, mode="nearest"
        )
        return float(np.mean(np.asarray(w) == subjects["labels"][f]))

    turn, shift = agreement(s), agreement(shifted)
    assert turn > 0.965 and turn > shift + 0.005


def test_texture_moves_with_the_tissue(turning):
    """The texture is drawn once, in the template frame, and carried by each voxel's own
    motion: the images differ from the untextured ones only inside the body, and by the
    same template texture pulled back with the subject field."""
    template, s = turning
    flat = make_sliding_subjects(jax.random.PRNGKey(1), template, num_subjects=N, texture=0.0)
    np.testing.assert_array_equal(flat["disp"], s["disp"])
    diff = s["images"][..., 0] - flat["images"][..., 0]
    body = s["labels"] > 0
    assert np.all(diff[~body] == 0) and np.std(diff[body]) > 0.05
    # pull every subject's texture back to the template frame: it is the same field
    from jrs_jax.spatial import warp

    back = np.asarray(warp(jnp.asarray(diff[..., None]), jnp.asarray(s["disp_inv"])))[..., 0]
    deep = ndimage.binary_erosion(template > 0, iterations=3)
    for i in range(1, N):
        r = np.corrcoef(back[0][deep], back[i][deep])[0, 1]
        assert r > 0.8, (i, r)

"""The ``lesion`` scenario (:mod:`jrs_jax.data.lesion`): a lesion-free atlas and patients with
a lesion (a label absent from the template) and its mass effect, kept as the ground truth.
Tested on the data read back through ``load_learn2reg``: the lesion label (absent from the
template and the atlas, a disc at the recorded centre and radius in every patient, inside the
foreground, its own intensity), the ground truth (it carries the atlas labels onto each
patient's outside the lesion), the mass effect (towards the centre, the documented radial
profile, largest at the lesion boundary and decaying), invertibility (``det J > 0``, field
and inverse consistent), determinism, the settings, the command line."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jrs_jax.data import (
    load_labels,
    load_learn2reg,
    make_lesion_subjects,
    make_template,
    mass_effect_field,
    pair_batch,
    write_lesion_dataset,
)
from jrs_jax.data.scenarios import SCENARIOS, make_scenario
from jrs_jax.spatial import compose, jacobian_determinant, warp_labels

SHAPE = (64, 64)
N, H, LAB = 6, 2, 3  # the CLI test writes 6 subjects of 64^2 too: one compilation
K = 4  # foreground classes: tissue 1..3, lesion 4
SEED = 2
RADIUS = (4.0, 7.0)  # the defaults
PUSH = 1.5


def _write(root, **kw):
    path = write_lesion_dataset(
        root, key=SEED, shape=SHAPE, num_subjects=N, num_heldout=H, num_labelled=LAB, **kw
    )
    ds = load_learn2reg(path, normalize=False, fields=True)
    block = json.load(open(path))["jrs_jax"]
    labels = np.stack(
        [load_labels(root / "labelsTr" / f"{s.name}.nii.gz").data[..., 0] for s in ds.subjects]
    )
    template = load_labels(root / "template" / "template_0000.nii.gz").data[..., 0]
    return ds, block, labels, template


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(dataset, jrs_jax block, labels [N, *S] in the dataset's order, template)."""
    return _write(tmp_path_factory.mktemp("lesion") / "d")


@pytest.fixture(scope="module")
def push_only(tmp_path_factory):
    """As ``written`` without the smooth deformation: each patient's field is its mass
    effect alone."""
    return _write(tmp_path_factory.mktemp("lesion_push") / "d", amplitude=0.0)


def _lesions(ds, block) -> dict[int, dict]:
    """Dataset index -> the recorded ``{"centre", "radius", "push"}`` of each patient."""
    rec = {e["name"]: e for e in block["lesion"]["subjects"]}
    return {i: rec[s.name] for i, s in enumerate(ds.subjects) if rec[s.name]["centre"]}


def _rho(centre) -> np.ndarray:
    grid = np.moveaxis(np.indices(SHAPE, dtype=np.float64), 0, -1)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1)


def _dice(a, b, k) -> float:
    return float(2 * np.sum((a == k) & (b == k)) / max(1, np.sum(a == k) + np.sum(b == k)))


# --------------------------------------------------------------------------------------------
# the lesion label
# --------------------------------------------------------------------------------------------


def test_round_trip_atlas_and_lesion_label(written):
    ds, block, labels, template = written
    assert ds.shape == SHAPE and len(ds) == N and ds.has_fields
    assert ds.label_names[K] == "lesion" and len(ds.label_names) == K + 1
    assert block["num_labels"] == K and block["lesion"]["label"] == K
    atlas = ds.subjects[0]
    assert atlas.name == block["lesion"]["atlas"] == "sub_0000_0000"
    assert not atlas.held_out and atlas.has_labels
    assert not np.any(atlas.field) and not np.any(atlas.field_inv)
    np.testing.assert_array_equal(atlas.labels, template)
    # the template and the atlas: every tissue label, no lesion
    assert sorted(np.unique(template).tolist()) == list(range(K))
    lesions = _lesions(ds, block)
    assert sorted(lesions) == list(range(1, N))  # every other subject is a patient
    for i in range(N):
        has = bool(np.any(labels[i] == K))
        assert has == (i > 0), ds.subjects[i].name


def test_lesion_is_the_recorded_disc_inside_the_foreground(written):
    ds, block, labels, _ = written
    radii = []
    for i, rec in _lesions(ds, block).items():
        lo, hi = block["lesion"]["lesion_radius"]
        assert lo <= rec["radius"] <= hi and rec["push"] == PUSH
        radii.append(rec["radius"])
        disc = _rho(rec["centre"]) <= rec["radius"] + 1e-3
        np.testing.assert_array_equal(labels[i] == K, disc)
        # inside the foreground: the disc and its 1-voxel rim hold no background
        rim = ndimage.binary_dilation(disc, iterations=1)
        assert not np.any(labels[i][rim] == 0), ds.subjects[i].name
    assert np.ptp(radii) > 0.3  # drawn per patient


def test_lesion_has_its_own_intensity(written):
    ds, _, labels, _ = written
    img = np.stack([s.image[..., 0] for s in ds.subjects])
    patients = labels[1:]
    means = {}
    for k in range(K + 1):  # label interiors (partial-volume blur off the boundaries)
        inner = np.stack([ndimage.binary_erosion(lab == k, iterations=1) for lab in patients])
        means[k] = float(img[1:][inner].mean())
    gaps = [abs(means[K] - means[k]) for k in range(K)]
    assert min(gaps) > 0.08, means


# --------------------------------------------------------------------------------------------
# the ground truth
# --------------------------------------------------------------------------------------------


def test_ground_truth_carries_atlas_labels_onto_patients(written):
    """Pair (fixed = patient, moving = atlas): ``pair_batch``'s ground truth is the
    patient's field, and warps the atlas labels onto the patient's everywhere outside the
    lesion (Dice of each tissue label ~1, far above the unregistered overlap)."""
    ds, _, labels, _ = written
    pairs = np.asarray([(i, 0) for i in range(1, N)])
    assert ds.has_ground_truth(pairs)
    b = pair_batch(ds, pairs, fields=True)
    np.testing.assert_array_equal(
        b["gt_disp"], np.stack([ds.subjects[i].field for i in pairs[:, 0]])
    )
    atlas = np.broadcast_to(labels[0], (len(pairs), *SHAPE))
    warped = np.asarray(
        warp_labels(jnp.asarray(atlas), jnp.asarray(b["gt_disp"]), num_classes=K, mode="nearest")
    )
    assert not np.any(warped == K)  # the atlas has no lesion to carry
    for r, (f, _) in enumerate(pairs):
        healthy = labels[f] != K
        fixed = np.where(healthy, labels[f], 0)
        for k in range(1, K):
            d_gt = _dice(np.where(healthy, warped[r], 0), fixed, k)
            d_raw = _dice(np.where(healthy, atlas[r], 0), fixed, k)
            assert d_gt > 0.99, (f, k, d_gt)
            assert d_gt > d_raw, (f, k, d_gt, d_raw)
        assert (warped[r][healthy] == labels[f][healthy]).mean() > 0.995
        assert (atlas[r][healthy] == labels[f][healthy]).mean() < 0.97  # a real deformation


def test_fields_invertible(written):
    ds, _, _, _ = written
    field = jnp.asarray(np.stack([s.field for s in ds.subjects[1:]]))
    field_inv = jnp.asarray(np.stack([s.field_inv for s in ds.subjects[1:]]))
    for f in (field, field_inv):
        assert float(jnp.min(jacobian_determinant(f))) > 0.0
    inner = (slice(None), slice(6, -6), slice(6, -6))  # off the border band of exp(v)
    for err in (compose(field, field_inv), compose(field_inv, field)):
        e = np.linalg.norm(np.asarray(err), axis=-1)[inner]
        assert e.max() < 0.6 and e.mean() < 0.05, (e.max(), e.mean())


# --------------------------------------------------------------------------------------------
# the mass effect
# --------------------------------------------------------------------------------------------


def test_mass_effect_points_to_the_centre_and_decays(push_only):
    """Without the smooth deformation a patient's field is its mass effect: radial towards
    the lesion centre (pull-back: the tissue moved outwards), of the documented profile
    ``A t exp((1 - t^2) / 2)``, largest (``A``) at the lesion boundary, decaying outside."""
    ds, block, labels, template = push_only
    for i, rec in _lesions(ds, block).items():
        c, r, a = np.asarray(rec["centre"]), rec["radius"], rec["push"]
        u = ds.subjects[i].field
        rho = _rho(c)
        mag = np.linalg.norm(u, axis=-1)
        off = np.moveaxis(np.indices(SHAPE, dtype=np.float64), 0, -1) - c
        near = (rho > 0.5) & (rho < 3 * r)
        cos = np.sum(u * off, -1)[near] / (mag[near] * rho[near])
        assert cos.max() < -0.999  # towards the centre
        t = rho / r
        np.testing.assert_allclose(mag, a * t * np.exp((1 - t**2) / 2), atol=2e-3)
        assert abs(mag.max() - a) < 0.02 * a
        assert abs(rho.ravel()[np.argmax(mag)] - r) <= 1.0  # at the lesion boundary
        rings = [mag[(rho >= d - 0.5) & (rho < d + 0.5)].mean() for d in range(int(r) + 1, 20)]
        assert np.all(np.diff(rings) < 0)  # decaying with distance
        assert mag[rho >= 3 * r].max(initial=0.0) < 0.056 * a  # 3 exp(-4) = 0.055 at 3 r
        # the tissue is compressed inside the lesion, the analytic det at the centre
        det = np.asarray(jacobian_determinant(jnp.asarray(u[None])))[0]
        centre_det = (1 - a / r * np.exp(0.5)) ** 2
        assert det.min() > 0 and abs(det[tuple(np.round(c).astype(int))] - centre_det) < 0.05
        # and the patient's healthy labels are the template pulled back by it alone
        warped = np.asarray(
            warp_labels(
                jnp.asarray(template[None]), jnp.asarray(u[None]), num_classes=K, mode="nearest"
            )
        )[0]
        healthy = labels[i] != K
        np.testing.assert_array_equal(warped[healthy], labels[i][healthy])


@pytest.mark.parametrize("centre,radius,push", [((30.0, 31.0), 4.0, 2.0), ((20.3, 40.6), 6.5, 1.0)])
def test_mass_effect_field_inverse_is_exact_at_voxels(centre, radius, push):
    """``q = p + m_inv(p)`` is mapped back onto ``p`` by the analytic ``m`` (no
    interpolation), to the precision of the inverse's radial table."""
    m, m_inv = mass_effect_field(SHAPE, centre, radius, push)
    p = np.moveaxis(np.indices(SHAPE, dtype=np.float64), 0, -1)
    q = p + m_inv
    off = q - np.asarray(centre)
    t2 = np.sum(off**2, -1) / radius**2
    m_at_q = -off * (push / radius) * np.exp((1 - t2) / 2)[..., None]
    np.testing.assert_allclose(q + m_at_q, p, atol=2e-3)
    assert np.abs(m).max() == pytest.approx(push, rel=0.02)
    with pytest.raises(ValueError, match="invertible"):
        mass_effect_field(SHAPE, centre, radius, radius)


# --------------------------------------------------------------------------------------------
# determinism, settings, command line
# --------------------------------------------------------------------------------------------


def test_deterministic_and_key_dependent():
    template = make_template(jax.random.PRNGKey(0), SHAPE, num_labels=K - 1)
    a = make_lesion_subjects(jax.random.PRNGKey(1), template, num_subjects=N)
    b = make_lesion_subjects(jax.random.PRNGKey(1), template, num_subjects=N)
    c = make_lesion_subjects(jax.random.PRNGKey(2), template, num_subjects=N)
    for k in ("images", "labels", "disp", "disp_inv", "mass_effect", "centres", "radii"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["labels"], c["labels"])
    assert not np.allclose(a["centres"][1:], c["centres"][1:])


def test_written_deterministic(written, tmp_path):
    ds, block, labels, _ = written
    again, block2, labels2, _ = _write(tmp_path / "again")
    assert block == block2
    np.testing.assert_array_equal(labels, labels2)
    for x, y in zip(ds.subjects, again.subjects, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.field, y.field)


def test_bad_settings(tmp_path):
    assert SCENARIOS["lesion"] is write_lesion_dataset
    bad = [
        ({"lesion_radius": (0.5, 3.0)}, "lesion_radius"),
        ({"lesion_radius": (5.0, 3.0)}, "lesion_radius"),
        ({"lesion_radius": "big"}, "lesion_radius"),
        ({"lesion_radius": 40.0, "mass_effect": 1.0}, "lesion_radius"),  # fits nowhere
        ({"mass_effect": 2.5}, "mass_effect"),  # > lesion_radius low / 2
        ({"mass_effect": -1.0}, "mass_effect"),
        ({"lesion_mean": 0.35}, "lesion_mean"),  # the body's mean
        ({"lesion_mean": 0.2, "label_means": [0.05, 0.35, 0.8, 0.6, 0.2]}, "lesion_mean"),
        ({"num_labels": 1}, "num_labels"),
        ({"num_labelled": 0}, "num_labelled"),
        ({"num_heldout": N}, "num_heldout"),
    ]
    for k, (setting, match) in enumerate(bad):
        out = tmp_path / f"bad{k}"
        with pytest.raises(ValueError, match=match):
            make_scenario("lesion", out, key=0, shape=SHAPE, num_subjects=N, **setting)
        assert not out.exists() and not (tmp_path / f"bad{k}.partial").exists()


def test_make_synthetic_cli(run_cli, tmp_path):
    out = tmp_path / "lesion"
    argv = ["make-synthetic", "--scenario", "lesion", "--out", out, "--shape", 64, 64]
    argv += ["--subjects", N, "--heldout", H, "--seed", 5]
    argv += ["--setting", "mass_effect=1.0", "--setting", "lesion_radius=(3.0, 5.0)"]
    rc, stdout, err = run_cli(argv)
    assert rc == 0, err
    assert "of scenario lesion" in stdout
    ds = load_learn2reg(out / "dataset.json")
    block = json.loads((out / "dataset.json").read_text())["jrs_jax"]
    assert ds.label_names[4] == "lesion" and block["lesion"]["mass_effect"] == 1.0
    radii = [e["radius"] for e in block["lesion"]["subjects"][1:]]
    assert all(3.0 <= r <= 5.0 for r in radii)
    assert len(ds.val_pairs) == H * (H - 1)  # the command line asks for all held-out pairs
    rc, _, err = run_cli([*argv[:4], tmp_path / "bad", "--setting", "mass_effect=9"])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "mass_effect" in err

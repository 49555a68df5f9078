"""The ``ood`` scenario (:mod:`jrs_jax.data.ood`): the anatomy population with a second
dataset file whose held-out subjects are the same anatomies rendered with a distribution
shift. Tested on both files read back through ``load_learn2reg``: the training subjects and
the held-out labels and fields are identical, ``dataset.json`` is the anatomy writer's, and
the held-out images differ in the claimed way only (noise: a larger noise level, the label
means kept; contrast: every label mean moved by the strength, in the stated directions,
reordered; bias: a much stronger low-frequency multiplicative variation within a label), the
shift recorded in both files; determinism, the settings, the command line."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from scipy import ndimage

from jrs_jax.data import (
    OOD_SHIFTS,
    load_learn2reg,
    make_subjects,
    make_template,
    write_learn2reg_dataset,
    write_ood_dataset,
)
from jrs_jax.data.ood import DEFAULT_STRENGTH, _rerender, ood_settings
from jrs_jax.data.scenarios import SCENARIOS, make_scenario
from jrs_jax.data.synthetic import _base_means

SHAPE = (48, 48)
N, H = 6, 3  # the CLI test writes 6 subjects of 48^2, 3 held out, too: one compilation
K = 4
SEED = 7
LAYOUT = dict(shape=SHAPE, num_subjects=N, num_heldout=H, num_val_pairs=H * (H - 1))


def _load(path):
    ood = str(path).replace("dataset.json", "dataset_ood.json")
    return (
        load_learn2reg(path, normalize=False, fields=True),
        load_learn2reg(ood, normalize=False, fields=True),
        json.load(open(path)),
        json.load(open(ood)),
    )


@pytest.fixture(scope="module", params=OOD_SHIFTS)
def written(request, tmp_path_factory):
    """(shift, in-distribution dataset, shifted dataset, their JSONs, root)."""
    root = tmp_path_factory.mktemp(f"ood_{request.param}") / "d"
    path = write_ood_dataset(root, key=SEED, shift=request.param, **LAYOUT)
    return (request.param, *_load(path), root)


def _heldout(ds) -> dict:
    return {s.name: s for s in ds.subjects if s.held_out}


def _interiors(labels: np.ndarray, k: int, depth: int = 2) -> np.ndarray:
    """Voxels of label ``k`` at least ``depth`` voxels inside it (off the blurred edges)."""
    return ndimage.binary_erosion(labels == k, iterations=depth)


def _label_means(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.asarray([image[_interiors(labels, k)].mean() for k in range(K + 1)])


def _noise_level(image: np.ndarray, labels: np.ndarray) -> float:
    """Standard deviation of the high-pass residual (image minus its smoothing) inside the
    label interiors: the noise, the smooth bias and the label steps removed."""
    res = image - ndimage.gaussian_filter(image, 1.5)
    inner = np.any([_interiors(labels, k, 3) for k in range(K + 1)], axis=0)
    return float(res[inner].std())


def _bias_level(image: np.ndarray, labels: np.ndarray) -> float:
    """Standard deviation of the log of the smoothed image over the body label (1): its
    low-frequency multiplicative variation."""
    inner = _interiors(labels, 1, 3)
    smooth = ndimage.gaussian_filter(np.where(labels == 1, image, 0.0), 3.0)
    norm = ndimage.gaussian_filter((labels == 1).astype(float), 3.0)
    return float(np.log(smooth[inner] / norm[inner]).std())


# --------------------------------------------------------------------------------------------
# the two files
# --------------------------------------------------------------------------------------------


def test_training_subjects_identical(written):
    _, a, b, ja, jb, _ = written
    assert ja["training"] == jb["training"]  # the same entries: the same files
    ta, tb = [a.subjects[i] for i in a.training()], [b.subjects[i] for i in b.training()]
    assert len(ta) == len(tb) == N - H
    for x, y in zip(ta, tb, strict=True):
        assert x.name == y.name
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.field, y.field)


def test_heldout_same_anatomy_other_images(written, tmp_path):
    _, a, b, _, jb, root = written
    ha, hb = _heldout(a), _heldout(b)
    assert list(ha) == list(hb) and len(ha) == H
    assert [tuple(p) for p in a.val_pairs] == [tuple(p) for p in b.val_pairs]
    for name in ha:
        x, y = ha[name], hb[name]
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.field, y.field)
        np.testing.assert_array_equal(x.field_inv, y.field_inv)
        assert not np.allclose(x.image, y.image, atol=1e-3)
    assert all(p["fixed"].startswith("./imagesTs_ood/") for p in jb["registration_val"])
    assert (root / "imagesTs_ood").is_dir() and len(list((root / "imagesTs_ood").iterdir())) == H


def test_in_distribution_file_is_the_anatomy(written, tmp_path):
    """``dataset.json`` is :func:`write_learn2reg_dataset`'s with the same key and layout."""
    _, a, *_ = written
    anatomy = load_learn2reg(
        write_learn2reg_dataset(tmp_path / "anatomy", key=SEED, **LAYOUT), normalize=False
    )
    assert [s.name for s in anatomy.subjects] == [s.name for s in a.subjects]
    for x, y in zip(anatomy.subjects, a.subjects, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        if x.labels is not None:
            np.testing.assert_array_equal(x.labels, y.labels)


def test_shift_recorded_in_both_files(written):
    shift, _, _, ja, jb, _ = written
    for meta, split in ((ja, "in_distribution"), (jb, "shifted")):
        info = meta["jrs_jax"]["ood"]
        assert info["shift"] == shift and info["split"] == split
        assert info["strength"] == DEFAULT_STRENGTH[shift]
        assert info["files"] == {
            "in_distribution": "./dataset.json",
            "shifted": "./dataset_ood.json",
        }
    assert ja["jrs_jax"]["generator"] == "jrs_jax.data.ood"


# --------------------------------------------------------------------------------------------
# the claimed shifts, measured on the images read back
# --------------------------------------------------------------------------------------------


def test_the_shift_is_the_claimed_one(written):
    shift, a, b, _, jb, _ = written
    s = jb["jrs_jax"]["ood"]["strength"]
    ha, hb = _heldout(a), _heldout(b)
    for name in ha:
        lab = ha[name].labels
        x, y = ha[name].image[..., 0], hb[name].image[..., 0]
        mx, my = _label_means(x, lab), _label_means(y, lab)
        nx, ny = _noise_level(x, lab), _noise_level(y, lab)
        bx, by = _bias_level(x, lab), _bias_level(y, lab)
        if shift == "noise":
            # noise 0.02 -> 0.08: measured ratio 3.7 (seeds 1, 2, 7); the label means stay
            assert ny > 2.5 * nx, (name, nx, ny)
            assert np.abs(my - mx).max() < 0.02
        elif shift == "contrast":
            # every foreground mean moved by ~strength, up / down alternately; noise kept
            delta = my - mx
            sign = np.array([0, 1, -1, 1, -1])
            assert abs(delta[0]) < 0.02
            assert np.all(delta[1:] * sign[1:] > 0.8 * s), (name, delta)
            assert np.all(np.abs(delta[1:]) < 1.25 * s), (name, delta)
            assert not np.array_equal(np.argsort(mx), np.argsort(my))  # reordered
            assert 0.8 < ny / nx < 1.25
        else:
            # log bias sd 0.1 -> 0.4: measured ratio 2.8-3.9 in the body (2.8-4.2 over seeds
            # 1, 2, 7: the smoothing keeps some noise, which the shift leaves); noise kept
            assert by > 2.0 * bx, (name, bx, by)
            assert 0.8 < ny / nx < 1.25


def test_same_draws_reproduce_the_anatomy():
    """Re-rendering with unchanged settings gives the anatomy's images bit for bit: the
    shifted images differ by the shift alone."""
    k = jax.random.PRNGKey(3)
    template = make_template(jax.random.PRNGKey(0), SHAPE)
    s = make_subjects(k, template, num_subjects=N)
    again = _rerender(k, s["labels"], _base_means(K + 1), noise=0.02, bias=0.1)
    np.testing.assert_array_equal(again, s["images"])


def test_ood_settings():
    means = _base_means(K + 1)
    m, noise, bias, s = ood_settings("contrast", None, means, noise=0.02, bias=0.1)
    np.testing.assert_allclose(m, [0.05, 0.6, 0.55, 0.85, 0.7], atol=1e-6)
    assert (noise, bias, s) == (0.02, 0.1, 0.25)
    m, noise, bias, _ = ood_settings("noise", 0.1, means, noise=0.02, bias=0.1)
    assert noise == 0.1 and bias == 0.1 and np.array_equal(m, means)
    m, noise, bias, _ = ood_settings("bias", None, means, noise=0.02, bias=0.1)
    assert bias == 0.4 and noise == 0.02


# --------------------------------------------------------------------------------------------
# determinism, settings, command line
# --------------------------------------------------------------------------------------------


def test_written_deterministic(tmp_path):
    a = _load(write_ood_dataset(tmp_path / "a", key=SEED, shift="bias", **LAYOUT))
    b = _load(write_ood_dataset(tmp_path / "b", key=SEED, shift="bias", **LAYOUT))
    c = _load(write_ood_dataset(tmp_path / "c", key=SEED + 1, shift="bias", **LAYOUT))
    assert a[3]["jrs_jax"] == b[3]["jrs_jax"]
    for x, y, z in zip(a[1].subjects, b[1].subjects, c[1].subjects, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        assert not np.array_equal(x.image, z.image)


def test_bad_settings(tmp_path):
    assert SCENARIOS["ood"] is write_ood_dataset
    bad = [
        ({"shift": "blur"}, r"shift must be one of \('noise', 'contrast', 'bias'\)"),
        ({"strength": -1.0}, "strength"),
        ({"strength": "lots"}, "strength"),
        ({"shift": "noise", "strength": 0.01}, "strength .* must exceed .* noise=0.02"),
        ({"shift": "bias", "strength": 0.3, "bias": 0.5}, "strength .* must exceed .* bias=0.5"),
        ({"num_heldout": 1}, "num_heldout"),
    ]
    for k, (setting, match) in enumerate(bad):
        out = tmp_path / f"bad{k}"
        with pytest.raises(ValueError, match=match):
            make_scenario("ood", out, key=0, shape=SHAPE, num_subjects=N, **setting)
        assert not out.exists() and not (tmp_path / f"bad{k}.partial").exists()


def test_make_synthetic_cli(run_cli, tmp_path):
    out = tmp_path / "ood"
    argv = ["make-synthetic", "--scenario", "ood", "--out", out, "--shape", 48, 48]
    argv += ["--subjects", N, "--heldout", H, "--setting", "shift=contrast"]
    argv += ["--setting", "strength=0.3"]
    rc, stdout, err = run_cli(argv)
    assert rc == 0, err
    assert "of scenario ood" in stdout
    a, b, _, jb = _load(out / "dataset.json")
    assert jb["jrs_jax"]["ood"]["shift"] == "contrast" and jb["jrs_jax"]["ood"]["strength"] == 0.3
    assert list(_heldout(a)) == list(_heldout(b)) and len(_heldout(b)) == H
    rc, _, err = run_cli([*argv[:4], tmp_path / "bad", "--setting", "shift=blur"])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "shift" in err

"""The ``multimodal`` scenario (:mod:`jrs_jax.data.multimodal`): two modalities of the same
anatomy. The round trip through ``load_learn2reg`` (channels, modalities, arrays, fields,
``label_modality``), each claimed property on the data read back (the X / Y label means,
inverted or scrambled with no monotonic map, one anatomy, independent noise and bias), the
cross-modal pair batches, the settings, and the reader's one-line errors for a missing or
misshapen second modality, through ``load_learn2reg`` and the command line."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage, stats

from jrs_jax.data import (
    MULTIMODAL_CONTRASTS,
    DataError,
    load_labels,
    load_learn2reg,
    make_multimodal_subjects,
    make_subjects,
    make_template,
    modality_means,
    pair_batch,
    save_image,
    write_multimodal_dataset,
)
from jrs_jax.data.multimodal import _monotonic_map_exists
from jrs_jax.data.scenarios import SCENARIOS, make_scenario
from jrs_jax.data.synthetic import _base_means
from jrs_jax.spatial import warp_labels

SHAPE = (32, 32)
N, H, LAB = 6, 2, 3  # the CLI test writes 6 subjects too: one compilation
K = 4  # foreground labels
SEED = 3
VXM = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "voxelmorph.py")


def _arrays(contrast: str, **kw) -> dict:
    """What the writer generates for ``key=SEED`` (the anatomy writer's key split)."""
    k_template, k_subjects, _ = jax.random.split(jax.random.PRNGKey(SEED), 3)
    template = make_template(k_template, SHAPE, num_labels=K)
    return make_multimodal_subjects(
        k_subjects, template, num_subjects=N, contrast=contrast, **kw
    ) | {"template": template}


def _write(root, contrast: str, label_modality) -> tuple:
    path = write_multimodal_dataset(
        root,
        key=SEED,
        shape=SHAPE,
        num_subjects=N,
        num_heldout=H,
        num_labelled=LAB,
        num_labels=K,
        contrast=contrast,
        label_modality=label_modality,
    )
    with open(path) as f:
        block = json.load(f)["jrs_jax"]
    return path, load_learn2reg(path, normalize=False), block


@pytest.fixture(scope="module", params=MULTIMODAL_CONTRASTS)
def written(request, tmp_path_factory):
    """(contrast, path, dataset read back, jrs_jax block, arrays, labels [N, *S] by index)."""
    contrast = request.param
    label_modality = 1 if contrast == "inverted" else None
    root = tmp_path_factory.mktemp(f"multimodal_{contrast}") / "d"
    path, ds, block = _write(root, contrast, label_modality)
    labels = np.stack(
        [
            load_labels(os.path.join(root, "labelsTr", f"sub_{i:04d}.nii.gz")).data[..., 0]
            for i in range(N)
        ]
    )
    return contrast, path, ds, block, _arrays(contrast), labels


def _index(ds) -> dict[int, int]:
    """Array index (``sub_NNNN``) -> position in ``ds.subjects`` (held-out subjects come in
    order of first appearance in the pairs)."""
    return {int(s.name.split("_")[1]): j for j, s in enumerate(ds.subjects)}


def _label_means(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[N, C, K + 1]`` mean intensity of each channel inside each label (eroded once: the
    partial-volume blur at the boundaries left out)."""
    out = np.zeros((len(images), images.shape[-1], K + 1))
    for i in range(len(images)):
        for lab in range(K + 1):
            m = ndimage.binary_erosion(labels[i] == lab)
            assert m.sum() > 0
            out[i, :, lab] = images[i][m].mean(0)
    return out


# --------------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------------


def test_round_trip(written):
    contrast, path, ds, block, s, labels = written
    root = os.path.dirname(path)
    assert ds.num_channels == 2 and ds.modalities == ("X", "Y")
    assert sorted(os.listdir(os.path.join(root, "imagesTr")))[:2] == [
        "sub_0000_0000.nii.gz",
        "sub_0000_0001.nii.gz",
    ]
    idx = _index(ds)
    assert sorted(idx) == list(range(N))
    for i, j in idx.items():
        sub = ds.subjects[j]
        assert sub.image.shape == (*SHAPE, 2)
        np.testing.assert_allclose(sub.image, s["images"][i], atol=1e-6)
        np.testing.assert_allclose(sub.field, s["disp"][i], atol=1e-5)
        np.testing.assert_allclose(sub.field_inv, s["disp_inv"][i], atol=1e-5)
        assert sub.held_out == (i >= N - H)
        assert sub.has_labels == (i < LAB or i >= N - H)
        if sub.has_labels:
            np.testing.assert_array_equal(sub.labels, s["labels"][i])
    # one label map per subject: the same anatomy for both channels, as written
    np.testing.assert_array_equal(labels, s["labels"])
    assert ds.has_ground_truth(ds.val_pairs) and len(ds.val_pairs) == H
    lm = 1 if contrast == "inverted" else None
    assert ds.label_modality == lm
    assert block.get("label_modality") == lm
    mm = block["multimodal"]
    assert mm["contrast"] == contrast and mm["label_modality"] == lm
    np.testing.assert_allclose([mm["means"]["X"], mm["means"]["Y"]], s["means"], atol=1e-6)
    assert block["pairs"].startswith("cross-modal: moving = channel 0 (X), fixed = channel 1")


def test_x_channel_and_deformation_are_the_anatomys():
    """Channel 0 and the deformation are make_subjects' with the same key."""
    s = _arrays("inverted")
    k_subjects = jax.random.split(jax.random.PRNGKey(SEED), 3)[1]
    a = make_subjects(k_subjects, s["template"], num_subjects=N)
    np.testing.assert_array_equal(s["images"][..., :1], a["images"])
    np.testing.assert_array_equal(s["labels"], a["labels"])
    np.testing.assert_array_equal(s["disp"], a["disp"])
    again = _arrays("inverted")  # deterministic
    np.testing.assert_array_equal(again["images"], s["images"])


def test_label_modality_validation(written, tmp_path):
    _, path, ds, *_ = written
    with pytest.raises(ValueError, match="label_modality 2 out of range for 2 channels"):
        dataclasses.replace(ds, label_modality=2)
    for bad in (2, -1, "1", True, 0.5):
        with open(path) as f:
            meta = json.load(f)
        meta["jrs_jax"]["label_modality"] = bad
        p = tmp_path / "dataset.json"
        p.write_text(json.dumps(meta))
        with pytest.raises(DataError, match=r"jrs_jax\.label_modality .* 0\.\.1") as e:
            load_learn2reg(p)
        assert f"got {bad!r}" in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# the claimed properties
# --------------------------------------------------------------------------------------------


def test_label_means_follow_the_maps(written):
    contrast, _, ds, _, s, labels = written
    idx = _index(ds)
    images = np.stack([ds.subjects[idx[i]].image for i in range(N)])
    got = _label_means(images, labels)  # [N, 2, K + 1]
    want = s["means"]  # [2, K + 1]
    # per subject within jitter (0.03) and bias (log std 0.1); on average much closer
    assert np.abs(got - want[None]).max() < 0.25
    assert np.abs(got.mean(0) - want).max() < 0.08
    x, y = got.mean(0)
    np.testing.assert_array_equal(np.argsort(x), np.argsort(want[0]))
    np.testing.assert_array_equal(np.argsort(y), np.argsort(want[1]))
    fg = labels > 0
    r = np.corrcoef(images[..., 0][fg], images[..., 1][fg])[0, 1]
    if contrast == "inverted":
        np.testing.assert_allclose(want[1], 1.0 - want[0], atol=1e-6)
        assert np.abs(got[:, 0] + got[:, 1] - 1.0).max() < 0.25
        assert np.abs((got[:, 0] + got[:, 1]).mean(0) - 1.0).max() < 0.08
        assert r < -0.9  # strongly anti-correlated over the foreground
        assert stats.spearmanr(x, y)[0] == pytest.approx(-1.0)
    else:
        # a permutation of the X means, in another order, with no monotonic map X -> Y
        np.testing.assert_allclose(np.sort(want[1]), np.sort(want[0]))
        assert not np.array_equal(np.argsort(want[0]), np.argsort(want[1]))
        assert not _monotonic_map_exists(want[0], want[1])
        rho = stats.spearmanr(x, y)[0]
        assert abs(rho) < 0.9
        assert rho == pytest.approx(stats.spearmanr(want[0], want[1])[0])
        assert abs(r) < 0.9  # neither channel an (affine) function of the other


def test_same_anatomy_in_both_channels(written):
    """The edges of both channels lie on the same label boundaries."""
    _, _, ds, _, _, labels = written
    idx = _index(ds)
    images = np.stack([ds.subjects[idx[i]].image for i in range(N)])
    grads = [np.hypot(*np.gradient(images[..., c], axis=(1, 2))) for c in (0, 1)]
    assert np.corrcoef(grads[0].ravel(), grads[1].ravel())[0, 1] > 0.6
    boundary = np.stack(
        [ndimage.morphological_gradient(lab, size=3) > 0 for lab in labels]
    )  # voxels next to another label
    for g in grads:
        assert g[boundary].mean() > 3 * g[~boundary].mean()


@pytest.mark.parametrize("contrast", MULTIMODAL_CONTRASTS)
def test_independent_noise_and_bias(contrast):
    # noise only (no blur, bias, jitter): the residual after the label means is the noise
    s = _arrays(contrast, bias=0.0, blur_sigma=0.0, intensity_jitter=0.0)
    res = s["images"] - s["means"].T[s["labels"]]  # [N, *S, 2]
    assert res[..., 0].std() == pytest.approx(0.02, rel=0.1)
    assert res[..., 1].std() == pytest.approx(0.02, rel=0.1)
    assert abs(np.corrcoef(res[..., 0].ravel(), res[..., 1].ravel())[0, 1]) < 0.1
    # bias only: the two channels' multiplicative fields are different draws
    s = _arrays(contrast, noise=0.0, blur_sigma=0.0, intensity_jitter=0.0)
    log_bias = np.log(s["images"] / s["means"].T[s["labels"]])
    assert log_bias[..., 0].std() > 0.03 and log_bias[..., 1].std() > 0.03
    assert np.corrcoef(log_bias[..., 0].ravel(), log_bias[..., 1].ravel())[0, 1] < 0.9


@pytest.mark.parametrize("num_classes", range(3, 13))
def test_scrambled_means_have_no_monotonic_map(num_classes):
    x = _base_means(num_classes)
    y = modality_means(x, "scrambled")
    np.testing.assert_allclose(np.sort(y), np.sort(x))  # a permutation of the X means
    assert not _monotonic_map_exists(x, y)
    assert abs(stats.spearmanr(x, y)[0]) < 1.0 - 1e-6
    np.testing.assert_allclose(modality_means(x, "inverted"), 1.0 - x, atol=1e-6)


def test_modality_means_refuses_a_monotonic_scramble():
    assert _monotonic_map_exists([0.1, 0.5, 0.7], [0.9, 0.4, 0.2])
    assert not _monotonic_map_exists([0.1, 0.5, 0.7], [0.4, 0.9, 0.2])
    for means in ([0.1, 0.5], [0.3, 0.3, 0.3]):
        with pytest.raises(ValueError, match="at least 3 classes with distinct means"):
            modality_means(means, "scrambled")
    with pytest.raises(ValueError, match="contrast must be one of"):
        modality_means([0.1, 0.5, 0.7], "foo")


def test_cross_modal_pair_batch(written):
    _, _, ds, *_ = written
    pairs = np.asarray(ds.val_pairs)
    b = pair_batch(ds, pairs, moving_channel=0, fixed_channel=1, fields=True)
    assert b["moving"].shape == b["fixed"].shape == (len(pairs), *SHAPE, 1)
    for r, (f, m) in enumerate(pairs):
        np.testing.assert_array_equal(b["moving"][r, ..., 0], ds.subjects[m].image[..., 0])
        np.testing.assert_array_equal(b["fixed"][r, ..., 0], ds.subjects[f].image[..., 1])
    # the ground truth carries the moving labels onto the fixed ones
    warped = np.asarray(
        warp_labels(
            jnp.asarray(b["moving_labels"]),
            jnp.asarray(b["gt_disp"]),
            num_classes=K + 1,
            mode="nearest",
        )
    )
    fixed = b["fixed_labels"]
    assert b["fixed_has_label"].all() and b["moving_has_label"].all()
    assert (warped == fixed).mean() > 0.9  # through the template: nearest-neighbour losses
    assert (warped == fixed).mean() > (b["moving_labels"] == fixed).mean()


# --------------------------------------------------------------------------------------------
# settings, registry, command line
# --------------------------------------------------------------------------------------------


def test_registry_and_bad_settings(tmp_path):
    assert SCENARIOS["multimodal"] is write_multimodal_dataset
    bad = {
        "contrast": ("foo", r"contrast must be one of \('inverted', 'scrambled'\); got 'foo'"),
        "label_modality": (2, r"label_modality must be one of None \(any\), 0 \(X\) or 1 \(Y\)"),
    }
    for setting, (value, match) in bad.items():
        out = tmp_path / setting
        with pytest.raises(ValueError, match=match):
            make_scenario("multimodal", out, key=0, shape=SHAPE, num_subjects=N, **{setting: value})
        assert not out.exists() and not (tmp_path / f"{setting}.partial").exists()


def test_make_synthetic_cli(run_cli, tmp_path):
    out = tmp_path / "mm"
    argv = ["make-synthetic", "--scenario", "multimodal", "--out", out, "--shape", "32", "32"]
    argv += ["--subjects", N, "--setting", "contrast=scrambled", "--setting", "label_modality=1"]
    rc, stdout, err = run_cli(argv)
    assert rc == 0, err
    assert "of scenario multimodal" in stdout
    ds = load_learn2reg(out / "dataset.json")
    assert ds.modalities == ("X", "Y") and ds.label_modality == 1
    block = json.loads((out / "dataset.json").read_text())["jrs_jax"]
    assert block["multimodal"]["contrast"] == "scrambled"
    rc, _, err = run_cli([*argv[:4], tmp_path / "bad", "--setting", "contrast=foo"])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "contrast" in err


# --------------------------------------------------------------------------------------------
# broken datasets: one-line errors naming the entry
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inverted_path(tmp_path_factory):
    """The JSON of an inverted dataset to copy and break."""
    return _write(tmp_path_factory.mktemp("multimodal_broken") / "d", "inverted", 1)[0]


def _broken(path, tmp_path) -> str:
    """A copy of the dataset to break (files are small)."""
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(os.path.dirname(path), dst)
    return str(dst / "dataset.json")


def _cli_error(run_cli, path, tmp_path, *needles) -> str:
    """``jrs-jax train`` on the broken dataset: exit 2, one line, naming ``needles``."""
    workdir = tmp_path / "run"
    argv = ["train", f"{VXM}:smoke", "--set", f"data.dataset={path}", "--workdir", workdir]
    rc, _, err = run_cli([*argv, "--no-progress"])
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jrs-jax: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not workdir.exists()
    return lines[0]


def test_missing_second_modality(inverted_path, tmp_path, run_cli):
    path = _broken(inverted_path, tmp_path)
    os.remove(os.path.join(os.path.dirname(path), "imagesTr", "sub_0002_0001.nii.gz"))
    with pytest.raises(DataError, match=r"training\[2\] image: channel 1 \(Y\) file"):
        load_learn2reg(path)
    _cli_error(run_cli, path, tmp_path, "training[2] image", "channel 1 (Y)", "sub_0002_0001")


def test_second_modality_of_another_shape(inverted_path, tmp_path, run_cli):
    path = _broken(inverted_path, tmp_path)
    root = os.path.dirname(path)
    bad = np.zeros((32, 30, 1), np.float32)
    save_image(os.path.join(root, "imagesTr", "sub_0003_0001.nii.gz"), bad, affine=np.eye(4))
    match = (
        r"sub_0003_0000\.nii\.gz / .*sub_0003_0001\.nii\.gz: image shape \(32, 32, 1\) does "
        r"not match channel 1 \(Y\) shape \(32, 30, 1\) \(dataset\.json training\[3\]\)"
    )
    with pytest.raises(DataError, match=match) as e:
        load_learn2reg(path)
    assert "\n" not in str(e.value)
    _cli_error(run_cli, path, tmp_path, "training[3]", "channel 1 (Y) shape (32, 30, 1)")

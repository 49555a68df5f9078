"""Config files, variants, ``--set`` overrides and saved ``config.json`` (jrs_jax.config)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jrs_jax.config import ConfigError, apply_overrides, load_config, parse_flags, save_config

ROOT = Path(__file__).resolve().parents[1]
VXM = str(ROOT / "configs" / "voxelmorph.py")
SEG = str(ROOT / "configs" / "unet_seg.py")


def _diff(a: dict, b: dict, prefix: str = "") -> set[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = set()
    for k in set(a) | set(b):
        key = f"{prefix}{k}"
        va, vb = a.get(k, "<missing>"), b.get(k, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out |= _diff(va, vb, key + ".")
        elif va != vb:
            out.add(key)
    return out


# --------------------------------------------------------------------------------------------
# load_config: .py files and variants
# --------------------------------------------------------------------------------------------


def test_load_py_config_defaults():
    cfg = load_config(VXM)
    assert cfg["method"] == "voxelmorph"
    assert cfg["data"]["num_classes"] is None  # filled in from the dataset at train time
    assert cfg["loss"]["dice_weight"] == 0.0
    assert cfg["model"]["output"] == "displacement"
    json.dumps(cfg)  # JSON types only


def test_variants_change_the_right_keys():
    base = load_config(VXM)
    assert load_config(VXM + ":") == base  # empty variant list = defaults

    dice = load_config(VXM + ":dice")
    assert _diff(base, dice) == {"loss.dice_weight"}
    assert dice["loss"]["dice_weight"] == 1.0

    diffeo = load_config(VXM + ":diffeo")
    assert _diff(base, diffeo) == {"model.output", "model.int_downsize"}
    assert diffeo["model"]["output"] == "velocity" and diffeo["model"]["int_downsize"] == 2

    smoke = load_config(VXM + ":smoke")
    assert smoke["train"]["steps"] == 4 < base["train"]["steps"]
    assert smoke["model"]["features"] == [4, 8]
    assert not any(k.startswith(("loss.", "method", "optim.")) for k in _diff(base, smoke))

    combo = load_config(VXM + ":dice,diffeo,smoke")
    assert _diff(base, combo) == _diff(base, dice) | _diff(base, diffeo) | _diff(base, smoke)
    assert combo["loss"]["dice_weight"] == 1.0
    assert combo["model"]["output"] == "velocity"
    assert combo["train"]["steps"] == 4
    # order and spaces do not matter
    assert load_config(VXM + ":smoke, diffeo,dice") == combo


def test_unet_seg_smoke_variant():
    base, smoke = load_config(SEG), load_config(SEG + ":smoke")
    assert base["method"] == smoke["method"] == "unet_seg"
    assert smoke["train"]["steps"] == 4 and smoke["data"]["batch_size"] == 2
    assert "loss.dice_weight" not in _diff(base, smoke)


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(ConfigError) as exc:
        load_config(VXM + ":smoke,bogus")
    msg = str(exc.value)
    assert "bogus" in msg
    for known in ("dice", "diffeo", "smoke", "3d"):
        assert known in msg


def test_parse_flags():
    assert parse_flags(None, {"a", "b"}) == set()
    assert parse_flags(" a , b,", {"a", "b"}) == {"a", "b"}
    with pytest.raises(ConfigError, match="'c'"):
        parse_flags("a,c", {"a", "b"})


# --------------------------------------------------------------------------------------------
# load_config: .json and errors
# --------------------------------------------------------------------------------------------


def test_load_json_config(tmp_path):
    cfg = {"method": "voxelmorph", "train": {"steps": 3, "lr": 0.5}, "tags": [1, 2]}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    assert load_config(p) == cfg  # PathLike accepted
    assert load_config(str(p)) == cfg
    with pytest.raises(ConfigError, match="takes no"):
        load_config(f"{p}:smoke")


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(ConfigError, match="not found") as exc:
        load_config(f"{missing}:smoke")
    assert str(missing) in str(exc.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.json")


def test_no_get_config(tmp_path):
    p = tmp_path / "empty.py"
    p.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_config(p)


def test_import_failure_is_a_config_error(tmp_path):
    p = tmp_path / "broken.py"
    p.write_text("def get_config(arg=None):\n    return {\n")
    with pytest.raises(ConfigError, match="failed to import"):
        load_config(p)


def test_non_dict_result(tmp_path):
    p = tmp_path / "listy.py"
    p.write_text("def get_config(arg=None):\n    return [1, 2]\n")
    with pytest.raises(ConfigError, match="list"):
        load_config(p)
    q = tmp_path / "listy.json"
    q.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a dict"):
        load_config(q)


def test_non_json_value(tmp_path):
    p = tmp_path / "setty.py"
    p.write_text("def get_config(arg=None):\n    return {'a': {'b': {1, 2}}}\n")
    with pytest.raises(ConfigError, match="JSON"):
        load_config(p)


def test_invalid_json_and_unknown_extension(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{'single': 'quotes'}")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_config(p)
    q = tmp_path / "cfg.yaml"
    q.write_text("a: 1\n")
    with pytest.raises(ConfigError, match=r"\.py"):
        load_config(q)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --------------------------------------------------------------------------------------------
# apply_overrides
# --------------------------------------------------------------------------------------------


@pytest.fixture
def cfg():
    return {
        "method": "voxelmorph",
        "data": {"dataset": "x/dataset.json", "num_classes": None, "batch_size": 4},
        "model": {"features": [16, 32], "flag": False},
        "loss": {"similarity": "local_ncc", "kw": {"window": 9}, "reg_weight": 1.0},
        "optim": {"learning_rate": 1e-3},
        "train": {"steps": 100},
    }


def test_override_nested_keys_and_copy(cfg):
    before = json.loads(json.dumps(cfg))
    out = apply_overrides(cfg, ["loss.kw.window=5", "train.steps=7", "method=unet_seg"])
    assert out["loss"]["kw"]["window"] == 5
    assert out["train"]["steps"] == 7
    assert out["method"] == "unet_seg"
    assert cfg == before  # the input is not modified
    assert apply_overrides(cfg, []) == cfg


def test_override_int_to_float_key(cfg):
    out = apply_overrides(cfg, ["optim.learning_rate=1", "loss.reg_weight=2"])
    assert out["optim"]["learning_rate"] == 1.0 and isinstance(out["optim"]["learning_rate"], float)
    assert isinstance(out["loss"]["reg_weight"], float)
    out = apply_overrides(cfg, ["optim.learning_rate=3e-4"])
    assert out["optim"]["learning_rate"] == pytest.approx(3e-4)


def test_override_float_into_int_key_rejected(cfg):
    with pytest.raises(ConfigError) as exc:
        apply_overrides(cfg, ["train.steps=2.5"])
    assert "train.steps" in str(exc.value) and "int" in str(exc.value)


def test_override_bool(cfg):
    out = apply_overrides(cfg, ["model.flag=true"])
    assert out["model"]["flag"] is True
    assert apply_overrides(out, ["model.flag=false"])["model"]["flag"] is False
    assert apply_overrides(cfg, ["model.flag=True"])["model"]["flag"] is True
    with pytest.raises(ConfigError):
        apply_overrides(cfg, ["model.flag=1"])  # an int is not a bool
    with pytest.raises(ConfigError):
        apply_overrides(cfg, ["train.steps=true"])  # nor a bool an int


def test_override_null(cfg):
    out = apply_overrides(cfg, ["data.num_classes=5"])
    assert out["data"]["num_classes"] == 5
    assert apply_overrides(out, ["data.num_classes=null"])["data"]["num_classes"] is None
    assert apply_overrides(cfg, ["train.steps=null"])["train"]["steps"] is None


def test_override_list_from_tuple(cfg):
    out = apply_overrides(cfg, ["model.features=(8, 16, 32)"])
    assert out["model"]["features"] == [8, 16, 32]
    assert isinstance(out["model"]["features"], list)
    out = apply_overrides(cfg, ["model.features=[4]"])
    assert out["model"]["features"] == [4]
    json.dumps(out)
    with pytest.raises(ConfigError):
        apply_overrides(cfg, ["model.features=8"])


def test_override_string(cfg):
    assert apply_overrides(cfg, ["loss.similarity=mse"])["loss"]["similarity"] == "mse"
    assert apply_overrides(cfg, ["loss.similarity='ncc'"])["loss"]["similarity"] == "ncc"
    out = apply_overrides(cfg, ["data.dataset=/a/b c/dataset.json"])
    assert out["data"]["dataset"] == "/a/b c/dataset.json"
    with pytest.raises(ConfigError, match="str"):
        apply_overrides(cfg, ["loss.similarity=3"])


def test_override_unknown_key_names_known_keys(cfg):
    with pytest.raises(ConfigError) as exc:
        apply_overrides(cfg, ["loss.reg_wieght=2.0"])
    msg = str(exc.value)
    assert "reg_wieght" in msg
    for known in ("reg_weight", "similarity", "kw"):
        assert known in msg
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(cfg, ["stepz=3"])


def test_override_section_vs_value(cfg):
    with pytest.raises(ConfigError, match="section, not a value"):
        apply_overrides(cfg, ["train=5"])
    with pytest.raises(ConfigError, match="not a config section"):
        apply_overrides(cfg, ["method.name=x"])  # 'method' holds a value
    with pytest.raises(ConfigError, match="not a config section"):
        apply_overrides(cfg, ["nosuch.key=1"])


@pytest.mark.parametrize("item", ["train.steps", "=5", " =5", ""])
def test_override_malformed(cfg, item):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, [item])


def test_override_value_may_contain_equals(cfg):
    out = apply_overrides(cfg, ["data.dataset=a=b.json"])
    assert out["data"]["dataset"] == "a=b.json"


# --------------------------------------------------------------------------------------------
# save_config
# --------------------------------------------------------------------------------------------


def test_save_config_round_trip(tmp_path):
    cfg = apply_overrides(load_config(VXM + ":dice,smoke"), ["model.features=(2, 4)"])
    path = tmp_path / "sub" / "dir" / "config.json"  # parent folders are created
    save_config(cfg, path)
    assert json.loads(path.read_text()) == cfg
    assert load_config(path) == cfg
    assert path.read_text().endswith("\n")
    assert os.listdir(path.parent) == ["config.json"]  # no temporary file left


def test_save_config_overwrites_atomically(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    save_config({"a": 1}, path)
    save_config({"a": 2, "b": [1]}, path)
    assert load_config(path) == {"a": 2, "b": [1]}
    assert sorted(os.listdir(tmp_path)) == ["config.json"]

    # a write that fails half-way never replaces (or truncates) the existing file
    import jrs_jax.config as config_mod

    replaced = []
    monkeypatch.setattr(config_mod.os, "replace", lambda *a: replaced.append(a))
    save_config({"a": 3}, path)
    assert replaced and replaced[0][1] == os.fspath(path)
    assert replaced[0][0] != os.fspath(path)  # written elsewhere first
    assert load_config(path) == {"a": 2, "b": [1]}
    monkeypatch.undo()
    with pytest.raises(TypeError):
        save_config({"a": {1, 2}}, path)
    assert load_config(path) == {"a": 2, "b": [1]}


def test_whole_float_for_an_int_key_is_stored_as_int():
    out = apply_overrides({"train": {"steps": 10}}, ["train.steps=5.0"])
    assert out["train"]["steps"] == 5 and isinstance(out["train"]["steps"], int)


def test_failed_save_leaves_no_temporary_file(tmp_path):
    p = tmp_path / "config.json"
    save_config({"a": 1}, p)
    with pytest.raises(TypeError):
        save_config({"a": {1, 2}}, p)
    assert sorted(os.listdir(tmp_path)) == ["config.json"]
    assert json.loads(p.read_text()) == {"a": 1}

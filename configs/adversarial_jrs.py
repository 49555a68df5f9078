"""Adversarial JRS (Elmahdy et al., MICCAI 2019): registration net + WGAN-GP PatchGAN critic.

Variants (``configs/adversarial_jrs.py:VARIANTS``, comma-separated):
  ``nocritic`` λ2 = 0: no critic (the generator alone, ``L_sim + λ1 L_smooth``)
  ``images``   the critic sees ``(I_f, I_m∘φ)`` only (no label channel)
  ``paper``    the paper's real triple ``(I_f, Θ(I_f), S_f)`` (crisp, unwarped ``S_f``)
  ``3d``       3-D synthetic data, batch 1
  ``smoke``    tiny networks, 2 critic steps, a few steps (tests)

No public code exists, so there is no official-defaults variant. Defaults: the paper's
generator loss ``(1 − DSC) + (1 − NCC) + λ1 bending − λ2 E[D(fake)]`` with global NCC,
λ1 = 1 (``loss.reg_weight``), λ2 = 0.1 (``loss.adv_weight``); a VoxelMorph U-Net generator
(encoder 16-32-32-32), Adam 1e-3; a PatchGAN critic (features 32-64-128, instance norm, see
the method docstring) on the image + label triple, WGAN-GP with λ_GP = 10 and 5 critic
updates per generator update, each on its own batch, Adam 1e-4 (b1 0.5, b2 0.9: WGAN-GP's);
real triples ``(I_f, Θ(I_f), S_f∘Θ)`` with ``Θ`` a random diffeomorphism of control-point
standard deviation 1 voxel every 8 voxels. Pairs are drawn among the labelled training
subjects (the loss needs both labels).
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"nocritic", "images", "paper", "3d", "smoke"})
    cfg = {
        "method": "adversarial_jrs",
        "seed": 0,
        "data": {
            "dataset": "jrs_synthetic/dataset.json",
            "num_labelled": None,
            "num_classes": None,
            "batch_size": 4,
        },
        "model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "output": "displacement",
            "integration_steps": 7,
            "int_downsize": 1,
            "dtype": "float32",
            "remat": False,
        },
        "critic": {
            "features": [32, 64, 128],
            "norm": "instance",  # per-example: WGAN-GP-safe (no batch statistics)
            "inputs": "images_labels",  # or "images"
            "n_critic": 5,
            "gp_weight": 10.0,
            "per_step_batches": True,
            "real_amplitude": 1.0,  # Θ: control-point std (voxels)
            "real_spacing": 8,  # Θ: voxels between control points
            "real_labels": "warped",  # S_f∘Θ; "fixed": the paper's S_f
        },
        "loss": {
            "similarity": "ncc",  # or "local_ncc"
            "similarity_kwargs": {},
            "regulariser_kwargs": {},
            "reg_weight": 1.0,  # λ1 (bending energy)
            "adv_weight": 0.1,  # λ2 (0: no critic)
        },
        "optim": {
            "reg": {"name": "adam", "learning_rate": 1e-3},
            "critic": {"name": "adam", "learning_rate": 1e-4, "b1": 0.5, "b2": 0.9},
        },
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # mode: None = the method's (pairs | atlas | within_subject | cross_modal); labels: Dice
        # over these labels only (None: all foreground labels); see jrs_jax.evaluation
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "nocritic" in flags:
        cfg["loss"]["adv_weight"] = 0.0
    if "images" in flags:
        cfg["critic"]["inputs"] = "images"
    if "paper" in flags:
        cfg["critic"]["real_labels"] = "fixed"
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg)
        cfg["critic"].update(features=[4, 8], n_critic=2)
    return cfg

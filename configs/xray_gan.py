"""X-ray GAN JRS (Mahapatra et al., MLMI 2018): cycle-consistent GAN registration + Otsu mask.

Variants (``configs/xray_gan.py:VARIANTS``, comma-separated):
  (default)      the full model: G, F, D_X, D_Y; NMI + SSIM content, LSGAN adversarial,
                 −log Dice of the mask, deformation agreement, cycle L1, smoothness
  ``no_cycle``   cycle weight 0: F and D_X are not built (state {G, D_Y})
  ``voxelmorph`` the baseline: G alone (no mask input: a zero channel), −NMI + (1 − SSIM) +
                 diffusion; no adversary, no Dice, no agreement, no cycle
  ``vxm_agreement``  the baseline + the deformation agreement (the supervision by the known
                 transform alone)
  ``feature``    feature (VGG) loss weight 1: needs a user-supplied extractor
                 (``XrayGAN.set_feature_extractor``; no pretrained weights are downloaded)
  ``3d``         3-D synthetic data, batch 1
  ``smoke``      tiny networks, a few steps (tests)

No public code exists, so there is no official-defaults variant. Defaults (jrs_jax decisions,
see the method docstring): VoxelMorph U-Nets 16-32-32-32 for G and F (Adam 1e-3), PatchGAN
discriminators 16-32-64 with instance norm (Adam 2e-4, b1 0.5: CycleGAN's), λ_adv = 0.1,
λ_dice = 1, λ_agree = 1, λ_cyc = 1, λ_smooth = 1 (diffusion), feature loss off; mask
temperature 0.05 on the channel-mean of the min-max normalised decoder features, Otsu with
256 bins, foreground above the threshold.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"no_cycle", "voxelmorph", "vxm_agreement", "feature", "3d", "smoke"})
    cfg = {
        "method": "xray_gan",
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
            "mask_input": True,  # G (and F) see the reference mask as a third channel
        },
        "disc": {"features": [16, 32, 64], "norm": "instance"},
        "mask": {"temperature": 0.05, "bins": 256, "polarity": "above"},
        "loss": {
            "nmi_kwargs": {},
            "ssim_kwargs": {},
            "feature_weight": 0.0,  # the paper's VGG loss: needs a user-supplied extractor
            "adv_weight": 0.1,  # 0: no discriminator
            "gan_kind": "lsgan",
            "dice_weight": 1.0,
            "agreement_weight": 1.0,
            "agreement_eps": 0.01,  # voxel^2
            "cycle_weight": 1.0,  # 0: no F, no D_X
            "smooth_weight": 1.0,  # VoxelMorph's λ; at 0.1 the baseline folded 5% (300 steps)
        },
        "optim": {
            "gen": {"name": "adam", "learning_rate": 1e-3},
            "disc": {"name": "adam", "learning_rate": 2e-4, "b1": 0.5, "b2": 0.999},
        },
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # mode: None = the method's (pairs | atlas | within_subject | cross_modal); labels: Dice
        # over these labels only (None: all foreground labels); see jrs_jax.evaluation
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    loss = cfg["loss"]
    if "no_cycle" in flags:
        loss["cycle_weight"] = 0.0
    if "voxelmorph" in flags or "vxm_agreement" in flags:
        loss.update(adv_weight=0.0, dice_weight=0.0, cycle_weight=0.0, agreement_weight=0.0)
        cfg["model"]["mask_input"] = False
    if "vxm_agreement" in flags:
        loss["agreement_weight"] = 1.0
    if "feature" in flags:
        loss["feature_weight"] = 1.0
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg)
        cfg["disc"]["features"] = [4, 8]
    return cfg

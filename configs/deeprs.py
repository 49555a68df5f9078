"""DeepRS (He et al., ECCV 2020): registration + few-shot segmentation + pixel-wise discriminator.

Variants (``configs/deeprs.py:VARIANTS``, comma-separated):
  ``oneshot``  one labelled training subject (N = 1)
  ``no_dss``   ablation: Deep Structure Sampling off (α ≡ 1, φ̂ = φ)
  ``no_acm``   ablation: Alignment Confidence Map term off (λ_acm = 0)
  ``no_drc``   ablation: Deep Region Constraint off (λ_drc = 0)
  ``velocity`` stationary-velocity registration, DSS scales the velocity (φ̂ = exp(α v))
  ``3d``       3-D synthetic data (``jrs-jax make-synthetic --3d``), batch 1
  ``smoke``    tiny networks and a few steps (tests)

No official code is recorded (docs/methods.md §23), so there is no ``official`` variant.

Defaults (2-D synthetic, N = 2 labelled): registration = VoxelMorph U-Net (16, 32, 32, 32),
LNCC window 9 (λ_cc = 1) + diffusion (λ_R = 1) + non-saturating adversarial term
(λ_adv = 0.1) + DRC (λ_drc = 1); segmentation = U-Net (16, 32, 32, 32), ACM (λ_acm = 1) + CE
on the DSS-augmented pair (λ_ce = 1); discriminator = full-resolution U-Net (16, 32, 32)
on (image, fixed); DSS α ~ U(0.5, 1.5) on the displacement; reference β = 0.3; Adam 1e-3
for all three networks. Each step updates D, then R, then S.
"""

from jrs_jax.config import parse_flags, shrink_for_smoke, use_3d_data


def get_config(arg=None):
    flags = parse_flags(arg, {"oneshot", "no_dss", "no_acm", "no_drc", "velocity", "3d", "smoke"})
    cfg = {
        "method": "deeprs",
        "seed": 0,
        "data": {
            "dataset": "jrs_synthetic/dataset.json",
            "num_labelled": 2,
            "num_classes": None,
            "batch_size": 4,
        },
        "reg_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 32, 16, 16],
            "output": "displacement",
            "integration_steps": 7,
            "int_downsize": 1,
            "dtype": "float32",
            "remat": False,
        },
        "seg_model": {
            "features": [16, 32, 32, 32],
            "decoder_features": [32, 32, 16, 16],
            "dtype": "float32",
            "remat": False,
        },
        "disc_model": {
            "features": [16, 32, 32],
            "decoder_features": [32, 16],
            "dtype": "float32",
            "remat": False,
        },
        # Deep Structure Sampling: phi_hat = alpha * phi, alpha ~ U(range) per pair
        "dss": {"enabled": True, "range": [0.5, 1.5], "on": "displacement"},
        "loss": {
            "similarity": "local_ncc",
            "similarity_kwargs": {"window": 9, "convention": "voxelmorph"},
            "regulariser": "diffusion",
            "regulariser_kwargs": {},
            "reg_weight": 1.0,  # lambda_R
            "cc_weight": 1.0,  # lambda_cc
            "adv_weight": 0.1,  # lambda_adv
            "drc_weight": 1.0,  # lambda_drc
            "acm_weight": 1.0,  # lambda_acm
            "ce_weight": 1.0,  # lambda_ce
            "beta": 0.3,  # reference x_r = beta x_m + (1 - beta) x_f
            "gan": "nonsaturating",
        },
        "optim": {
            "reg": {"name": "adam", "learning_rate": 1e-3},
            "seg": {"name": "adam", "learning_rate": 1e-3},
            "disc": {"name": "adam", "learning_rate": 1e-3},
        },
        "train": {"steps": 1000, "log_every": 20, "eval_every": 250, "ckpt_every": 250, "keep": 2},
        # mode: None = the method's (pairs | atlas | within_subject | cross_modal); labels: Dice
        # over these labels only (None: all foreground labels); see jrs_jax.evaluation
        "eval": {"max_pairs": 24, "batch_size": 8, "mode": None, "labels": None},
    }
    if "oneshot" in flags:
        cfg["data"]["num_labelled"] = 1
    if "no_dss" in flags:
        cfg["dss"]["enabled"] = False
    if "no_acm" in flags:
        cfg["loss"]["acm_weight"] = 0.0
    if "no_drc" in flags:
        cfg["loss"]["drc_weight"] = 0.0
    if "velocity" in flags:
        cfg["reg_model"]["output"] = "velocity"
        cfg["dss"]["on"] = "velocity"
    if "3d" in flags:
        use_3d_data(cfg)
    if "smoke" in flags:
        shrink_for_smoke(cfg, models=("reg_model", "seg_model", "disc_model"), steps=4, every=2)
    return cfg

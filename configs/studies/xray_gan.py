"""X-ray GAN JRS (Mahapatra et al., MLMI 2018): does the cycle-consistent GAN recover the
deformation better than VoxelMorph trained with the same image similarity?

    jrs-jax reproduce xray_gan           # 4 rows x 3 seeds, 64 x 64 known transforms
    jrs-jax reproduce xray_gan --quick   # pipeline check: tiny nets, 32 x 32, a few steps

Claim (docs/methods.md §33): the cycle-consistent adversarial model recovers the deformation
better (lower endpoint error against the known transform) than VoxelMorph trained with
NMI + SSIM, and its Otsu feature mask segments the registered image.

Rows (``configs/xray_gan.py``; everything else shared):

* ``voxelmorph``: the baseline, ``G`` alone, ``−NMI + (1 − SSIM) + λ diffusion`` (no mask
  input, no adversary, no Dice, no agreement);
* ``vxm_agreement``: the baseline + the deformation agreement ``−log(1 − MSE_norm)`` against
  the known transform: isolates the supervision by the ground truth;
* ``gan_no_cycle``: ``G`` + ``D_Y``, all of ``L_G`` (content, LSGAN, −log Dice, agreement);
* ``gan_cycle``: the full model, ``G``, ``F``, ``D_X``, ``D_Y`` and the cycle term.

Columns: endpoint error against the known transform (``val/epe``, voxels), mask Dice (the
hard Otsu mask of the registered image against the reference foreground: ``val/seg_dice``;
for the rows without the Dice loss it shows what the features segment untrained), the
registration Dice of the warped floating labels, folding %.

Variants (``xray_gan:VARIANT,...``):
  ``quick``          tiny networks, 32 x 32, a few steps, one seed (a pipeline check)
  ``no_mask_input``  diagnostic: the full model with a zero mask channel for ``G`` (the
                     reference mask is then only the Dice target), against the baseline:
                     what the Otsu feature mask segments without being handed the answer
"""

from jrs_jax.config import parse_flags


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "no_mask_input"})
    quick = "quick" in flags
    steps = 6 if quick else 500
    settings = {"shape": [64, 64], "num_subjects": 20, "num_heldout": 6}
    if quick:
        settings.update(shape=[32, 32], num_subjects=6, num_heldout=2)
    common = {
        "train.steps": steps,
        "train.log_every": 50,
        "train.eval_every": steps,
        "train.ckpt_every": steps,
        "eval.max_pairs": 24,
    }
    if quick:
        common.update(
            {
                "model.features": [4, 8, 8],
                "model.decoder_features": [8, 8, 4],
                "disc.features": [4, 8],
            }
        )
    rows = [
        {
            "name": "voxelmorph",
            "label": "VoxelMorph (NMI + SSIM)",
            "config": "xray_gan.py:voxelmorph",
            "set": common,
        },
        {
            "name": "vxm_agreement",
            "label": "VoxelMorph + deformation agreement",
            "config": "xray_gan.py:vxm_agreement",
            "set": common,
        },
        {
            "name": "gan_no_cycle",
            "label": "GAN, no cycle (G, D_Y)",
            "config": "xray_gan.py:no_cycle",
            "set": common,
        },
        {
            "name": "gan_cycle",
            "label": "cycle GAN (G, F, D_X, D_Y)",
            "config": "xray_gan.py",
            "set": common,
        },
    ]
    name = "xray_gan"
    if "no_mask_input" in flags:
        name += "_no_mask_input"
        rows = [
            rows[0],
            {
                "name": "gan_cycle_no_mask",
                "label": "cycle GAN, no mask input",
                "config": "xray_gan.py",
                "set": {**common, "model.mask_input": False},
            },
        ]
    gaps = [
        {"row": row["name"], "baseline": "voxelmorph", "metric": metric}
        for row in rows[1:]
        for metric in ("val/epe", "val/seg_dice", "val/reg_dice")
    ]
    if "no_mask_input" not in flags:  # the claim itself: the cycle, and the adversary
        gaps += [
            {"row": "gan_cycle", "baseline": base, "metric": metric}
            for base in ("gan_no_cycle", "vxm_agreement")
            for metric in ("val/epe", "val/reg_dice", "val/folding_percent")
        ]
    return {
        "name": name,
        "method": "xray_gan",
        "paper": "Mahapatra, Ge, Sedai, Chakravorty, Joint registration and segmentation of "
        "Xray images using generative adversarial networks, MLMI 2018",
        "claim": "the cycle-consistent adversarial model recovers the deformation better",
        "data": {
            "scenario": "known_transform",
            "seed": 0,
            "settings": settings,
            "why": ("pipeline check (32x32, 6 subjects); the full study: " if quick else "")
            + "64x64 known-transform pairs (the paper's protocol: a reference image and the same "
            "image moved by a random rigid + elastic transform, the transform kept as ground "
            "truth), one foreground mask per image as the lung fields of chest X-rays; 20 "
            "subjects = 14 training pairs and 6 held-out validation pairs (fixed = reference, "
            "moving = floating). 64x64 keeps a 4-row x 3-seed study within 20 minutes on 2 "
            "CPU cores while the elastic part (1.5 voxels every 16) is still resolved",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "known-transform pairs", "rows": rows}],
        "columns": {
            "val/epe": "endpoint error (voxels)",
            "val/seg_dice": "mask Dice",
            "val/reg_dice": "registration Dice",
            "val/folding_percent": "folding %",
        },
        "gaps": gaps,
        "budget": f"every row {steps} generator updates (G, and F with the cycle: one joint "
        "update per step) on batches of 4 training pairs; the adversarial rows also make one "
        f"discriminator update per step ({steps} each for D_Y and D_X): extra networks with "
        "their own optimisers, so the GAN rows cost more wall time per generator update",
        "field_figure": True,
    }

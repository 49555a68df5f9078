"""Adversarial JRS (Elmahdy et al., MICCAI 2019): does the WGAN critic help the registration?

    jrs-jax reproduce adversarial_jrs           # 3 rows x 3 seeds, 64 x 64, 400 updates each
    jrs-jax reproduce adversarial_jrs --quick   # pipeline check: tiny nets and data, 10 steps

Claim (proposed, docs/methods.md §32): adding the critic, with labels in its input, improves
the registration Dice over the same generator trained with ``L_sim + λ1 L_smooth`` alone, at
equal smoothness.

Rows: the generator alone (λ2 = 0: no critic is built); the critic on the images only,
``(I_f, I_m∘φ)``; the critic on the paper's triple ``(I_f, I_m∘φ, S_m∘φ)``. Everything else
is shared (``configs/adversarial_jrs.py``: global NCC, bending λ1 = 1, λ2 = 0.1, WGAN-GP
λ_GP = 10, real triples ``(I_f, Θ(I_f), S_f∘Θ)`` with Θ of std 1 voxel every 8 voxels).
Columns: registration Dice, folding % and SDlogJ of the held-out pairs (smoothness).

Sizing for 12 minutes on 2 CPU cores: 400 generator updates per run, a PatchGAN critic
16-32-64 and 2 critic updates per generator update (WGAN-GP's 5 would need 2.5x the
critic time). Equal budgets: every row makes the same 400 generator updates; the critic is
an extra network with its own 800 updates.

Variants (``adversarial_jrs:VARIANT,...``):
  ``quick``  tiny networks, 32 x 32 data, 10 steps, one seed (a pipeline check)
  ``paper``  the paper's real triple ``(I_f, Θ(I_f), S_f)`` (crisp, unwarped ``S_f``)
  ``strong`` diagnostic: a stronger critic (WGAN-GP's 5 critic updates per generator
             update, critic learning rate 4e-4): rows no critic and critic on images +
             labels only (3 seeds, 6 min of training)
"""

from jrs_jax.config import parse_flags


def get_study(arg=None):
    flags = parse_flags(arg, {"quick", "paper", "strong"})
    quick = "quick" in flags
    steps, n_critic = (10, 2) if quick else (400, 2)
    settings = {
        "shape": [64, 64],
        "num_subjects": 20,
        "num_heldout": 4,
        "num_val_pairs": 12,
        # the 3 | 4 boundary hidden from the image: only labels (and shape) can place it
        "label_means": [0.05, 0.35, 0.8, 0.6, 0.6],
    }
    if quick:
        settings.update(shape=[32, 32], num_subjects=10, num_heldout=3, num_val_pairs=4)
    common = {
        "train.steps": steps,
        "train.log_every": 50,
        "train.eval_every": steps,
        "train.ckpt_every": steps,
        "critic.n_critic": n_critic,
        "critic.features": [4, 8] if quick else [16, 32, 64],
    }
    if quick:
        common.update({"model.features": [8, 16, 16], "model.decoder_features": [16, 8, 8]})
    variant = ",paper" if "paper" in flags else ""
    rows = [
        {
            "name": "no_critic",
            "label": "no critic (λ2 = 0)",
            "config": "adversarial_jrs.py:nocritic",
            "set": common,
        },
        {
            "name": "critic_images",
            "label": "critic on images",
            "config": "adversarial_jrs.py:images" + variant,
            "set": common,
        },
        {
            "name": "critic_labels",
            "label": "critic on images + labels",
            "config": "adversarial_jrs.py" + (":paper" if variant else ""),
            "set": common,
        },
    ]
    if "strong" in flags:
        n_critic = 5
        strong = {"critic.n_critic": n_critic, "optim.critic.learning_rate": 4e-4}
        rows = [rows[0], {**rows[2], "set": {**common, **strong}}]
    gaps = [
        {"row": row, "baseline": "no_critic", "metric": metric}
        for row in [r["name"] for r in rows[1:]]
        for metric in ("val/reg_dice", "val/sdlogj", "val/folding_percent")
    ]
    return {
        "name": "adversarial_jrs",
        "method": "adversarial_jrs",
        "paper": "Elmahdy et al., Adversarial optimization for joint registration and "
        "segmentation in prostate CT radiotherapy, MICCAI 2019",
        "claim": "the critic (with labels in its input) improves registration Dice at equal "
        "smoothness",
        "data": {
            "scenario": "anatomy",
            "seed": 0,
            "settings": settings,
            "why": ("pipeline check (32x32, 10 subjects); the full study: " if quick else "")
            + "64x64 synthetic anatomy, 20 subjects (16 training, all labelled; 4 held "
            "out, 12 validation pairs). Dice is already in the generator loss, so the critic "
            "can only add what Dice on training pairs and image similarity do not give: the "
            "3 | 4 boundary is hidden from the image (equal means 0.6 / 0.6), so a critic that "
            "sees label maps next to I_f can learn where that boundary sits relative to the "
            "visible anatomy, a prior that transfers to unlabelled test pairs",
        },
        "seeds": [0] if quick else [0, 1, 2],
        "groups": [{"name": "all training subjects labelled", "rows": rows}],
        "columns": {
            "val/reg_dice": "registration Dice",
            "val/folding_percent": "folding %",
            "val/sdlogj": "SDlogJ",
        },
        "gaps": gaps,
        "budget": f"every row {steps} generator (registration-net) updates on batches of 4 "
        f"labelled pairs; the critic rows also make {n_critic} critic updates per generator "
        f"update ({n_critic * steps}, each on its own batch): the critic is an extra network "
        "with its own updates and optimiser",
    }

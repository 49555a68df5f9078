"""The ``speech`` scenario: dynamic 2-D MR of the vocal tract, where the tongue touches the
soft palate in some frames and not in others.

Segmentation-informed registration of dynamic vocal-tract MR (Ruthven et al. 2022) segments
two frames of a speaker, keeps the largest connected component per class
(:func:`jrs_jax.postprocess.largest_component`) and registers the frames given the images and
the segmentations; its task metric is whether the contact between two structures (the tongue
touching the soft palate, a velar closure as in /k/ or /g/) survives warping
(:func:`jrs_jax.metrics.contact_count`). This scenario has that contact, recorded per frame.

Anatomy (mid-sagittal, 2-D only; array axis 0 runs from the top of the head down, axis 1
from the face to the back of the head), 6 classes (:data:`SPEECH_LABELS`):

- 0 background (outside the head), 1 head (other soft tissue), 2 soft palate (velum),
  3 jaw, 4 tongue, 5 vocal tract (air: the oral cavity under the palate and the pharynx
  behind the tongue, running down out of the head).

Each class is a level set (rotated ellipses, a rounded box) of normalised coordinates
``q = (x + u_s(x) - c) / (h s) + o`` (``c`` the grid centre, ``h`` its half-size): speaker
``s`` has its own size ``s`` (uniform in ``1 +- size``), offset ``o``, smooth shape field
``u_s = random_velocity(shape_amplitude, control_spacing)`` (voxels, scaled with the grid:
``shape_amplitude`` is given for 64 voxels) and jittered structure sizes, positions and
velum angle. The classes are painted in the order head, oral cavity, tongue, pharynx, jaw,
velum (a later one wins), so the pharynx stays open and the velum keeps its shape when the
tongue presses against it; slivers left between the level sets (components under 20 % of
their class's largest and 1 % of the grid) take the class around them. Every tissue is one
connected piece.

Articulation (``num_frames`` frames per speaker, ``Subject.time``): the tongue dorsum rises
and falls by a smooth deformation localised to it: the tongue's level set is pulled back
through ``q - L_t w(q) d``, a Gaussian bump ``w`` (width 0.25) centred on the dorsum under
the velum, ``d`` the unit vector from there to the velum tip and ``L_t`` the frame's lift;
the jaw rises by ``jaw_motion * L_t`` with it. A smooth latent articulator trajectory
(two sinusoids of random frequency and phase over the frames) orders the frames; the
``~contact_fraction`` highest (at least 2, at most ``F - 2``) are in contact, the others
separated, and each frame's lift is set on the rasterised labels, monotone in the latent:

- in contact: the lift ``L_c`` of first contact plus a penetration in ``penetration``
  voxels (up to a 1.5-voxel press of the tongue against the velum: the contact is a short
  edge, a few voxels long);
- separated: the highest lift whose gap is at least the frame's target in ``gap``, where the
  *gap* is the Euclidean distance between the nearest tongue and velum voxel centres minus
  1 (the voxels between them; two face-adjacent voxels: 0). Every separated frame has a gap
  of at least ``gap[0]`` voxels (checked on the labels; the lift is lowered until it does).

Images (MR-like): per-class means (air dark, tissues mid-grey with different means: head
0.45, soft palate 0.6, jaw 0.3, tongue 0.75), jittered per speaker (a gain and per-class
jitter), partial-volume blur, a smooth multiplicative bias per speaker and Gaussian noise per
frame (the rendering of :func:`~jrs_jax.data.make_subjects`).

Files (:func:`write_speech_dataset`): the Learn2Reg layout of
:func:`~jrs_jax.data.write_learn2reg_dataset`, one scan per frame, ``spk_NNNN_fTT``
(``Subject.subject = "spk_NNNN"``, ``time = TT``), speakers as the population units (the
last ``num_heldout`` held out, the first ``num_labelled`` listed with labels; every frame's
labels on disk); ``template/`` holds the base anatomy at rest. The ``jrs_jax`` block records
per scan the contact count of tongue (4) and soft palate (2), ``in_contact`` and the gap.
``registration_val`` holds within-speaker ordered frame pairs of held-out speakers covering
contact -> separated, separated -> contact, contact -> contact (and separated -> separated).
No ground-truth fields: the frames are rasterised level sets, not warps of each other.

In contact frames the tongue closes the passage under the velum, so the vocal-tract air may
come in two pieces (oral cavity and pharynx), as in a real velar closure; keep class 5 out of
:func:`~jrs_jax.postprocess.largest_component` (its ``classes``) for such frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from ..metrics import contact_count
from ..spatial.random import random_velocity
from .sampling import as_rng
from .sliding import _render_jit
from .synthetic import _as_key, _check_means, _layout, _layout_info, _write_population

__all__ = ["SPEECH_LABELS", "make_speech_subjects", "write_speech_dataset"]

#: Class names of the ``speech`` scenario, ``{class: name}``.
SPEECH_LABELS = {
    0: "background",
    1: "head",
    2: "soft_palate",
    3: "jaw",
    4: "tongue",
    5: "vocal_tract",
}
TONGUE, PALATE = 4, 2
NUM_CLASSES = len(SPEECH_LABELS)
BASE_MEANS = (0.03, 0.45, 0.6, 0.3, 0.75, 0.05)

# Base anatomy in normalised coordinates (y down, x towards the back; about [-1, 1]).
_HEAD = ((0.0, 0.0), (0.9, 0.88))
_ORAL = ((-0.15, -0.15), (0.17, 0.45))
_PHARYNX = ((0.1, 0.32), (0.55, 0.1))  # rounded box (superellipse): centre, half sizes
_JUNCTION = ((0.0, 0.2), (0.2, 0.12))  # the passage under the velum, behind the dorsum
_TONGUE = ((0.2, -0.12), (0.3, 0.38))
_VELUM = ((-0.21, 0.11), (0.15, 0.055), np.deg2rad(60.0))  # centre, (length, thickness)
_JAW = ((0.55, -0.3), (0.32, 0.09), np.deg2rad(10.0))  # mandible: length, thickness
_BUMP_WIDTH = 0.25
_LIFT_RANGE = (-0.3, 0.4)  # normalised units


def _ellipse(q: np.ndarray, centre, radii, angle: float | None = None) -> np.ndarray:
    """Level set ``> 0`` inside an ellipse of ``q`` ``[*S, 2]`` (y, x): axis-aligned with
    radii ``(ry, rx)``, or, given ``angle`` (radians, from +x towards +y), with ``radii[0]``
    along that direction and ``radii[1]`` across it."""
    d = q - np.asarray(centre, np.float32)
    if angle is None:
        return 1.0 - np.sum((d / np.asarray(radii, np.float32)) ** 2, -1)
    e1 = np.asarray([np.sin(angle), np.cos(angle)], np.float32)
    e2 = np.asarray([np.cos(angle), -np.sin(angle)], np.float32)
    return 1.0 - (d @ e1 / radii[0]) ** 2 - (d @ e2 / radii[1]) ** 2


def _box(q: np.ndarray, centre, half) -> np.ndarray:
    """Level set ``> 0`` inside a rounded box (superellipse of order 4) of ``q``."""
    d = (q - np.asarray(centre, np.float32)) / np.asarray(half, np.float32)
    return 1.0 - d[..., 0] ** 4 - d[..., 1] ** 4


def _geometry(rng: np.random.Generator | None) -> dict:
    """One speaker's structure parameters: the base anatomy jittered by ``rng`` (``None``:
    the base anatomy itself)."""

    def j(scale):
        return 0.0 if rng is None else float(rng.uniform(-scale, scale))

    def c(centre, s):
        return (centre[0] + j(s), centre[1] + j(s))

    def r(radii, s):
        return tuple(v * (1.0 + j(s)) for v in radii)

    velum_len, velum_thick = _VELUM[1]
    geo = {
        "head": (_HEAD[0], r(_HEAD[1], 0.03)),
        "oral": (c(_ORAL[0], 0.02), r(_ORAL[1], 0.08)),
        "pharynx": ((_PHARYNX[0][0], _PHARYNX[0][1] + j(0.02)), r(_PHARYNX[1], 0.15)),
        "junction": (c(_JUNCTION[0], 0.02), r(_JUNCTION[1], 0.08)),
        "tongue": (c(_TONGUE[0], 0.02), r(_TONGUE[1], 0.08)),
        "velum": (
            c(_VELUM[0], 0.015),
            (velum_len * (1 + j(0.12)), velum_thick * (1 + j(0.15))),
            _VELUM[2] + np.deg2rad(j(8.0)),
        ),
        "jaw": (c(_JAW[0], 0.03), r(_JAW[1], 0.08), _JAW[2]),
    }
    # the tongue rises towards the velum tip, by a bump on the dorsum below it
    (vy, vx), (vl, _), va = geo["velum"]
    tip = np.asarray([vy + vl * np.sin(va), vx + vl * np.cos(va)])
    (ty, tx), (ry, rx) = geo["tongue"]
    dorsum = np.asarray([ty - ry * np.sqrt(max(1 - ((tip[1] - tx) / rx) ** 2, 0.05)), tip[1]])
    d = tip - dorsum
    geo["bump"] = dorsum
    geo["direction"] = d / max(np.linalg.norm(d), 1e-6)
    return geo


class _Speaker:
    """The label maps of one speaker as a function of the lift (host side, numpy)."""

    def __init__(self, q: np.ndarray, geo: dict, jaw_motion: float):
        self.q, self.geo, self.jaw_motion = q, geo, float(jaw_motion)
        self.head = _ellipse(q, *geo["head"]) > 0
        oral = np.maximum(_ellipse(q, *geo["oral"]), _ellipse(q, *geo["junction"]))
        self.oral = (oral > 0) & self.head
        self.pharynx = (_box(q, *geo["pharynx"]) > 0) & self.head
        self.velum = (_ellipse(q, *geo["velum"]) > 0) & self.head
        w = np.exp(-np.sum((q - geo["bump"]) ** 2, -1) / (2 * _BUMP_WIDTH**2))
        self.push = w[..., None] * geo["direction"].astype(np.float32)  # [*S, 2]

    def labels(self, lift: float) -> np.ndarray:
        """int32 ``[*S]`` at lift ``lift`` (normalised units)."""
        tongue = (_ellipse(self.q - lift * self.push, *self.geo["tongue"]) > 0) & self.head
        (jy, jx), radii, angle = self.geo["jaw"]
        jaw = (_ellipse(self.q, (jy - self.jaw_motion * lift, jx), radii, angle) > 0) & self.head
        lab = np.zeros(self.q.shape[:-1], np.int32)
        lab[self.head] = 1
        lab[self.oral] = 5
        lab[tongue] = TONGUE
        lab[self.pharynx] = 5
        lab[jaw] = 3
        lab[self.velum] = PALATE
        return _tidy(lab)


def _tidy(lab: np.ndarray) -> np.ndarray:
    """``lab`` with every fragment of a class (a connected component under 20 % of the
    class's largest and 1 % of the grid) given the most frequent foreground class around it
    other than the soft palate (which keeps its shape): the slivers of tissue or air left
    between overlapping level sets. Large pieces stay (the oral cavity cut off from the
    pharynx by a velar closure)."""
    for k in range(1, NUM_CLASSES):
        comp, n = ndimage.label(lab == k)
        if n < 2:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        for j in np.flatnonzero((sizes < 0.2 * sizes.max()) & (sizes < 0.01 * lab.size)):
            piece = comp == j + 1
            ring = ndimage.binary_dilation(piece) & ~piece
            votes = np.bincount(lab[ring], minlength=NUM_CLASSES)
            votes[0] = 0
            if votes.sum() > votes[PALATE]:  # the soft palate keeps its shape
                votes[PALATE] = 0
            lab[piece] = votes.argmax()
    return lab


def _gap(lab: np.ndarray) -> float:
    """Distance between the nearest tongue and soft-palate voxel centres minus 1 (voxels
    between them; face-adjacent: 0); ``inf`` if either is absent."""
    if not (lab == PALATE).any() or not (lab == TONGUE).any():
        return float("inf")
    dist = ndimage.distance_transform_edt(lab != PALATE)
    return float(dist[lab == TONGUE].min()) - 1.0


def _bisect(pred, lo: float, hi: float, iters: int = 14) -> float:
    """The boundary of a predicate false at ``lo`` and true at ``hi`` (either order)."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _lifts(sp: _Speaker, in_contact, targets, voxel: float, min_gap: float):
    """Per frame the lift (voxels above the lift of first contact) and the labels
    ``[F, *S]``: contact frames at the lift of first contact plus ``targets`` voxels,
    separated frames at the highest lift with a gap of at least ``targets`` voxels (never
    under ``min_gap``). ``voxel``: one voxel in normalised units."""
    lo, hi = _LIFT_RANGE
    touches = lambda lift: contact_count(sp.labels(lift), TONGUE, PALATE) > 0
    if touches(lo) or not touches(hi):
        raise ValueError(
            "could not place the tongue of a speaker both apart from and against the soft "
            "palate; use a larger shape or smaller size / shape_amplitude"
        )
    first = _bisect(touches, lo, hi)
    lifts, labels = [], []
    for contact, target in zip(in_contact, targets, strict=True):
        if contact:
            lift = first + target * voxel
            while not touches(lift):  # the labels are rasterised: not quite monotone
                lift += 0.25 * voxel
                if lift > 2 * hi:
                    raise ValueError("could not press the tongue against the soft palate")
        else:
            apart = lambda lift, t=target: _gap(sp.labels(lift)) >= t
            lift = lo if not apart(lo) else _bisect(apart, first, lo)
            while _gap(sp.labels(lift)) < min_gap:
                lift -= 0.25 * voxel
                if lift < 2 * lo:
                    raise ValueError(
                        f"could not open a gap of {min_gap} voxels between tongue and soft "
                        "palate; use a larger shape or a smaller gap"
                    )
        lifts.append(lift)
        labels.append(sp.labels(lift))
    return (np.asarray(lifts) - first) / voxel, np.stack(labels)


def _states(rng: np.random.Generator, num_frames: int, contact_fraction: float):
    """(in_contact bool ``[F]``, rank in ``[0, 1]`` within its state ``[F]``, latent
    ``[F]``): the frames of highest latent articulator position are in contact."""
    t = np.arange(num_frames) / num_frames
    f1, f2 = rng.uniform(0.8, 1.6), rng.uniform(1.6, 2.6)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    z = np.sin(2 * np.pi * f1 * t + p1) + 0.4 * np.sin(2 * np.pi * f2 * t + p2)
    frac = contact_fraction + rng.uniform(-0.1, 0.1)
    n_c = int(np.clip(round(frac * num_frames), 2, num_frames - 2))
    order = np.argsort(-z, kind="stable")
    contact = np.zeros(num_frames, bool)
    contact[order[:n_c]] = True
    thr = 0.5 * (z[order[n_c - 1]] + z[order[n_c]])
    rank = np.where(
        contact,
        (z - thr) / max(z.max() - thr, 1e-6),  # 0 at the threshold, 1 highest
        (thr - z) / max(thr - z.min(), 1e-6),  # 0 at the threshold, 1 lowest
    )
    return contact, np.clip(rank, 0.0, 1.0), z


@partial(jax.jit, static_argnames=("shape", "n", "control_spacing"))
def _fields(key, amplitude, bias, *, shape, n, control_spacing):
    """Speaker shape fields ``[N, *S, 2]`` and log bias fields ``[N, *S, 1]``."""
    k_shape, k_bias = jax.random.split(key)
    u = random_velocity(
        k_shape, shape, batch_size=n, amplitude=amplitude, control_spacing=control_spacing
    )
    b = random_velocity(
        k_bias, shape, batch_size=n, amplitude=bias, control_spacing=max(4, max(shape) // 2)
    )[..., :1]
    return u, b


def _coords(shape, u: np.ndarray | None, scale: float, offset) -> np.ndarray:
    """Normalised coordinates ``q`` float32 ``[*S, 2]`` (module docstring)."""
    axes = [np.arange(k, dtype=np.float32) for k in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    half = (np.asarray(shape, np.float32) - 1) / 2
    x = grid if u is None else grid + u
    return ((x - half) / (half * scale) + np.asarray(offset, np.float32)).astype(np.float32)


def _check_shape2d(shape) -> tuple[int, int]:
    shape = tuple(int(k) for k in np.atleast_1d(shape))
    if len(shape) != 2:
        raise ValueError(
            f"shape must be 2-D (H, W): the speech scenario is mid-sagittal 2-D MR; got {shape}"
        )
    if min(shape) < 32:
        raise ValueError(f"shape must be at least 32 x 32 for the speech scenario; got {shape}")
    return shape


def make_speech_subjects(
    key: jax.Array,
    shape: Sequence[int] = (64, 64),
    *,
    num_subjects: int,
    num_frames: int = 12,
    contact_fraction: float = 0.5,
    gap: tuple[float, float] = (2.0, 5.0),
    penetration: tuple[float, float] = (0.3, 1.5),
    size: float = 0.1,
    shape_amplitude: float = 2.0,
    control_spacing: int | None = None,
    jaw_motion: float = 0.15,
    intensity_jitter: float = 0.04,
    gain: float = 0.15,
    bias: float = 0.1,
    noise: float = 0.03,
    blur_sigma: float = 0.6,
    label_means: Sequence[float] | None = None,
) -> dict:
    """Draw speakers and their frames (the model: module docstring).

    Args:
      key: PRNG key or integer seed (the results are a deterministic function of the key and
        the arguments).
      shape: ``(H, W)``, 2-D only (each axis >= 32); other shapes are a ``ValueError``.
      num_subjects: ``N`` speakers.
      num_frames: ``F`` frames per speaker (>= 4).
      contact_fraction: about this fraction of each speaker's frames (jittered by +-0.1,
        rounded, between 2 and ``F - 2``) has the tongue touching the soft palate.
      gap: ``(low, high)`` voxels: the targets of the gap of the separated frames (voxels
        between tongue and soft palate), spread by the latent trajectory; every separated
        frame has at least ``low``.
      penetration: ``(low, high)`` voxels the tongue rises past first contact in contact
        frames (how hard it presses; the contact edge grows with it).
      size: speaker sizes are uniform in ``1 +- size``.
      shape_amplitude: control-point standard deviation of the speaker shape field, voxels
        of a 64-voxel grid (scaled with ``min(shape) / 64``).
      control_spacing: its control-point spacing (default ``min(shape) // 4``).
      jaw_motion: the jaw rises by this fraction of the tongue lift.
      intensity_jitter, gain: per speaker, per-class mean jitter (standard deviation) and
        a global gain uniform in ``1 +- gain``.
      bias: standard deviation of the speaker's smooth log bias field.
      noise: standard deviation of the Gaussian noise of each frame.
      blur_sigma: partial-volume blur, voxels.
      label_means: mean intensity of classes 0..5 (6 values; default 0.03, 0.45, 0.6, 0.3,
        0.75, 0.05).

    Returns:
      numpy dict: ``images`` float32 ``[N, F, H, W, 1]``, ``labels`` int32 ``[N, F, H, W]``,
      ``in_contact`` bool ``[N, F]``, ``contact`` int64 ``[N, F]`` (tongue / soft-palate
      contact count, :func:`~jrs_jax.metrics.contact_count`), ``gap`` float32 ``[N, F]``
      (voxels between them; 0 in contact), ``lift`` float32 ``[N, F]`` (tongue lift,
      voxels, relative to the speaker's first contact), ``latent`` float32 ``[N, F]``
      (articulator trajectory), ``scale`` float32 ``[N]`` and ``template`` int32 ``[H, W]``
      (the base anatomy at rest).

    Example:
      >>> s = make_speech_subjects(jax.random.PRNGKey(0), (64, 64), num_subjects=2)
      >>> s["labels"].shape, s["in_contact"].shape
      ((2, 12, 64, 64), (2, 12))
    """
    shape = _check_shape2d(shape)
    n, f = int(num_subjects), int(num_frames)
    if n < 1:
        raise ValueError(f"num_subjects must be >= 1; got {num_subjects}")
    if f < 4:
        raise ValueError(f"num_frames must be >= 4 (contact and separated frames); got {f}")
    if not 0.0 < float(contact_fraction) < 1.0:
        raise ValueError(f"contact_fraction must be in (0, 1); got {contact_fraction}")
    g_lo, g_hi = (float(v) for v in gap)
    if not 1.0 <= g_lo <= g_hi:
        raise ValueError(f"gap must be (low, high) voxels with 1 <= low <= high; got {gap}")
    p_lo, p_hi = (float(v) for v in penetration)
    if not 0.0 <= p_lo <= p_hi <= 3.0:
        raise ValueError(
            f"penetration must be (low, high) with 0 <= low <= high <= 3; got {penetration}"
        )
    if not 0.0 <= float(size) < 0.5:
        raise ValueError(f"size must be in [0, 0.5); got {size}")
    means = _check_means(BASE_MEANS if label_means is None else label_means, NUM_CLASSES)
    key, _ = _as_key(key)
    k_fields, k_rng, k_render = jax.random.split(key, 3)
    rng = as_rng(k_rng)
    spacing = int(control_spacing) if control_spacing is not None else max(4, min(shape) // 4)
    u, log_bias = _fields(
        k_fields,
        jnp.float32(shape_amplitude * min(shape) / 64.0),
        jnp.float32(bias),
        shape=shape,
        n=n,
        control_spacing=spacing,
    )
    u, log_bias = np.asarray(u), np.asarray(log_bias)
    out = {k: [] for k in ("labels", "in_contact", "lift", "latent", "scale")}
    speaker_means = []
    for i in range(n):
        scale = 1.0 + rng.uniform(-size, size)
        offset = rng.uniform(-0.03, 0.03, 2)
        sp = _Speaker(_coords(shape, u[i], scale, offset), _geometry(rng), jaw_motion)
        contact, rank, z = _states(rng, f, contact_fraction)
        targets = np.where(contact, p_lo + (p_hi - p_lo) * rank, g_lo + (g_hi - g_lo) * rank)
        voxel = 2.0 / ((shape[0] - 1) * scale)  # one voxel along axis 0, normalised units
        lifts, labels = _lifts(sp, contact, targets, voxel, g_lo)
        out["labels"].append(labels)
        out["in_contact"].append(contact)
        out["lift"].append(lifts)
        out["latent"].append(z)
        out["scale"].append(scale)
        m = means * (1.0 + rng.uniform(-gain, gain)) + intensity_jitter * rng.normal(
            size=NUM_CLASSES
        )
        speaker_means.append(np.clip(m, 0.0, 1.0).astype(np.float32))
    labels = np.stack(out["labels"]).astype(np.int32)  # [N, F, H, W]
    images = []
    for i in range(n):
        keys = tuple(jax.random.split(jax.random.fold_in(k_render, i), 3))
        img = _render_jit(
            keys,
            jnp.asarray(labels[i]),
            jnp.asarray(speaker_means[i]),
            jnp.float32(0.0),
            jnp.float32(0.0),
            jnp.float32(noise),
            num_classes=NUM_CLASSES,
            bias_spacing=max(4, max(shape) // 2),
            blur_sigma=float(blur_sigma),
        )
        images.append(np.asarray(img) * np.exp(log_bias[i])[None])
    contact = np.stack([contact_count(labels[i], TONGUE, PALATE, batched=True) for i in range(n)])
    gaps = np.asarray([[_gap(lab) for lab in labels[i]] for i in range(n)], np.float32)
    base = _Speaker(_coords(shape, None, 1.0, (0.0, 0.0)), _geometry(None), jaw_motion)
    return {
        "images": np.stack(images).astype(np.float32),
        "labels": labels,
        "in_contact": np.stack(out["in_contact"]),
        "contact": contact.astype(np.int64),
        "gap": np.where(contact > 0, 0.0, gaps).astype(np.float32),
        "lift": np.stack(out["lift"]).astype(np.float32),
        "latent": np.stack(out["latent"]).astype(np.float32),
        "scale": np.asarray(out["scale"], np.float32),
        "template": base.labels(0.0),
    }


_PAIR_KINDS = ((True, False), (False, True), (True, True), (False, False))


def _state(contact: bool) -> str:
    return "contact" if contact else "separated"


def _speech_pairs(rng: np.random.Generator, in_contact: np.ndarray, quotas) -> list:
    """Per held-out speaker ``k`` (rows of ``in_contact`` ``[H, F]``) ``quotas[k]`` distinct
    ordered frame pairs ``(k, fixed frame, moving frame)``: first one of each contact kind
    (contact -> separated, separated -> contact, contact -> contact, separated ->
    separated), then random other pairs."""
    out = []
    for k, (states, quota) in enumerate(zip(in_contact, quotas, strict=True)):
        f = len(states)
        pool = [(a, b) for a in range(f) for b in range(f) if a != b]
        chosen = []
        for kind in _PAIR_KINDS:
            cands = [p for p in pool if (states[p[0]], states[p[1]]) == kind and p not in chosen]
            if len(chosen) < quota and cands:
                chosen.append(cands[int(rng.integers(len(cands)))])
        rest = [p for p in pool if p not in chosen]
        order = rng.permutation(len(rest))[: quota - len(chosen)]
        chosen += [rest[j] for j in order]
        out += [(k, a, b) for a, b in chosen]
    return out


def _check_num_labels(num_labels) -> None:
    if num_labels is not None and int(num_labels) not in (4, 5):
        raise ValueError(
            f"num_labels must be 5 for the speech scenario (5 foreground classes: head, soft "
            f"palate, jaw, tongue, vocal tract), or None / 4 (the default of "
            f"`jrs-jax make-synthetic --labels`, taken to mean the same); got {num_labels}"
        )


def write_speech_dataset(
    root: str | os.PathLike,
    *,
    key,
    shape: Sequence[int] = (64, 64),
    num_subjects: int = 20,
    num_labelled: int | None = None,
    num_heldout: int | None = None,
    num_val_pairs: int | None = None,
    num_labels: int | None = None,
    spacing: float | Sequence[float] = 1.0,
    num_frames: int = 12,
    name: str = "jrs_jax_speech",
    **speaker_kwargs,
) -> str:
    """Generate speakers' vocal-tract frames and write them in the Learn2Reg layout (the
    ``speech`` scenario, ``jrs-jax make-synthetic --scenario speech``).

    One scan per frame, ``spk_NNNN_fTT`` (``Subject.subject = "spk_NNNN"``, ``time = TT``);
    the split is by speaker as :func:`~jrs_jax.data.write_learn2reg_dataset` splits subjects
    (the last ``num_heldout`` speakers held out, the first ``num_labelled`` training speakers
    listed with labels, every frame's labels in ``labelsTr/``). ``registration_val``:
    within-speaker ordered frame pairs of the held-out speakers, spread evenly over them;
    each held-out speaker's first pairs are one contact -> separated, one separated ->
    contact, one contact -> contact and one separated -> separated pair (in that order, as
    its quota allows), the rest random. Only the frames in a pair are loaded for held-out
    speakers (:func:`~jrs_jax.data.load_learn2reg`). The ``jrs_jax`` block records, under
    ``speech``, the class names, the settings, per scan ``{"count", "in_contact", "gap"}``
    (tongue / soft-palate :func:`~jrs_jax.metrics.contact_count`, contact, voxels between
    them) and per pair its contact states.

    Args:
      root: output folder (created).
      key: PRNG key or integer seed.
      shape: ``(H, W)``: 2-D only (a 3-D shape is a ``ValueError``).
      num_subjects: speakers ``N``.
      num_labelled, num_heldout, spacing: as :func:`~jrs_jax.data.write_learn2reg_dataset`,
        counted in speakers.
      num_val_pairs: validation pairs (default 4 per held-out speaker, one of each contact
        kind). At least 3 per held-out speaker are written (smaller values, such as the
        ``H (H - 1)`` cross-subject pairs the command line asks every scenario for, are
        raised to ``3 H``, so every held-out speaker has the three kinds the task needs); at
        most ``H F (F - 1)``.
      num_labels: the anatomy always has 5 foreground classes (:data:`SPEECH_LABELS`):
        ``None`` or 5; 4, the command line's default ``--labels``, is accepted and means the
        same (it cannot be told apart from an explicit ``--labels 4``); anything else is a
        ``ValueError``.
      num_frames: ``F`` frames per speaker (>= 4).
      name: dataset name.
      **speaker_kwargs: forwarded to :func:`make_speech_subjects` (``contact_fraction``,
        ``gap``, ``penetration``, ``size``, ``noise``, ``label_means``...).

    Returns:
      The path of ``dataset.json``.

    Example:
      >>> p = write_speech_dataset("/tmp/speech", key=0, num_subjects=6)
      >>> ds = load_learn2reg(p); ds.subjects[0].subject, ds.subjects[0].time
      ('spk_0000', 0)
    """
    shape = _check_shape2d(shape)
    _check_num_labels(num_labels)
    f = int(num_frames)
    lay = _layout(shape, num_subjects, num_labelled, num_heldout, None, spacing)
    h = lay.h
    if num_val_pairs is None:
        n_pairs = 4 * h
    else:
        n_pairs = int(num_val_pairs)
        if n_pairs < 0 or n_pairs > h * f * (f - 1):
            raise ValueError(
                f"num_val_pairs must be in [0, {h * f * (f - 1)}] (within-speaker frame pairs "
                f"of {h} held-out speakers with {f} frames); got {num_val_pairs}"
            )
        n_pairs = max(n_pairs, 3 * h)
    key, seed = _as_key(key)
    k_subjects, k_pairs = jax.random.split(key)
    s = make_speech_subjects(k_subjects, shape, num_subjects=lay.n, num_frames=f, **speaker_kwargs)
    quotas = [n_pairs // h + (k < n_pairs % h) for k in range(h)]
    held = _speech_pairs(as_rng(k_pairs), s["in_contact"][lay.n_train :], quotas)
    width = max(2, len(str(f - 1)))
    names = [f"spk_{i:04d}_f{t:0{width}d}" for i in range(lay.n) for t in range(f)]
    pairs = [((lay.n_train + k) * f + a, (lay.n_train + k) * f + b) for k, a, b in held]
    scans = lay._replace(
        n=lay.n * f, h=h * f, n_train=lay.n_train * f, n_lab=lay.n_lab * f, n_pairs=n_pairs
    )
    flat = lambda a: a.reshape(lay.n * f, *a.shape[2:])
    contact, in_contact, gaps = (flat(s[k]) for k in ("contact", "in_contact", "gap"))
    settings = {k: (v if np.isscalar(v) else list(v)) for k, v in speaker_kwargs.items()}
    extra = {
        "generator": "jrs_jax.data.speech",
        "seed": seed,
        **_layout_info(lay, NUM_CLASSES - 1),
        "num_frames": f,
        "num_scans": lay.n * f,
        "num_val_pairs": n_pairs,
        "subject_settings": settings,
        "speech": {
            "label_names": {str(k): v for k, v in SPEECH_LABELS.items()},
            "contact_classes": [TONGUE, PALATE],
            "contact_definition": (
                "count: face-adjacent (4-neighbour) voxel pairs of tongue (4) and soft palate "
                "(2), jrs_jax.metrics.contact_count(labels, 4, 2); in_contact: count > 0; "
                "gap: distance between the nearest tongue and soft-palate voxel centres "
                "minus 1 (voxels between them), 0 in contact"
            ),
            "contact": {
                names[j]: {
                    "count": int(contact[j]),
                    "in_contact": bool(in_contact[j]),
                    "gap": round(float(gaps[j]), 4),
                }
                for j in range(lay.n * f)
            },
            "val_pairs": [
                {
                    "fixed": names[a],
                    "moving": names[b],
                    "states": f"{_state(in_contact[a])}->{_state(in_contact[b])}",
                }
                for a, b in pairs
            ],
        },
        "subject_fields": (
            "not written: the frames are rasterised level sets of the moving anatomy, not "
            "warps of a template"
        ),
    }
    return _write_population(
        root,
        scans,
        template=s["template"],
        images=flat(s["images"]),
        labels=flat(s["labels"]),
        pairs=pairs,
        name=name,
        description="jrs_jax synthetic dynamic vocal-tract MR frames (jrs_jax.data.speech)",
        extra=extra,
        names=names,
        subject_ids=[f"spk_{i:04d}" for i in range(lay.n) for _ in range(f)],
        times=[t for _ in range(lay.n) for t in range(f)],
        label_names=SPEECH_LABELS,
    )

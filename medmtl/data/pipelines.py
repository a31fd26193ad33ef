"""Modality pipelines: the MONAI ``Compose`` that turns a datalist entry into network input.

:func:`modality_transforms` builds one pipeline per (modality, mode, task). It works on dicts with
key ``image`` (a path) and the label keys of the task's kind (:data:`medmtl.tasks.KINDS`):

============== ====================================================================================
task kind      output keys (besides ``image``: float32 ``MetaTensor`` ``(1, *spatial)``)
============== ====================================================================================
segmentation   ``label``: float32 ``MetaTensor`` ``(1, *spatial)`` of integer class values, same grid
classification ``label``: long scalar tensor
multilabel     ``label``: float32 ``(num_classes,)`` multi-hot tensor
detection      ``boxes``: float32 ``(N, 2 * dims)`` ``xyxy`` in the output array coordinates
               (``x`` = array axis 0 = column of the stored image); ``box_labels``: long ``(N,)``
============== ====================================================================================

Axis order: every array and every size here is in MONAI array order. A 2D image is ``(x, y)``:
``x`` (axis 0) is the **column** of the stored image (PNG / DICOM), ``y`` (axis 1) the **row**, so a
``spatial_size`` of a portrait mammogram of 192 rows x 128 columns is ``(128, 192)``, *not* the
``(rows, columns)`` of NumPy / PIL / DICOM ``Rows`` / ``Columns``. 3D CT is ``(x, y, z)`` in RAS.
The 2D fit checks the size against each image and logs a warning (once per pipeline) when it looks
transposed (see :class:`~medmtl.data.transforms.ResizeToFit`).

With ``task=None`` only ``image`` is processed (inference). Train mode adds augmentation and is
reproducible with ``seed``; eval mode is deterministic. In eval mode the CT pipeline keeps the
whole volume (for sliding-window inference) and every spatial step is a MONAI invertible
transform, so predictions map back to the input grid with ``monai.transforms.Invertd``.

Options (``**options``, all modalities unless said otherwise) and defaults:

- ``spatial_size`` (alias ``patch_size``): the task's ``patch_size`` (with ``task=None`` that of
  the first registered task of the modality), in array order (2D: ``(x, y)`` = (columns, rows)).
  CT volumes: training patch; CT patches, CXR, mammography: output size. CXR and mammograms are
  scaled, keeping their aspect ratio, so that they fit *inside* it (scale ``min(size / shape)``)
  and then padded: nothing is cropped whatever their aspect.
- ``seed``: ``None``. When given, ``Compose.set_random_state(seed)``.
- ``aug_prob``: ``0.5``. Probability of each random augmentation (train mode).
- ``check_modality``: ``True``. A DICOM ``Modality`` tag naming another modality raises
  :class:`~medmtl.errors.ImageLoadError` (``OT`` or no tag is accepted).
- ``input`` (CT): ``"volume"`` (default) or ``"patch"``; the built-in ``nodule_malignancy`` task
  sets ``"patch"`` in its ``TaskSpec.pipeline_options``. ``"volume"``: whole CT volumes, resampled
  as a whole and checked for air (HU below -500 somewhere); train mode crops ``spatial_size``
  patches (per class for segmentation), eval mode keeps the whole volume (a classification task
  then sees volumes of any size). ``"patch"``: small patches cut around a world centre (see *CT
  patches* below), no air required. Only for tasks whose label is neither a mask nor boxes
  (classification, multilabel): ``"patch"`` for a segmentation or detection task raises
  :class:`~medmtl.errors.ConfigError`.
- ``pixdim`` (CT): ``(1.5, 1.5, 2.0)`` mm for ``input="volume"``, ``(1.0, 1.0, 1.0)`` for ``"patch"``.
- ``hu_window`` (CT): ``(-1000.0, 400.0)``, mapped to ``[0, 1]`` with clipping.
- ``num_samples`` (CT segmentation): ``2`` patches per volume in train mode.
- ``class_ratios`` (CT segmentation): ``(0.5, 1, ..., 1)`` (:data:`BACKGROUND_RATIO`, then 1 per
  organ class; one value per class of the task, ``num_classes`` of them). Relative frequency of
  training patch centres per class (MONAI ``RandCropByLabelClassesd``), so that small organs are
  sampled as often as the lung; background centres lie inside the body. A class missing from a
  volume gets ratio 0 for that volume. (Replaces the former ``pos_neg``, which drew centres from
  any foreground voxel, mostly lung.)
- ``intensity_range`` (CXR, mammo): ``(0.5, 99.5)`` percentiles mapped to ``[0, 1]``.
- ``use_voi`` (CXR, mammo): ``False``. Use the DICOM VOI window instead when the file has one.
- ``chest_wall`` (mammo): ``"left"``, the array side (``x = 0``) chest walls are flipped to; the
  image is then padded at the end so the chest wall stays on the edge (``"right"`` pads evenly).
  In train mode the fit is zoomed out at random (factor 0.9 to 1.0 with probability ``aug_prob``,
  never zoomed in) and flipped up-down, so the whole breast and every box are kept.
- ``foreground_threshold`` (mammo): ``0.05``. The breast crop keeps the bounding box of the
  normalised intensities above it (burnt-in markers inside the box are kept).

CT patches (``input="patch"``, e.g. nodules): an entry may carry ``center``, a nodule centre in
world RAS mm coordinates of a full CT volume; the pipeline then crops a ``spatial_size * pixdim`` mm
box around it before resampling (cheap: the full volume is never resampled). Without ``center``
the image is taken to be a patch already and is centre-cropped / padded.

Mammography (every task of the modality, whatever its kind): laterality comes from the entry's
``laterality`` (wins) or the DICOM tags ``ImageLaterality`` / ``Laterality``; right breasts are
flipped so that every chest wall is on ``chest_wall``; without any laterality the stored orientation
is kept and a warning is logged.

Example:
    >>> from medmtl.data.pipelines import modality_transforms
    >>> xform = modality_transforms("cxr", "train", task="cxr_findings", seed=0)
    >>> sample = xform({"image": "cxr_000.png", "label": [1, 0, 1]})  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from medmtl.data.kinds import data_kind
from medmtl.data.transforms import (
    BoxesFollowd,
    CheckImaged,
    CropAroundWorldCenterd,
    ForegroundThreshold,
    LoadMedicalImaged,
    OrientBreastd,
    RandResizeToFitd,
    ResizeToFitd,
    ScaleIntensityByVOId,
    StandardizeBoxesd,
)
from medmtl.errors import ConfigError, MedMTLError
from medmtl.tasks import MODALITIES, TASKS, TaskSpec, get_task

__all__ = ["MODES", "OPTIONS", "ModalityCompose", "modality_transforms"]

MODES = ("train", "eval")

_COMMON = {"spatial_size": None, "seed": None, "aug_prob": 0.5, "check_modality": True}
#: Options per modality with their defaults (``None``: derived from the task, see the module doc).
OPTIONS: dict[str, dict[str, Any]] = {
    "ct": {
        **_COMMON,
        "input": "volume",
        "pixdim": None,
        "hu_window": (-1000.0, 400.0),
        "num_samples": 2,
        "class_ratios": None,
    },
    "cxr": {**_COMMON, "intensity_range": (0.5, 99.5), "use_voi": False},
    "mammo": {
        **_COMMON,
        "intensity_range": (0.5, 99.5),
        "use_voi": False,
        "chest_wall": "left",
        "foreground_threshold": 0.05,
    },
}

#: Default CT voxel spacing (mm) per ``input`` (also the ``hounsfield`` mode of ``CheckImaged``).
_CT_PIXDIM = {"volume": (1.5, 1.5, 2.0), "patch": (1.0, 1.0, 1.0)}
#: Default share of background patch centres, relative to 1 for each foreground class.
BACKGROUND_RATIO = 0.5
#: Random zoom of the mammography fit in train mode (zoom out only: nothing is cropped).
_MAMMO_ZOOM = (0.9, 1.0)


@dataclass(frozen=True)
class _Keys:
    """Which keys a pipeline handles, derived from the task."""

    images: tuple[str, ...]  # loaded and resampled images: image (+ mask)
    boxes: bool = False  # the label is boxes in image coordinates
    label_dtype: torch.dtype | None = None  # dtype of an image-level label at the end

    @classmethod
    def of(cls, spec: TaskSpec | None) -> _Keys:
        if spec is None:  # an image without a task: no label
            return cls(("image",))
        return cls(
            ("image", "label") if spec.label_is_image else ("image",),
            boxes="boxes" in spec.label_keys,
            label_dtype=data_kind(spec).label_dtype,
        )

    @property
    def mask(self) -> bool:
        return len(self.images) > 1

    @property
    def modes(self) -> tuple[str, ...]:
        """Interpolation per image key: bilinear for the image, nearest for a mask."""
        return ("bilinear",) + ("nearest",) * (len(self.images) - 1)


class ModalityCompose(Compose):
    """A ``Compose`` that lets medmtl errors (e.g. :class:`~medmtl.errors.ImageLoadError`) through.

    MONAI's ``apply_transform`` wraps every exception in ``RuntimeError("applying transform ...")``;
    the user should see the medmtl error that names the file. Note that a MONAI ``Dataset`` wraps
    again, so code iterating a ``DataLoader`` finds the medmtl error in ``__cause__``.
    """

    def __call__(
        self,
        input_: Any,
        start: int = 0,
        end: int | None = None,
        threading: bool = False,
        lazy: bool | None = None,
    ) -> Any:
        try:
            return super().__call__(
                input_, start=start, end=end, threading=threading, lazy=lazy
            )
        except RuntimeError as e:
            cause: BaseException | None = e
            while cause is not None and not isinstance(cause, MedMTLError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from cause.__cause__


def _resolve_task(modality: str, task: str | TaskSpec | None) -> TaskSpec | None:
    if task is None or isinstance(task, TaskSpec):
        spec = task
    else:
        try:
            spec = get_task(task)
        except KeyError as e:
            raise ConfigError(str(e.args[0])) from None
    if spec is not None and spec.modality != modality:
        raise ConfigError(
            f"task {spec.name!r} is a {spec.modality} task, not {modality}"
        )
    return spec


def _spatial_size_alias(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the alias ``patch_size`` renamed ``spatial_size``."""
    if "patch_size" not in options:
        return options
    if "spatial_size" in options:
        raise ConfigError("give spatial_size or patch_size, not both")
    return {**{k: v for k, v in options.items() if k != "patch_size"}, "spatial_size": options["patch_size"]}


def _resolve_options(
    modality: str, spec: TaskSpec | None, options: dict[str, Any]
) -> dict[str, Any]:
    if modality == "ct" and "pos_neg" in options:
        raise ConfigError(
            "the CT option pos_neg was replaced by class_ratios: patch centres are drawn per class, "
            "e.g. class_ratios=[0.5, 1, 1, 1, 1] (background, then each organ class)"
        )
    options = _spatial_size_alias(options)
    unknown = set(options) - set(OPTIONS[modality])
    if unknown:
        raise ConfigError(
            f"unknown options {sorted(unknown)} for the {modality} pipeline; known: {sorted(OPTIONS[modality])}"
        )
    opts = {**OPTIONS[modality], **options}
    if opts["spatial_size"] is None:
        default = spec or next(t for t in TASKS.values() if t.modality == modality)
        opts["spatial_size"] = default.patch_size
    opts["spatial_size"] = tuple(int(s) for s in opts["spatial_size"])
    if len(opts["spatial_size"]) != MODALITIES[modality]:
        raise ConfigError(
            f"spatial_size {opts['spatial_size']} must have {MODALITIES[modality]} values for {modality}"
        )
    if modality == "ct":
        opts["input"] = _ct_input(spec, opts["input"])
        if opts["pixdim"] is None:
            opts["pixdim"] = _CT_PIXDIM[opts["input"]]
        opts["class_ratios"] = _class_ratios(spec, opts["class_ratios"])
    if not 0.0 <= float(opts["aug_prob"]) <= 1.0:
        raise ConfigError(f"aug_prob must be in [0, 1], got {opts['aug_prob']}")
    return opts


def _ct_input(spec: TaskSpec | None, given: Any) -> str:
    """The CT ``input`` option, checked against the task's kind."""
    if given not in _CT_PIXDIM:
        raise ConfigError(f"the CT option input must be one of {sorted(_CT_PIXDIM)}, got {given!r}")
    if given == "patch" and spec is not None and spec.task_kind.spatial_label:
        raise ConfigError(
            f"task {spec.name!r} is a {spec.kind} task, it cannot take input='patch': CT patches "
            "are cut around a centre and carry no mask or boxes; use input='volume' (the default) for "
            "tasks whose labels are masks or boxes, 'patch' only for image-level labels (classification, multilabel)"
        )
    return str(given)


def _class_ratios(spec: TaskSpec | None, given: Sequence[float] | None) -> tuple[float, ...] | None:
    """Patch centre ratio per class of a segmentation task (``None`` for other CT tasks)."""
    if spec is None or not spec.label_is_image:
        return None if given is None else tuple(float(r) for r in given)
    if given is None:
        return (BACKGROUND_RATIO,) + (1.0,) * (spec.num_classes - 1)
    ratios = tuple(float(r) for r in given)
    if len(ratios) != spec.num_classes or min(ratios) < 0 or sum(ratios) <= 0:
        raise ConfigError(
            f"class_ratios {list(ratios)} must be {spec.num_classes} non-negative values (background "
            f"first, then {', '.join(spec.class_names[1:])}), not all zero"
        )
    return ratios


def modality_transforms(
    modality: str, mode: str, *, task: str | TaskSpec | None = None, **options: Any
) -> ModalityCompose:
    """The MONAI dictionary pipeline for ``modality`` in ``mode``.

    Args:
        modality: ``"ct"``, ``"cxr"`` or ``"mammo"``.
        mode: ``"train"`` (augmented, random patches) or ``"eval"`` (deterministic).
        task: a task name or :class:`~medmtl.tasks.TaskSpec` of that modality; decides the label
            keys. ``None``: only ``image`` (inference).
        options: see the module docstring (:data:`OPTIONS` lists them with defaults). The task's
            own ``TaskSpec.pipeline_options`` fill in the options not given here.

    Returns:
        A :class:`ModalityCompose` (a MONAI ``Compose``) mapping an entry dict to a dict (a list
        of dicts for CT segmentation in train mode, one per sampled patch) with the shapes of the
        module docstring.

    Raises:
        ConfigError: unknown modality, mode, task or option, a task of another modality, or an
            option that contradicts the task (``input="patch"`` for a segmentation task).
    """
    if modality not in MODALITIES:
        raise ConfigError(
            f"unknown modality {modality!r}, expected one of {sorted(MODALITIES)}"
        )
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}, expected one of {MODES}")
    spec = _resolve_task(modality, task)
    if spec is not None:  # the task's own defaults under the given options
        options = {**_spatial_size_alias(dict(spec.pipeline_options)), **_spatial_size_alias(dict(options))}
    opts = _resolve_options(modality, spec, dict(options))
    keys = _Keys.of(spec)
    train = mode == "train"
    load = LoadMedicalImaged(
        keys.images,
        spatial_dims=MODALITIES[modality],
        modality=modality if opts["check_modality"] else None,
        modality_keys="image",
    )
    build = {"ct": _ct, "cxr": _cxr, "mammo": _mammo}[modality]
    # content checks right after loading, before resampling could hide a misaligned mask
    volumetric = MODALITIES[modality] == 3
    check = CheckImaged(
        keys.images,
        label_keys=keys.images[1:],
        num_classes=spec.num_classes if spec is not None and spec.label_is_image else None,
        # the encoder halves a 3D input three times; fewer than 8 voxels along an axis is not a volume
        min_size=8 if volumetric else None,
        hounsfield=opts["input"] if modality == "ct" else None,
    )
    pipeline = ModalityCompose([load, check, *build(keys, train, opts), *_finalize(keys)])
    if opts["seed"] is not None:
        pipeline.set_random_state(seed=int(opts["seed"]))
    return pipeline


def _finalize(keys: _Keys) -> list[MapTransform]:
    xforms: list[MapTransform] = [EnsureTyped(keys.images, dtype=torch.float32)]
    if keys.label_dtype is not None:
        xforms.append(EnsureTyped("label", dtype=keys.label_dtype, track_meta=False))
    return xforms


def _intensity_augment(
    image_key: str, p: float, noise_std: float
) -> list[MapTransform]:
    return [
        RandScaleIntensityd(image_key, factors=0.1, prob=p),
        RandShiftIntensityd(image_key, offsets=0.05, prob=p),
        RandGaussianNoised(image_key, prob=p, std=noise_std),
    ]


def _ct(keys: _Keys, train: bool, opts: dict[str, Any]) -> list[MapTransform]:
    patch, pixdim, p = (
        opts["spatial_size"],
        tuple(opts["pixdim"]),
        float(opts["aug_prob"]),
    )
    a_min, a_max = (float(v) for v in opts["hu_window"])
    window = ScaleIntensityRanged(
        "image", a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True
    )
    orient = Orientationd(
        keys.images, axcodes="RAS", labels=None
    )  # axis labels from the meta "space"
    if opts["input"] == "patch":
        # window first so that padding with 0 means air, crop before resampling so that a full CT
        # volume with a nodule centre is never resampled as a whole
        roi_mm = [s * d for s, d in zip(patch, pixdim)]
        xforms: list[Any] = [
            orient,
            window,
            CropAroundWorldCenterd(
                "image",
                roi_size_mm=roi_mm,
                center_key="center",
                pad_value=0.0,
                margin=2,
            ),
            Spacingd("image", pixdim=pixdim, mode="bilinear"),
            # exact patch around the centre on the new grid (the first crop was on the input grid)
            CropAroundWorldCenterd(
                "image", roi_size_mm=roi_mm, center_key="center", pad_value=0.0
            ),
            ResizeWithPadOrCropd(
                "image", spatial_size=patch, mode="constant"
            ),  # entries without centre
        ]
        if train:
            xforms += [
                RandFlipd("image", prob=p, spatial_axis=0),
                RandFlipd("image", prob=p, spatial_axis=1),
                RandFlipd("image", prob=p, spatial_axis=2),
                RandRotate90d("image", prob=p, spatial_axes=(0, 1)),
                # rotation only, no scaling: malignancy risk grows with the diameter (Brock,
                # Lung-RADS; the generator's rule too), so a rescaled nodule carries a wrong label
                RandAffined(
                    "image",
                    prob=p,
                    rotate_range=(0.26,) * 3,
                    padding_mode="zeros",
                ),
                # noise only: density (ground-glass, solid, calcified) is read from calibrated HU,
                # and a +-10 % scale or +-0.05 shift made solid (0.74) and calcified (1.0) overlap
                RandGaussianNoised("image", prob=p, std=0.01),
            ]
        return xforms

    xforms = [orient, Spacingd(keys.images, pixdim=pixdim, mode=keys.modes), window]
    if not train:
        return xforms  # whole volume, invertible spatial steps only
    # no left-right flips: liver / spleen (and the side of other organs) are told apart by side
    if keys.mask:
        ratios = list(opts["class_ratios"])
        xforms += [
            CropForegroundd(
                keys.images,
                source_key="image",
                select_fn=ForegroundThreshold(0.0),
                allow_smaller=True,
                start_coord_key=None,
                end_coord_key=None,
            ),
            SpatialPadd(keys.images, spatial_size=patch),
            # centres drawn per class: small organs are sampled as often as the lung; a class
            # missing from a volume gets ratio 0 there (MONAI's warning about it is silenced)
            RandCropByLabelClassesd(
                keys.images,
                label_key="label",
                spatial_size=patch,
                ratios=ratios,
                num_classes=len(ratios),
                num_samples=int(opts["num_samples"]),
                image_key="image",
                image_threshold=0.0,
                warn=False,
            ),
        ]
    else:
        xforms += [
            SpatialPadd(keys.images, spatial_size=patch),
            RandSpatialCropd(keys.images, roi_size=patch, random_size=False),
        ]
    xforms += [
        RandAffined(
            keys.images,
            prob=p,
            rotate_range=(0.26,) * 3,
            scale_range=(0.1,) * 3,
            mode=keys.modes,
            padding_mode="zeros",
            spatial_size=patch,
            cache_grid=True,
        ),
        *_intensity_augment("image", p, noise_std=0.01),
    ]
    return xforms


def _fit(
    keys: _Keys, size: Sequence[int], pad_method: str, zoom: tuple[float, float, float] | None = None
) -> list[MapTransform]:
    """Resize keeping the aspect ratio so that the whole image fits inside ``size``, then pad to it.

    The scale is ``min(size / shape)`` over the axes (:class:`~medmtl.data.transforms.ResizeToFit`,
    which warns about a size that looks transposed), so nothing is cropped whatever the aspect.
    ``zoom``: ``(prob, min, max)`` of a random zoom out within the fit (train mode).
    """
    resize_args = dict(mode=keys.modes, anti_aliasing=[m != "nearest" for m in keys.modes])
    resize = (
        ResizeToFitd(keys.images, size, **resize_args)
        if zoom is None
        else RandResizeToFitd(keys.images, size, prob=zoom[0], zoom_range=zoom[1:], **resize_args)
    )
    return [resize, SpatialPadd(keys.images, spatial_size=size, method=pad_method, mode="constant")]


def _labels_2d(keys: _Keys) -> list[MapTransform]:
    return (
        [StandardizeBoxesd("boxes", "box_labels", spatial_dims=2)] if keys.boxes else []
    )


def _spatial_2d(keys: _Keys, xforms: list[Any]) -> list[Any]:
    """``xforms`` as they are, or wrapped so that the boxes follow the image."""
    return (
        [BoxesFollowd(Compose(xforms), "boxes", "image", "box_labels")]
        if keys.boxes
        else xforms
    )


def _cxr(keys: _Keys, train: bool, opts: dict[str, Any]) -> list[Any]:
    size, p = opts["spatial_size"], float(opts["aug_prob"])
    spatial: list[Any] = _fit(keys, size, "symmetric")
    if train:
        # no flips: the heart's side is part of what a chest radiograph looks like
        spatial.append(
            RandAffined(
                keys.images,
                prob=p,
                rotate_range=0.17,
                scale_range=(0.1, 0.1),
                translate_range=[0.05 * s for s in size],
                mode=keys.modes,
                padding_mode="zeros",
            )
        )
    return _radiograph(keys, train, opts, spatial)


def _radiograph(keys: _Keys, train: bool, opts: dict[str, Any], spatial: list[Any]) -> list[Any]:
    """What chest radiographs and mammograms share around their own ``spatial`` steps."""
    p = float(opts["aug_prob"])
    lower, upper = (float(v) for v in opts["intensity_range"])
    xforms = [
        *_labels_2d(keys),
        ScaleIntensityByVOId("image", lower, upper, use_voi=bool(opts["use_voi"])),
        *_spatial_2d(keys, spatial),
    ]
    if train:
        xforms += [
            RandAdjustContrastd("image", prob=p, gamma=(0.8, 1.25)),
            *_intensity_augment("image", p, noise_std=0.02),
        ]
    return xforms


def _mammo(keys: _Keys, train: bool, opts: dict[str, Any]) -> list[Any]:
    size, p = opts["spatial_size"], float(opts["aug_prob"])
    spatial: list[Any] = [
        OrientBreastd(
            keys.images, laterality_key="laterality", chest_wall=str(opts["chest_wall"])
        ),
        CropForegroundd(
            keys.images,
            source_key="image",
            select_fn=ForegroundThreshold(float(opts["foreground_threshold"])),
            allow_smaller=True,
            start_coord_key=None,
            end_coord_key=None,
        ),
        # fit inside (train: zoomed out at random, never in) and pad at the end, so that the whole
        # breast and every box are kept and the chest wall stays on the array edge it was flipped to
        *_fit(
            keys,
            size,
            "end" if opts["chest_wall"] == "left" else "symmetric",
            zoom=(p, *_MAMMO_ZOOM) if train else None,
        ),
    ]
    if train:
        # up-down only: keeps the chest wall side
        spatial.append(RandFlipd(keys.images, prob=p, spatial_axis=1))
    return _radiograph(keys, train, opts, spatial)

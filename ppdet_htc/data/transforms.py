"""Sample and batch transforms with PaddleDetection's names and numerics.

A *sample* is a dict (see ``ppdet_htc/data/README.md`` for the keys). Sample transforms are called as
``op(sample, rng)`` with a ``numpy.random.Generator`` so that augmentation is reproducible per
(seed, epoch, index) and does not depend on worker processes; batch transforms as ``op(samples, rng)``.

Numerics follow the reference exactly where they change outputs: cv2 decoding to RGB, keep-ratio
resize with ``cv2.resize(fx=s, fy=s)`` on uint8 and an *unrounded* float ``im_shape``; normalisation
``(x * float32(1/255) - mean) / std`` with mean/std in float64 and the result stored as float32.
"""
import numbers
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util

from ..errors import ConfigError, ImageDecodeError

__all__ = [
    "TRANSFORMS",
    "register_transform",
    "build_transforms",
    "Decode",
    "Resize",
    "RandomFlip",
    "NormalizeImage",
    "Permute",
    "PadBatch",
    "Poly2Mask",
    "SegRescale",
    "ImageDecodeError",
]

TRANSFORMS = {}


def register_transform(cls):
    """Make a transform usable by name in reader configs (``- Resize: {...}``)."""
    TRANSFORMS[cls.__name__] = cls
    return cls


def build_transforms(specs, where="reader"):
    """``[{'Decode': {}}, {'Resize': {...}}]`` -> list of transform objects (names/keys checked)."""
    import inspect

    from ..core.registry import closest

    ops = []
    for spec in specs or []:
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError("{}: each transform must be a one-key mapping like '- Resize: {{...}}', got {!r}".format(
                where, spec))
        (name, kwargs), = spec.items()
        kwargs = dict(kwargs or {})
        if name not in TRANSFORMS:
            hint = closest(name, TRANSFORMS)
            raise ConfigError("{}: unknown transform {!r}{}; available: {}".format(
                where, name, "; did you mean {}?".format(" / ".join(repr(h) for h in hint)) if hint else "",
                ", ".join(sorted(TRANSFORMS))))
        cls = TRANSFORMS[name]
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        for k in kwargs:
            if k not in params:
                hint = closest(k, params)
                raise ConfigError("{}: {!r} is not a parameter of transform {}{}; valid: {}".format(
                    where, k, name, "; did you mean {}?".format(" / ".join(repr(h) for h in hint)) if hint else "",
                    ", ".join(params)))
        ops.append(cls(**kwargs))
    return ops


# ------------------------------------------------------------------------------------------ sample ops


@register_transform
class Decode(object):
    """Read ``im_file`` (or bytes in ``image``) with cv2, convert BGR->RGB, set size fields.

    Also loads the semantic label map when the sample names one (``semantic_file``, channel 0 of a
    PNG) or derives it from the instance annotations (``semantic_from_instances``).
    """

    def __init__(self, to_rgb=True):
        self.to_rgb = to_rgb

    def __call__(self, sample, rng=None):
        im = sample.get("image")
        path = sample.get("im_file", "<bytes>")
        if im is None:
            if not os.path.isfile(path):
                raise ImageDecodeError("image file not found: {}".format(path))
            with open(path, "rb") as f:
                im = f.read()
        if isinstance(im, (bytes, bytearray)):
            data = np.frombuffer(im, dtype=np.uint8)
            try:
                im = cv2.imdecode(data, 1) if data.size else None
            except cv2.error:  # some malformed headers make OpenCV raise instead of returning None
                im = None
            if im is None:
                raise ImageDecodeError("cannot decode image (corrupt or not an image): {}".format(path))
            if self.to_rgb:
                im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        elif isinstance(im, np.ndarray):
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ImageDecodeError("image array for {} must be HxWx3 uint8 (RGB), got {} {}".format(
                    path, im.shape, im.dtype))
        else:
            raise ImageDecodeError("sample 'image' for {} must be bytes or an array, got {}".format(path, type(im)))
        h, w = im.shape[:2]
        if "h" in sample and sample["h"] and (sample["h"] != h or sample["w"] != w):
            # The annotation's size is wrong; the decoded size is what the model sees.
            sample["annotated_hw"] = (sample["h"], sample["w"])
        sample["image"] = im
        sample["h"], sample["w"] = h, w
        sample["im_shape"] = np.array([h, w], dtype=np.float32)
        sample["scale_factor"] = np.array([1.0, 1.0], dtype=np.float32)
        if sample.get("semantic_file"):
            sample["semantic"] = _read_semantic(sample["semantic_file"], (h, w))
        elif sample.get("semantic_from_instances"):
            from .semantic import semantic_from_instances

            sample["semantic"] = semantic_from_instances(sample, h, w)
        return sample


def _read_semantic(path, hw):
    if not os.path.isfile(path):
        raise ImageDecodeError("semantic label map not found: {}".format(path))
    sem = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if sem is None:
        raise ImageDecodeError("cannot decode semantic label map: {}".format(path))
    if sem.ndim == 3:
        sem = sem[:, :, 0]
    if sem.shape[:2] != tuple(hw):
        raise ImageDecodeError("semantic label map {} is {}x{} but its image is {}x{}".format(
            path, sem.shape[0], sem.shape[1], hw[0], hw[1]))
    return sem.astype(np.uint8)


def _is_poly(segm):
    return isinstance(segm, list)


@register_transform
class Resize(object):
    """Resize to ``target_size``; with ``keep_ratio`` the scale is ``min(short/min(h,w), long/max(h,w))``.

    ``im_shape`` becomes the unrounded ``[s*h, s*w]``; boxes and polygons are scaled (boxes clipped),
    RLE/bitmap masks and the semantic map are resized (semantic with nearest neighbour).
    """

    def __init__(self, target_size, keep_ratio=True, interp=cv2.INTER_LINEAR):
        if isinstance(target_size, numbers.Integral):
            target_size = [target_size, target_size]
        if not isinstance(target_size, (list, tuple)) or len(target_size) != 2:
            raise ConfigError("Resize.target_size must be an int or [h, w], got {!r}".format(target_size))
        self.target_size = list(target_size)
        self.keep_ratio = keep_ratio
        self.interp = interp

    def scale_for(self, h, w):
        if self.keep_ratio:
            size_min, size_max = min(h, w), max(h, w)
            t_min, t_max = min(self.target_size), max(self.target_size)
            s = min(float(t_min) / float(size_min), float(t_max) / float(size_max))
            return s, s, s * float(h), s * float(w)
        rh, rw = self.target_size
        return float(rh) / h, float(rw) / w, float(rh), float(rw)

    def __call__(self, sample, rng=None):
        im = sample["image"]
        h, w = im.shape[:2]
        sy, sx, rh, rw = self.scale_for(h, w)
        im = cv2.resize(im, None, None, fx=sx, fy=sy, interpolation=self.interp)
        sample["image"] = im.astype(np.float32)
        sample["im_shape"] = np.asarray([rh, rw], dtype=np.float32)
        old = sample.get("scale_factor", np.array([1.0, 1.0], dtype=np.float32))
        sample["scale_factor"] = np.asarray([old[0] * sy, old[1] * sx], dtype=np.float32)
        if "gt_bbox" in sample and len(sample["gt_bbox"]) > 0:
            bbox = sample["gt_bbox"].astype(np.float32).copy()
            bbox[:, 0::2] = np.clip(bbox[:, 0::2] * sx, 0, rw)
            bbox[:, 1::2] = np.clip(bbox[:, 1::2] * sy, 0, rh)
            sample["gt_bbox"] = bbox
        if "gt_poly" in sample and len(sample["gt_poly"]) > 0:
            sample["gt_poly"] = [self._segm(s, sx, sy, h, w) for s in sample["gt_poly"]]
        if sample.get("semantic") is not None:
            sample["semantic"] = cv2.resize(sample["semantic"], (im.shape[1], im.shape[0]),
                                            interpolation=cv2.INTER_NEAREST)
        return sample

    def _segm(self, segm, sx, sy, h, w):
        if _is_poly(segm):
            out = []
            for poly in segm:
                p = np.asarray(poly, dtype=np.float32)
                p[0::2] *= sx
                p[1::2] *= sy
                out.append(p.tolist())
            return out
        mask = mask_util.decode(segm) if isinstance(segm, dict) else segm
        mask = cv2.resize(mask.astype(np.uint8), None, None, fx=sx, fy=sy, interpolation=self.interp)
        return mask.astype(np.uint8)


@register_transform
class RandomFlip(object):
    """Mirror horizontally with probability ``prob`` (image, boxes, polygons, masks, semantic map)."""

    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, sample, rng=None):
        u = rng.uniform(0, 1) if rng is not None else np.random.uniform(0, 1)
        if u >= self.prob:
            return sample
        im = sample["image"]
        width = im.shape[1]
        sample["image"] = np.ascontiguousarray(im[:, ::-1, :])
        if "gt_bbox" in sample and len(sample["gt_bbox"]) > 0:
            bbox = sample["gt_bbox"].copy()
            x1 = bbox[:, 0].copy()
            x2 = bbox[:, 2].copy()
            bbox[:, 0] = width - x2
            bbox[:, 2] = width - x1
            sample["gt_bbox"] = bbox
        if "gt_poly" in sample and len(sample["gt_poly"]) > 0:
            sample["gt_poly"] = [self._segm(s, width) for s in sample["gt_poly"]]
        if sample.get("semantic") is not None:
            sample["semantic"] = np.ascontiguousarray(sample["semantic"][:, ::-1])
        sample["flipped"] = True
        return sample

    @staticmethod
    def _segm(segm, width):
        if _is_poly(segm):
            out = []
            for poly in segm:
                p = np.asarray(poly, dtype=np.float32)
                p[0::2] = width - p[0::2]
                out.append(p.tolist())
            return out
        mask = mask_util.decode(segm) if isinstance(segm, dict) else segm
        return np.ascontiguousarray(mask[:, ::-1])


@register_transform
class NormalizeImage(object):
    """``x/255`` (float32) then ``(x - mean)/std`` per channel, like the reference (numpy in place)."""

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), is_scale=True,
                 norm_type="mean_std"):
        if norm_type not in ("mean_std", "none"):
            raise ConfigError("NormalizeImage.norm_type must be 'mean_std' or 'none', got {!r}".format(norm_type))
        if norm_type == "mean_std" and any(s == 0 for s in std):
            raise ConfigError("NormalizeImage.std must not contain 0, got {}".format(list(std)))
        self.mean = list(mean)
        self.std = list(std)
        self.is_scale = is_scale
        self.norm_type = norm_type

    def __call__(self, sample, rng=None):
        im = sample["image"].astype(np.float32, copy=True)
        if self.is_scale:
            im *= np.float32(1.0 / 255.0)
        if self.norm_type == "mean_std":
            im -= np.array(self.mean, dtype=np.float64)[None, None, :]
            im /= np.array(self.std, dtype=np.float64)[None, None, :]
        sample["image"] = im
        return sample


@register_transform
class Permute(object):
    """HWC -> CHW."""

    def __init__(self):
        pass

    def __call__(self, sample, rng=None):
        sample["image"] = np.ascontiguousarray(sample["image"].transpose((2, 0, 1)))
        return sample


@register_transform
class Poly2Mask(object):
    """Turn polygon/RLE annotations into full-image uint8 masks ``gt_segm [n,H,W]``."""

    def __init__(self, del_poly=False):
        self.del_poly = del_poly

    def __call__(self, sample, rng=None):
        h, w = sample["image"].shape[:2] if sample["image"].ndim == 3 and sample["image"].shape[2] in (1, 3) \
            else sample["image"].shape[1:]
        masks = [segm_to_bitmap(s, h, w) for s in sample.get("gt_poly", [])]
        sample["gt_segm"] = np.stack(masks).astype(np.uint8) if masks else np.zeros((0, h, w), np.uint8)
        if self.del_poly:
            sample.pop("gt_poly", None)
        return sample


def segm_to_bitmap(segm, h, w):
    """Polygons (list), RLE (dict) or a bitmap -> ``[h,w]`` uint8 mask."""
    if _is_poly(segm):
        if not segm:
            return np.zeros((h, w), np.uint8)
        rles = mask_util.frPyObjects(segm, h, w)
        return mask_util.decode(mask_util.merge(rles)).astype(np.uint8)
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            segm = mask_util.frPyObjects(segm, h, w)
        return mask_util.decode(segm).astype(np.uint8)
    return np.asarray(segm, dtype=np.uint8)


# ------------------------------------------------------------------------------------------ batch ops


@register_transform
class PadBatch(object):
    """Zero-pad every image of a batch (bottom/right) to a common size, a multiple of ``pad_to_stride``.

    Semantic maps are padded with 255 (ignored by the loss).
    """

    def __init__(self, pad_to_stride=0, pad_gt=False):
        self.pad_to_stride = int(pad_to_stride)

    def __call__(self, samples, rng=None):
        max_shape = np.array([s["image"].shape for s in samples]).max(axis=0)
        stride = self.pad_to_stride
        if stride > 0:
            max_shape[1] = int(np.ceil(max_shape[1] / stride) * stride)
            max_shape[2] = int(np.ceil(max_shape[2] / stride) * stride)
        for s in samples:
            c, h, w = s["image"].shape
            canvas = np.zeros((c, max_shape[1], max_shape[2]), dtype=np.float32)
            canvas[:, :h, :w] = s["image"]
            s["image"] = canvas
            if s.get("semantic") is not None:
                sem = np.full((max_shape[1], max_shape[2]), 255, dtype=np.uint8)
                sem[: s["semantic"].shape[0], : s["semantic"].shape[1]] = s["semantic"]
                s["semantic"] = sem
        return samples


@register_transform
class SegRescale(object):
    """Downscale the (padded) semantic maps by ``scale_factor`` with nearest neighbour (1/8 for HTC)."""

    def __init__(self, scale_factor=0.125):
        self.scale_factor = float(scale_factor)

    def __call__(self, samples, rng=None):
        for s in samples:
            sem = s.get("semantic")
            if sem is None:
                continue
            h = int(round(sem.shape[0] * self.scale_factor))
            w = int(round(sem.shape[1] * self.scale_factor))
            s["semantic"] = cv2.resize(sem, (w, h), interpolation=cv2.INTER_NEAREST)
        return samples

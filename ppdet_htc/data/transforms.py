"""Sample and batch transforms with PaddleDetection's names and numerics.

A *sample* is a dict (see ``ppdet_htc/data/README.md`` for the keys). Sample transforms are called as
``op(sample, rng)`` with a ``numpy.random.Generator`` so that augmentation is reproducible per
(seed, epoch, index) and does not depend on worker processes; batch transforms as ``op(samples, rng)``.

Numerics follow the reference exactly where they change outputs: cv2 decoding to RGB, keep-ratio
resize with ``cv2.resize(fx=s, fy=s)`` on uint8 and an *unrounded* float ``im_shape``; normalisation
``(x * float32(1/255) - mean) / std`` with mean/std in float64 and the result stored as float32.

mmdetection's pre-processing (SEMANTICS_MMDET.md 2 and 12.1) is available through options that say what
they change: ``Resize(scale_from_size=True)`` (integer output size first, per-axis scale factors from it),
``NormalizeImage(float32_arithmetic=True)`` (``(x - mean) / std`` in float32, mean/std on the 0-255 scale
with ``is_scale: false``) and ``RandomResize(random_range=True)`` (multi-scale training).
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
    "RandomResize",
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

    Default (PaddleDetection): ``cv2.resize(fx=s, fy=s)``, ``im_shape`` the unrounded ``[s*h, s*w]``,
    ``scale_factor`` ``[s, s]``. ``scale_from_size`` (mmdetection / mmcv ``imrescale``): the output size
    comes first, ``new = int(side * s + 0.5)`` per side (``s`` in float64; without ``keep_ratio`` the
    target itself), the image is resized to exactly that size (``cv2.resize`` with ``dsize``, so OpenCV uses
    the per-axis ratios ``old/new``), ``im_shape = [new_h, new_w]`` (integers) and ``scale_factor =
    [new_h/h, new_w/w]`` per axis (float32 of the float64 ratio); bitmap masks are resized with nearest
    neighbour like mmdetection's ``BitmapMasks.rescale``.
    Boxes are scaled (float32) and clipped to ``im_shape``, polygons scaled; RLE/bitmap masks in ``gt_poly``,
    full-image masks ``gt_segm [n,h,w]`` (nearest) and the semantic map (nearest) are resized to the image.
    """

    def __init__(self, target_size, keep_ratio=True, interp=cv2.INTER_LINEAR, scale_from_size=False):
        if isinstance(target_size, numbers.Integral):
            target_size = [target_size, target_size]
        if not isinstance(target_size, (list, tuple)) or len(target_size) != 2:
            raise ConfigError("Resize.target_size must be an int or [h, w], got {!r}".format(target_size))
        self.target_size = list(target_size)
        self.keep_ratio = keep_ratio
        self.interp = interp
        self.scale_from_size = bool(scale_from_size)

    def scale_for(self, h, w):
        """``(scale_y, scale_x, out_h, out_w)`` for an ``h x w`` image (out sizes are integers with
        ``scale_from_size``, the unrounded products otherwise)."""
        if self.keep_ratio:
            size_min, size_max = min(h, w), max(h, w)
            t_min, t_max = min(self.target_size), max(self.target_size)
            s = min(float(t_min) / float(size_min), float(t_max) / float(size_max))
            if self.scale_from_size:
                rh, rw = int(h * s + 0.5), int(w * s + 0.5)  # mmcv rescale_size: round half up
                return rh / float(h), rw / float(w), float(rh), float(rw)
            return s, s, s * float(h), s * float(w)
        rh, rw = self.target_size
        return float(rh) / h, float(rw) / w, float(rh), float(rw)

    def __call__(self, sample, rng=None):
        im = sample["image"]
        h, w = im.shape[:2]
        sy, sx, rh, rw = self.scale_for(h, w)
        if self.scale_from_size:
            im = cv2.resize(im, (int(rw), int(rh)), interpolation=self.interp)
            sy, sx = np.float32(sy), np.float32(sx)
            old = sample.get("scale_factor", np.array([1.0, 1.0], dtype=np.float32))
            sample["scale_factor"] = np.asarray([old[0] * np.float64(sy), old[1] * np.float64(sx)],
                                                dtype=np.float32)
        else:
            im = cv2.resize(im, None, None, fx=sx, fy=sy, interpolation=self.interp)
            old = sample.get("scale_factor", np.array([1.0, 1.0], dtype=np.float32))
            sample["scale_factor"] = np.asarray([old[0] * sy, old[1] * sx], dtype=np.float32)
        sample["image"] = im.astype(np.float32)
        sample["im_shape"] = np.asarray([rh, rw], dtype=np.float32)
        out_hw = im.shape[:2]
        if "gt_bbox" in sample and len(sample["gt_bbox"]) > 0:
            bbox = sample["gt_bbox"].astype(np.float32).copy()
            bbox[:, 0::2] = np.clip(bbox[:, 0::2] * sx, 0, rw)
            bbox[:, 1::2] = np.clip(bbox[:, 1::2] * sy, 0, rh)
            sample["gt_bbox"] = bbox
        if "gt_poly" in sample and len(sample["gt_poly"]) > 0:
            sample["gt_poly"] = [self._segm(s, sx, sy, out_hw) for s in sample["gt_poly"]]
        if sample.get("gt_segm") is not None:
            sample["gt_segm"] = _resize_masks_nearest(sample["gt_segm"], out_hw)
        if sample.get("semantic") is not None:
            sample["semantic"] = cv2.resize(sample["semantic"], (out_hw[1], out_hw[0]),
                                            interpolation=cv2.INTER_NEAREST)
        return sample

    def _segm(self, segm, sx, sy, out_hw):
        if _is_poly(segm):
            out = []
            for poly in segm:
                p = np.asarray(poly, dtype=np.float32)
                p[0::2] *= sx
                p[1::2] *= sy
                out.append(p.tolist())
            return out
        mask = mask_util.decode(segm) if isinstance(segm, dict) else segm
        if self.scale_from_size:
            return cv2.resize(mask.astype(np.uint8), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)
        mask = cv2.resize(mask.astype(np.uint8), None, None, fx=sx, fy=sy, interpolation=self.interp)
        return mask.astype(np.uint8)


def _resize_masks_nearest(masks, out_hw):
    """``[n,h,w]`` uint8 masks -> ``[n,H,W]`` with nearest neighbour (``cv2.resize`` with ``dsize``)."""
    masks = np.asarray(masks, np.uint8)
    out = np.zeros((len(masks), out_hw[0], out_hw[1]), np.uint8)
    for i, m in enumerate(masks):  # one call per object (cv2 takes at most 512 channels at once)
        out[i] = cv2.resize(m, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_NEAREST)
    return out


@register_transform
class RandomResize(object):
    """Resize to a random target (then exactly as :class:`Resize` with the other options).

    ``random_range`` (mmdetection ``multiscale_mode='range'``; PaddleDetection ``RandomResize``): from the
    ``target_size`` pairs, the long edge is a uniform integer between the smallest and largest long sides
    given and the short edge likewise, e.g. ``[[400, 1600], [1400, 1600]]`` for mmdetection's
    ``img_scale=[(1600, 400), (1600, 1400)]``: short side in [400, 1400], long side at most 1600.
    Otherwise one entry of ``target_size`` is chosen uniformly.
    """

    def __init__(self, target_size, keep_ratio=True, interp=cv2.INTER_LINEAR, random_range=False,
                 scale_from_size=False):
        sizes = list(target_size) if isinstance(target_size, (list, tuple)) else None
        ok = bool(sizes) and all(
            isinstance(t, numbers.Integral) or (isinstance(t, (list, tuple)) and len(t) == 2) for t in sizes)
        if random_range:
            ok = ok and len(sizes) >= 2 and all(isinstance(t, (list, tuple)) for t in sizes)
        if not ok:
            raise ConfigError("RandomResize.target_size must be a list of [h, w] pairs{}, got {!r}".format(
                " (at least two with random_range)" if random_range else " or ints", target_size))
        self.target_size = [list(t) if isinstance(t, (list, tuple)) else t for t in sizes]
        self.keep_ratio = keep_ratio
        self.interp = interp
        self.random_range = bool(random_range)
        self.scale_from_size = bool(scale_from_size)

    def sample_target(self, rng=None):
        """The ``[short, long]`` (``random_range``) or chosen target size for one sample."""
        rng = rng if rng is not None else np.random.default_rng()
        if self.random_range:
            longs = [max(t) for t in self.target_size]
            shorts = [min(t) for t in self.target_size]
            long_edge = int(rng.integers(min(longs), max(longs) + 1))
            short_edge = int(rng.integers(min(shorts), max(shorts) + 1))
            return [short_edge, long_edge]
        return self.target_size[int(rng.integers(len(self.target_size)))]

    def __call__(self, sample, rng=None):
        resize = Resize(self.sample_target(rng), keep_ratio=self.keep_ratio, interp=self.interp,
                        scale_from_size=self.scale_from_size)
        return resize(sample, rng)


@register_transform
class RandomFlip(object):
    """Mirror horizontally with probability ``prob`` (image, boxes, polygons, masks, ``gt_segm``, semantic map).

    Boxes become ``[W - x2, y1, W - x1, y2]`` (no -1), as in both PaddleDetection and mmdetection."""

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
        if sample.get("gt_segm") is not None:
            sample["gt_segm"] = np.ascontiguousarray(np.asarray(sample["gt_segm"])[:, :, ::-1])
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
    """``x/255`` (float32, ``is_scale``) then ``(x - mean)/std`` per channel.

    Default (PaddleDetection, numpy in place): the subtraction and division run in float64 with mean/std
    in float64, each result stored as float32. ``float32_arithmetic`` (mmdetection / PyTorch):
    ``(x - f32(mean)) / f32(std)`` entirely in float32; with mmdetection's 0-255 mean/std
    (``is_scale: false``) the two differ in the last bit for about a third of the uint8 values.
    """

    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), is_scale=True,
                 norm_type="mean_std", float32_arithmetic=False):
        if norm_type not in ("mean_std", "none"):
            raise ConfigError("NormalizeImage.norm_type must be 'mean_std' or 'none', got {!r}".format(norm_type))
        if norm_type == "mean_std" and any(s == 0 for s in std):
            raise ConfigError("NormalizeImage.std must not contain 0, got {}".format(list(std)))
        self.mean = list(mean)
        self.std = list(std)
        self.is_scale = is_scale
        self.norm_type = norm_type
        self.float32_arithmetic = bool(float32_arithmetic)

    def __call__(self, sample, rng=None):
        im = sample["image"].astype(np.float32, copy=True)
        if self.is_scale:
            im *= np.float32(1.0 / 255.0)
        if self.norm_type == "mean_std":
            if self.float32_arithmetic:
                im = (im - np.array(self.mean, dtype=np.float32)) / np.array(self.std, dtype=np.float32)
            else:
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

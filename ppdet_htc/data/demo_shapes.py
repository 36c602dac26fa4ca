"""Synthetic COCO-format instance segmentation dataset for the bundled demo ("demo_shapes").

Small enough to generate in seconds and to train a demo checkpoint on a CPU, but not trivial: four
shape classes with random size, rotation, colour and occlusion on textured backgrounds with
unannotated distractors (lines, dots, thin arcs).

Annotations describe what is *visible*: every object's mask is its rasterised shape minus the pixels
of objects drawn after it. Polygons trace the exact pixel-corner outline of that mask, so pycocotools
decodes them back to the same pixels. Placement rejects configurations that would hide most of an
earlier object or punch a hole into it (COCO polygons cannot express holes).

Layout under ``root``::

    train/000001.jpg ...            val/000001.jpg ...
    annotations/instances_train.json annotations/instances_val.json
    stuffthingmaps/train/000001.png  (uint8: 0 background, 1..4 class id of the visible object)
    DONE                             (json: generator version + parameters; written last)

Generation is deterministic: one ``numpy.random.default_rng([seed, split, index])`` per image, so the
same parameters give byte-identical JSON and identical pixels.
"""
import argparse
import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import UsageError

__all__ = [
    "CATEGORIES",
    "DEMO_VERSION",
    "ShapeObject",
    "default_demo_root",
    "render_image",
    "mask_to_polygons",
    "annotate_objects",
    "semantic_label_map",
    "generate_demo_dataset",
    "ensure_demo_dataset",
    "read_marker",
    "main",
]

# Bump whenever the generated data would change, so ``ensure_demo_dataset`` regenerates stale copies.
DEMO_VERSION = "demo_shapes-1"

CATEGORIES = [
    {"id": 1, "name": "ellipse", "supercategory": "shape"},
    {"id": 2, "name": "quad", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "pentagon", "supercategory": "shape"},
]
SPLIT_CODES = {"train": 0, "val": 1}
MARKER = "DONE"
ENV_ROOT = "PPDET_HTC_DEMO_DIR"

MAX_OBJECTS = 6
MIN_OBJECT_SIDE, MAX_OBJECT_SIDE = 15.0, 100.0
MIN_IMAGE_SIDE = 128  # room for the largest (100 px) objects to move around
MIN_FULL_AREA = 80  # thin slivers of 15 px would be neither visible nor learnable
PLACE_TRIES = 30
PLACE_MIN_VISIBLE_FRAC = 0.45  # placement keeps earlier objects mostly visible...
MIN_VISIBLE_PX, MIN_VISIBLE_FRAC = 40, 0.30  # ...and annotation drops whatever is still too hidden
MIN_COLOR_DIST = 90.0  # RGB distance from the local background (inside and around the object)
JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_OPTIMIZE, 0, cv2.IMWRITE_JPEG_PROGRESSIVE, 0]
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]
LAYOUT_NAMES = {"train", "val", "annotations", "stuffthingmaps", MARKER}


@dataclass
class ShapeObject:
    """One drawn object; ``visible`` shrinks as later objects are drawn on top of it."""

    category_id: int
    vertices: np.ndarray  # [k, 2] float, pixel-corner convention
    mask: np.ndarray  # bool [H, W], the full rasterised shape
    visible: np.ndarray  # bool [H, W], mask minus later objects
    color: tuple

    @property
    def area(self):
        return int(self.mask.sum())

    @property
    def visible_area(self):
        return int(self.visible.sum())


# ------------------------------------------------------------------------------------------ shapes


def _polygon_on_circle(rng, n, angle_jitter, radius_range):
    """Vertices at roughly even angles on a jittered circle: convex-ish, never degenerate."""
    base = rng.uniform(0, 2 * np.pi)
    angles = base + np.arange(n) * (2 * np.pi / n) + rng.uniform(-angle_jitter, angle_jitter, n)
    radii = rng.uniform(radius_range[0], radius_range[1], n)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _is_convex(pts):
    """True when all turns have the same sign (used to keep quads convex)."""
    d = np.roll(pts, -1, 0) - pts
    cross = d[:, 0] * np.roll(d, -1, 0)[:, 1] - d[:, 1] * np.roll(d, -1, 0)[:, 0]
    return bool(np.all(cross > 0) or np.all(cross < 0))


def _ellipse_shape(rng):
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    return np.stack([np.cos(t), rng.uniform(0.45, 1.0) * np.sin(t)], 1)


def _quad_shape(rng):
    """Half rotated rectangles, half random convex quadrilaterals."""
    if rng.random() < 0.5:
        aspect = rng.uniform(0.4, 1.0)
        return np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], dtype=np.float64)
    while True:
        pts = _polygon_on_circle(rng, 4, np.radians(25), (0.7, 1.0))
        if _is_convex(pts):
            return pts


def _triangle_shape(rng):
    return _polygon_on_circle(rng, 3, np.radians(25), (0.75, 1.0))


def _pentagon_shape(rng):
    pts = _polygon_on_circle(rng, 5, np.radians(8), (0.88, 1.0))
    return pts * np.array([1.0, rng.uniform(0.8, 1.0)])


SHAPE_FNS = {1: _ellipse_shape, 2: _quad_shape, 3: _triangle_shape, 4: _pentagon_shape}


def sample_shape(rng, category_id):
    """Unit shape -> random rotation -> scaled so the longest bbox side is 15..100 px, centred at 0."""
    pts = SHAPE_FNS[category_id](rng)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = pts @ rot.T
    pts -= (pts.min(0) + pts.max(0)) / 2
    side = rng.uniform(MIN_OBJECT_SIDE, MAX_OBJECT_SIDE)
    return pts * (side / (pts.max(0) - pts.min(0)).max())


def rasterize(vertices, h, w):
    """Fill a polygon given in pixel-corner coordinates (cv2 uses pixel centres, hence -0.5)."""
    mask = np.zeros((h, w), np.uint8)
    pts = np.round((vertices - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


# ------------------------------------------------------------------------------------------ background


def _smooth_field(rng, h, w, channels, cells, sigma):
    """Low-frequency noise: a coarse random grid upsampled with bicubic interpolation."""
    gh, gw = int(rng.integers(cells[0], cells[1] + 1)), int(rng.integers(cells[0], cells[1] + 1))
    grid = rng.normal(0.0, sigma, (gh, gw, channels)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, channels)


def make_background(rng, h, w):
    """Smooth colour gradient between random corner colours plus low-frequency colour noise."""
    corners = rng.uniform(30, 225, (2, 2, 3)).astype(np.float32)
    img = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)
    img += _smooth_field(rng, h, w, 3, (3, 8), rng.uniform(8, 25))
    img += _smooth_field(rng, h, w, 1, (10, 24), rng.uniform(3, 10))  # finer mottling, grey
    return np.clip(img, 0, 255).astype(np.uint8)


def _random_color(rng):
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def draw_distractors(rng, img):
    """Unannotated clutter (lines, dots, thin arcs) so the model must learn shape, not 'anything'."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(2, 9))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p1, p2, _random_color(rng), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(int(rng.integers(5, 31))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.integers(1, 4)), _random_color(rng), -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 6))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(10, 81)), int(rng.integers(10, 81)))
        start = float(rng.uniform(0, 360))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), start, start + float(rng.uniform(30, 200)),
                    _random_color(rng), 1, cv2.LINE_AA)
    return img


# ------------------------------------------------------------------------------------------ objects


def has_holes(mask):
    """True if the mask encloses background (a polygon outline would wrongly cover it)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return False
    crop = np.pad(mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.uint8), 1)
    _, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool(np.any(hierarchy[0][:, 3] >= 0))


def occlusion_ok(placed, mask):
    """Would drawing ``mask`` on top keep every earlier object mostly visible and hole-free?"""
    for obj in placed:
        if not np.any(obj.visible & mask):
            continue
        remaining = obj.visible & ~mask
        if remaining.sum() < max(MIN_VISIBLE_PX, PLACE_MIN_VISIBLE_FRAC * obj.area) or has_holes(remaining):
            return False
    return True


def place_object(rng, category_id, placed, h, w):
    """Try random shapes/positions until one fits the occlusion rules; None if none does."""
    for _ in range(PLACE_TRIES):
        pts = sample_shape(rng, category_id)
        lo, hi = pts.min(0), pts.max(0)
        offset = np.array([rng.uniform(-lo[0], w - hi[0]), rng.uniform(-lo[1], h - hi[1])])
        vertices = pts + offset
        mask = rasterize(vertices, h, w)
        if mask.sum() >= MIN_FULL_AREA and occlusion_ok(placed, mask):
            return vertices, mask
    return None


def _local_colors(img, mask):
    """Mean colour under the object and in a ring around it (its 'local background')."""
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~mask
    inside = img[mask].reshape(-1, 3).astype(np.float32).mean(0)
    around = img[ring].reshape(-1, 3).astype(np.float32).mean(0) if ring.any() else inside
    return inside, around


def pick_color(rng, img, mask, tries=40):
    """Random colour far from the local background; the best candidate if none is far enough."""
    refs = _local_colors(img, mask)
    best, best_dist = None, -1.0
    for _ in range(tries):
        color = rng.integers(0, 256, 3).astype(np.float32)
        dist = min(float(np.linalg.norm(color - ref)) for ref in refs)
        if dist > best_dist:
            best, best_dist = color, dist
        if dist >= MIN_COLOR_DIST:
            break
    return best


def paint_object(rng, img, mask, color):
    """Fill with the colour plus a gentle linear shading, so objects are not perfectly flat."""
    ys, xs = np.nonzero(mask)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    proj = (xs - xs.mean()) * direction[0] + (ys - ys.mean()) * direction[1]
    span = max(float(np.abs(proj).max()), 1.0)
    shade = (proj / span * rng.uniform(0, 25))[:, None]
    img[ys, xs] = np.clip(color[None, :] + shade, 0, 255).astype(np.uint8)


def finish_image(rng, img):
    """Camera-like blur (sometimes) and fine per-pixel noise over everything."""
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), float(rng.uniform(0.3, 0.9)))
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 7))
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def render_image(rng, min_size=256, max_size=384):
    """Draw one image; returns ``(rgb uint8 [H,W,3], objects)`` with objects in drawing order.

    Each object's ``visible`` mask already excludes later objects; this is what the annotations and
    the semantic map are made from (exposed so tests can compare against the written files).
    """
    w = int(rng.integers(min_size, max_size + 1))
    h = int(rng.integers(min_size, max_size + 1))
    img = draw_distractors(rng, make_background(rng, h, w))
    placed = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        category_id = int(rng.integers(1, len(CATEGORIES) + 1))
        fit = place_object(rng, category_id, placed, h, w)
        if fit is None:
            continue
        vertices, mask = fit
        color = pick_color(rng, img, mask)
        paint_object(rng, img, mask, color)
        for obj in placed:
            obj.visible &= ~mask
        placed.append(ShapeObject(category_id, vertices, mask, mask.copy(), tuple(int(c) for c in color)))
    return finish_image(rng, img), placed


# ------------------------------------------------------------------------------------------ annotations


def _drop_collinear(pts):
    """Remove vertices that continue straight on (lossless, keeps the JSON small)."""
    prev_d = pts - np.roll(pts, 1, 0)
    next_d = np.roll(pts, -1, 0) - pts
    cross = prev_d[:, 0] * next_d[:, 1] - prev_d[:, 1] * next_d[:, 0]
    dot = (prev_d * next_d).sum(1)
    return pts[~((cross == 0) & (dot > 0))]


def mask_to_polygons(mask):
    """Exact pixel-corner outlines of each external region, as flat float lists for COCO.

    ``findContours`` returns boundary *pixels*; on a 2x nearest-upsampled mask a boundary up-pixel ``q``
    lies on the left/top (even q) or right/bottom (odd q) half of pixel ``q // 2``, so ``(q + 1) // 2``
    is the pixel corner on the outline. pycocotools rasterises such polygons back to the same pixels.
    Holes are not representable (placement avoids them); every external contour becomes a polygon.
    """
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        pts = (contour.reshape(-1, 2) + 1) // 2
        pts = pts[np.any(pts != np.roll(pts, 1, 0), 1)]
        pts = _drop_collinear(pts) if len(pts) >= 3 else pts
        if len(pts) >= 3:
            polygons.append([float(v) for v in pts.ravel()])
    return polygons


def tight_bbox(mask):
    """COCO ``[x, y, w, h]`` of the mask's pixels (pixel-corner convention)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def is_annotated(obj):
    """Too-hidden objects are dropped from the annotations (a guard; placement rarely allows them)."""
    return obj.visible_area >= MIN_VISIBLE_PX and obj.visible_area >= MIN_VISIBLE_FRAC * obj.area


def annotate_objects(objects):
    """COCO annotation dicts (without ``id``/``image_id``) for the objects that stay annotated."""
    anns = []
    for obj in objects:
        if not is_annotated(obj):
            continue
        polygons = mask_to_polygons(obj.visible)
        if not polygons:
            continue
        anns.append({"category_id": obj.category_id, "segmentation": polygons,
                     "area": float(obj.visible_area), "bbox": tight_bbox(obj.visible), "iscrowd": 0})
    return anns


def semantic_label_map(objects, shape):
    """uint8 label map: class id where an object is visible, 0 elsewhere (pixel truth, like COCO-stuff)."""
    label = np.zeros(shape[:2], np.uint8)
    for obj in objects:
        label[obj.visible] = obj.category_id
    return label


# ------------------------------------------------------------------------------------------ dataset files


def image_rng(seed, split, index):
    """Independent, order-free stream per image (splits use separate seed sequences)."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def _write_bytes(path, ext, array, params):
    ok, buf = cv2.imencode(ext, array, params)
    if not ok:
        raise IOError("could not encode {}".format(path))
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def _coco_skeleton(split):
    return {
        "info": {"description": "ppdet_htc synthetic demo shapes ({})".format(split), "version": DEMO_VERSION,
                 "year": 2024, "contributor": "ppdet_htc.data.demo_shapes", "date_created": "2024-01-01"},
        "licenses": [{"id": 1, "name": "CC0-1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": [],
        "annotations": [],
        "categories": [dict(c) for c in CATEGORIES],
    }


def generate_split(root, split, num_images, seed, min_size, max_size, bar=None):
    """Write one split's images (+ semantic maps for train) and return its COCO dict."""
    img_dir = os.path.join(root, split)
    sem_dir = os.path.join(root, "stuffthingmaps", split)
    os.makedirs(img_dir, exist_ok=True)
    if split == "train":
        os.makedirs(sem_dir, exist_ok=True)
    coco = _coco_skeleton(split)
    for index in range(num_images):
        image, objects = render_image(image_rng(seed, split, index), min_size, max_size)
        image_id, stem = index + 1, "{:06d}".format(index + 1)
        h, w = image.shape[:2]
        _write_bytes(os.path.join(img_dir, stem + ".jpg"), ".jpg", image[:, :, ::-1], JPEG_PARAMS)
        if split == "train":
            _write_bytes(os.path.join(sem_dir, stem + ".png"), ".png", semantic_label_map(objects, image.shape),
                         PNG_PARAMS)
        coco["images"].append({"id": image_id, "file_name": stem + ".jpg", "width": w, "height": h})
        for ann in annotate_objects(objects):
            coco["annotations"].append(dict({"id": len(coco["annotations"]) + 1, "image_id": image_id}, **ann))
        if bar is not None:
            bar.update(1)
    return coco


def _params(num_train, num_val, seed, min_size, max_size):
    """Validated generation parameters as stored in the ``DONE`` marker."""
    if num_train < 0 or num_val < 0:
        raise UsageError("image counts must be >= 0, got num_train={} num_val={}".format(num_train, num_val))
    if not MIN_IMAGE_SIDE <= min_size <= max_size:
        raise UsageError("need {} <= min_size <= max_size (the largest objects must fit), got {} and {}".format(
            MIN_IMAGE_SIDE, min_size, max_size))
    return {"num_train": int(num_train), "num_val": int(num_val), "seed": int(seed),
            "min_size": int(min_size), "max_size": int(max_size)}


def read_marker(root):
    """The parsed ``DONE`` marker, or None if missing/unreadable (i.e. not a complete dataset)."""
    try:
        with open(os.path.join(root, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _check_replaceable(root):
    """Refuse to replace a directory that does not look like a demo dataset (protects user data)."""
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise FileExistsError("{} exists and is not a directory".format(root))
        return
    extra = set(os.listdir(root)) - LAYOUT_NAMES
    if extra:
        raise FileExistsError("refusing to replace {}: it holds files that are not part of a demo dataset: {}"
                              .format(root, ", ".join(sorted(extra)[:5])))


def _swap_into_place(tmp, root):
    """Rename the finished temp dir to ``root``; the old copy is moved aside first, then deleted."""
    old = None
    if os.path.exists(root):
        old = tempfile.mkdtemp(prefix=".{}.old-".format(os.path.basename(root)), dir=os.path.dirname(root))
        os.rmdir(old)
        os.rename(root, old)
    os.rename(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def generate_demo_dataset(root, num_train=600, num_val=60, seed=2024, min_size=256, max_size=384, progress=True):
    """(Re)generate the dataset at ``root``; built in a temp dir beside it and renamed in at the end."""
    root = os.path.abspath(root)
    params = _params(num_train, num_val, seed, min_size, max_size)
    with _exclusive(root):
        _regenerate(root, params, progress)
    return root


def _regenerate(root, params, progress):
    """Build into a fresh temp sibling of ``root`` and swap it in; the caller holds the lock."""
    _check_replaceable(root)
    _remove_stale_siblings(root)
    tmp = tempfile.mkdtemp(prefix=".{}.tmp-".format(os.path.basename(root)), dir=os.path.dirname(root))
    try:
        _generate_into(tmp, params, progress)
        _swap_into_place(tmp, root)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_siblings(root):
    """Delete temp/old copies left by a killed run (safe: we hold the lock, nobody else writes them)."""
    parent, name = os.path.dirname(root), os.path.basename(root)
    for entry in os.listdir(parent):
        if entry.startswith((".{}.tmp-".format(name), ".{}.old-".format(name))):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _generate_into(out, params, progress):
    """Write both splits, their JSON and finally the ``DONE`` marker into ``out``."""
    from ..utils.progress import progress as progress_reporter

    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    total = params["num_train"] + params["num_val"]
    with progress_reporter(total=total, desc="demo_shapes", unit="img", enabled=progress) as bar:
        for split in ("train", "val"):
            coco = generate_split(out, split, params["num_" + split], params["seed"], params["min_size"],
                                  params["max_size"], bar)
            with open(os.path.join(out, "annotations", "instances_{}.json".format(split)), "w") as f:
                json.dump(coco, f, separators=(",", ":"))
    with open(os.path.join(out, MARKER), "w") as f:
        json.dump({"version": DEMO_VERSION, "params": params}, f, sort_keys=True, indent=1)


def default_demo_root():
    """``$PPDET_HTC_DEMO_DIR``; else ``<repo root>/dataset/demo_shapes`` in a source checkout, or
    ``$PPDET_HTC_HOME/datasets/demo_shapes`` (default ``~/.cache/ppdet_htc``) for an installed package,
    which must not write into site-packages."""
    from ..utils.resources import REPO_ROOT, in_checkout, user_home

    env = os.environ.get(ENV_ROOT)
    if env:
        return os.path.abspath(env)
    if in_checkout():
        return os.path.join(REPO_ROOT, "dataset", "demo_shapes")
    return os.path.join(user_home(), "datasets", "demo_shapes")


@contextlib.contextmanager
def _exclusive(root):
    """Serialise generators of one root (e.g. several training ranks) with an flock beside it."""
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: best effort without a lock
        yield
        return
    with open(os.path.join(parent, ".{}.lock".format(os.path.basename(root))), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_demo_dataset(root=None, **kw):
    """Generate the dataset unless a complete copy with the same version and parameters exists."""
    root = os.path.abspath(root or default_demo_root())
    progress = kw.pop("progress", True)
    defaults = {"num_train": 600, "num_val": 60, "seed": 2024, "min_size": 256, "max_size": 384}
    unknown = set(kw) - set(defaults)
    if unknown:
        raise TypeError("unknown demo dataset parameter(s): {}".format(", ".join(sorted(unknown))))
    params = _params(**dict(defaults, **kw))
    with _exclusive(root):
        if read_marker(root) != {"version": DEMO_VERSION, "params": params}:
            _regenerate(root, params, progress)
    return root


def main(argv=None):
    """CLI: ``python -m ppdet_htc.data.demo_shapes [--root DIR] [--num_train N] ... [--force]``."""
    parser = argparse.ArgumentParser(description="Generate the synthetic demo_shapes COCO dataset.")
    parser.add_argument("--root", default=None, help="output dir (default: ${} or <repo>/dataset/demo_shapes)"
                        .format(ENV_ROOT))
    parser.add_argument("--num_train", type=int, default=600)
    parser.add_argument("--num_val", type=int, default=60)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--min_size", type=int, default=256)
    parser.add_argument("--max_size", type=int, default=384)
    parser.add_argument("--force", action="store_true", help="regenerate even if an up-to-date copy exists")
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback too")
    args = parser.parse_args(argv)
    params = _params(args.num_train, args.num_val, args.seed, args.min_size, args.max_size)
    root = os.path.abspath(args.root or default_demo_root())
    if args.force:
        generate_demo_dataset(root, progress=True, **params)
    else:
        ensure_demo_dataset(root, progress=True, **params)
    print(root)
    return root


if __name__ == "__main__":
    from ..cli import _run  # the commands' error handling: a user error is one line, exit code 2

    _run(main, None)

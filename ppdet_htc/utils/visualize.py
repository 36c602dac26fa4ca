"""Draw detections (translucent masks, boxes, "name score" labels) on an RGB image and save it.

Colours are a fixed function of the class index, so a class looks the same in every image.
Masks are blended in one vectorised pass; where masks overlap the higher-scoring one is on top.
Label tags are placed greedily (best detection first) where they cover no other tag, so crowded scenes
stay legible; a tag pushed away from its box gets a thin leader line.
"""
import colorsys
import os

import cv2
import numpy as np

from .io import atomic_save_bytes

__all__ = ["class_colors", "draw_detections", "save_visualization", "place_labels"]

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colors(num_classes):
    """RGB uint8 palette ``[num_classes, 3]``; hues step by the golden ratio so neighbours differ."""
    colors = np.empty((max(int(num_classes), 0), 3), dtype=np.uint8)
    for i in range(len(colors)):
        hue = (0.05 + i * _GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation = 0.85 if i % 2 == 0 else 0.65
        r, g, b = colorsys.hsv_to_rgb(hue, saturation, 0.95)
        colors[i] = (round(r * 255), round(g * 255), round(b * 255))
    return colors


def _as_detections(image_rgb, boxes, scores, labels, masks):
    """Validate inputs so a shape mistake is reported by name instead of drawing garbage."""
    image = np.asarray(image_rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image_rgb must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    k = len(scores)
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size == 0 and k == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.shape != (k, 4):
        raise ValueError(f"boxes must have shape [{k}, 4] to match scores, got {boxes.shape}")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.shape != (k,):
        raise ValueError(f"labels must have {k} entries to match scores, got {labels.shape}")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != (k,) + image.shape[:2]:
            raise ValueError(f"masks must have shape [{k}, {image.shape[0]}, {image.shape[1]}], got {masks.shape}")
    return image, boxes, scores, labels, masks


def _blend_masks(canvas, masks, colors, alpha):
    """Blend binary masks ``[n,H,W]`` (last one on top) with per-mask ``colors`` [n,3] into ``canvas``."""
    covered = masks.any(axis=0)
    if not covered.any():
        return canvas
    top = len(masks) - 1 - np.argmax(masks[::-1], axis=0)  # last mask that covers each pixel
    ys, xs = np.nonzero(covered)
    pixels = canvas[ys, xs].astype(np.float32)
    tint = colors[top[ys, xs]].astype(np.float32)
    canvas[ys, xs] = np.clip(np.rint(pixels * (1.0 - alpha) + tint * alpha), 0, 255).astype(np.uint8)
    return canvas


def _label_text(label, score, class_names):
    if class_names is None:
        return f"{label} {score:.2f}"
    if label >= len(class_names):
        raise ValueError(f"label {label} has no entry in class_names ({len(class_names)} names)")
    return f"{class_names[label]} {score:.2f}"


def _draw_box(canvas, box, color, thickness):
    height, width = canvas.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = np.clip([x1, x2], 0, width - 1).tolist()
    y1, y2 = np.clip([y1, y2], 0, height - 1).tolist()
    cv2.rectangle(canvas, (x1, y1), (x2, y2), tuple(int(c) for c in color), thickness)
    return x1, y1, x2, y2


def _overlap(a, b):
    """Intersection area of two ``(x1, y1, x2, y2)`` rectangles (exclusive of touching edges)."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _candidates(box, w, h, width, height, max_shift):
    """Tag positions for ``box`` in order of preference: above / inside the top edge, below / inside the
    bottom edge (left, then right aligned), then further up or down in steps of one tag height."""
    x1, y1, x2, y2 = box
    xs = [x1, x2 - w]
    ys = [y1 - h, y1, y2, y2 - h]
    for k in range(1, max_shift + 1):
        ys += [y1 - h - k * h, y2 + k * h]
    seen = []
    for y in ys:
        for x in xs:
            x = int(min(max(x, 0), max(width - w, 0)))
            y = int(min(max(y, 0), max(height - h, 0)))
            if (x, y) not in seen:
                seen.append((x, y))
    return seen


def place_labels(boxes, sizes, image_shape, max_shift=8):
    """Greedy tag placement: tag ``i`` (size ``(w, h)``) goes to the first position near box ``i`` that
    stays in the image and covers no tag placed before it; callers pass the best detection first so it
    gets the best spot. When every position collides, the one with the least overlap is used.

    Returns ``[(x, y, w, h), ...]`` (top-left corner and size of each tag).
    """
    height, width = image_shape[:2]
    placed = []
    for box, (w, h) in zip(boxes, sizes):
        best, best_cost = None, None
        for x, y in _candidates(box, w, h, width, height, max_shift):
            rect = (x, y, x + w, y + h)
            cost = sum(_overlap(rect, (px, py, px + pw, py + ph)) for px, py, pw, ph in placed)
            if best is None or cost < best_cost:
                best, best_cost = (x, y), cost
            if cost == 0:
                break
        placed.append((best[0], best[1], w, h))
    return placed


def _tag_size(text, font_scale=0.5):
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, font_scale, 1)
    return text_w + 2, text_h + baseline + 2


def _draw_tag(canvas, tag, box, color, text, font_scale=0.5):
    x, y, w, h = tag
    color = tuple(int(c) for c in color)
    x1, y1, x2, y2 = box
    if y + h < y1 - 1 or y > y2 + 1:  # moved away from its box: a thin leader line shows whose it is
        anchor_y = y1 if y + h < y1 else y2
        cv2.line(canvas, (x + w // 2, y + h if y + h < y1 else y), (min(max(x + w // 2, x1), x2), anchor_y), color, 1,
                 cv2.LINE_AA)
    cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), color, -1)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    text_color = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    (_, text_h), _ = cv2.getTextSize(text, _FONT, font_scale, 1)
    cv2.putText(canvas, text, (x + 1, y + text_h + 1), _FONT, font_scale, text_color, 1, cv2.LINE_AA)


def draw_detections(image_rgb, boxes, scores, labels, masks=None, class_names=None, threshold=0.5, alpha=0.5):
    """Return a copy of ``image_rgb`` (uint8 [H,W,3]) with detections of score >= ``threshold`` drawn.

    ``boxes`` [k,4] x1y1x2y2 in pixels, ``scores`` [k], ``labels`` [k] contiguous class indices,
    ``masks`` [k,H,W] (any nonzero = inside) or None. Rows with a negative label are not drawn.
    ``class_names`` maps labels to text (the label number is shown without it).
    """
    image, boxes, scores, labels, masks = _as_detections(image_rgb, boxes, scores, labels, masks)
    keep = np.flatnonzero((scores >= threshold) & (labels >= 0))
    order = keep[np.argsort(scores[keep], kind="stable")]  # ascending: best drawn last, on top
    canvas = np.ascontiguousarray(image).copy()
    if len(order) == 0:
        return canvas
    palette = class_colors(int(labels[order].max()) + 1)
    colors = palette[labels[order]]
    if masks is not None:
        canvas = _blend_masks(canvas, masks[order] != 0, colors, alpha)
    thickness = max(1, int(round(min(canvas.shape[:2]) / 400)))
    drawn = [_draw_box(canvas, boxes[i], color, thickness) for i, color in zip(order.tolist(), colors)]
    # Tags last, so no box line crosses a tag; the best detection chooses its spot first.
    best_first = list(range(len(order)))[::-1]
    texts = [_label_text(int(labels[order[j]]), float(scores[order[j]]), class_names) for j in best_first]
    tags = place_labels([drawn[j] for j in best_first], [_tag_size(t) for t in texts], canvas.shape)
    for j, tag, text in reversed(list(zip(best_first, tags, texts))):  # if tags must overlap, the best is on top
        _draw_tag(canvas, tag, drawn[j], colors[j], text)
    return canvas


def save_visualization(path, image_rgb, boxes, scores, labels, masks=None, class_names=None, threshold=0.5):
    """Draw detections and write the image to ``path`` atomically; returns the drawn RGB image.

    The format follows the extension of ``path``: the image is encoded in memory by
    ``cv2.imencode`` (RGB converted to BGR) and the bytes are written with ``atomic_save_bytes``,
    so a reader never sees a partial file.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1]
    if not ext:
        raise ValueError(f"cannot choose an image format for {path}: the file name has no extension")
    drawn = draw_detections(image_rgb, boxes, scores, labels, masks, class_names, threshold)
    bgr = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
    try:
        ok, encoded = cv2.imencode(ext, bgr)
    except cv2.error as err:
        raise ValueError(f"cannot encode image for {path} (extension {ext!r}): {err}") from None
    if not ok:
        raise ValueError(f"cannot encode image for {path} (extension {ext!r})")
    atomic_save_bytes(path, encoded.tobytes())
    return drawn

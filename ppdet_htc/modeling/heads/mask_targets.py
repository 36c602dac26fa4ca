"""Mask targets of the mask heads: each foreground RoI's object mask in the RoI's ``M x M`` grid.

Both builders are batched over RoIs (no Python loop per RoI):

* ``polygon_mask_targets``: every polygon of every RoI is moved into its RoI's grid with one array
  expression per object, rasterised with a single pycocotools call, and the polygons of one RoI are
  unioned with ``logical_or.reduceat``. The coordinates are those of the reference: shifted by the
  box corner and scaled by ``M / max(size, 0.1)`` in float64, then rasterised by pycocotools.
* ``bitmap_mask_targets`` (objects annotated as RLE): the full-image bitmap is sampled bilinearly at the
  grid's pixel centres (zero outside the image, the RoIAlign ``aligned=True`` convention) and
  thresholded at 0.5, for all RoIs at once with fancy indexing.
"""
import numpy as np
import pycocotools.mask as mask_util

__all__ = ["polygon_mask_targets", "bitmap_mask_targets"]


def _grid_scale(boxes, resolution):
    """Box corners and the ``M / max(size, 0.1)`` scale per box (float64), as the reference computes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = np.maximum(boxes[:, 2:] - boxes[:, :2], 0.1)
    return boxes[:, :2], resolution / size, size


def polygon_mask_targets(object_polygons, roi_object, boxes, resolution):
    """Rasterise the polygons of each RoI's object inside the RoI.

    object_polygons: list over objects, each a list of flat ``[x0, y0, x1, y1, ...]`` polygons
    (image pixels; polygons with fewer than 3 points are ignored). roi_object ``[N]`` int: the object
    of each RoI. boxes ``[N,4]``: the RoIs. Returns ``[N, M, M]`` float32 in {0, 1}.
    """
    roi_object = np.asarray(roi_object, dtype=np.int64).reshape(-1)
    n = roi_object.shape[0]
    out = np.zeros((n, resolution, resolution), dtype=np.float32)
    if n == 0:
        return out
    corner, scale, _ = _grid_scale(boxes, resolution)
    pieces, owners = [], []
    for obj in np.unique(roi_object):
        polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in (object_polygons[obj] or [])
                 if len(p) >= 6]
        if not polys:
            continue
        rois = np.nonzero(roi_object == obj)[0]
        verts = np.concatenate(polys)                                        # [V, 2]
        moved = (verts[None] - corner[rois, None]) * scale[rois, None]      # [R, V, 2]
        # Cut the flattened [R*V, 2] vertices at every polygon end of every RoI (one split per object).
        ends = np.cumsum([len(p) for p in polys])
        cuts = (np.arange(len(rois))[:, None] * len(verts) + ends[None]).reshape(-1)[:-1]
        pieces.extend(piece.reshape(-1) for piece in np.split(moved.reshape(-1, 2), cuts))
        owners.append(np.repeat(rois, len(polys)))
    if not pieces:
        return out
    owners = np.concatenate(owners)
    order = np.argsort(owners, kind="stable")
    rles = mask_util.frPyObjects([pieces[i] for i in order], resolution, resolution)
    decoded = mask_util.decode(rles)                                         # [M, M, P] uint8
    owners = owners[order]
    starts = np.concatenate([[0], np.nonzero(np.diff(owners))[0] + 1])
    union = np.logical_or.reduceat(decoded.astype(bool), starts, axis=2)     # [M, M, R']
    out[owners[starts]] = np.transpose(union, (2, 0, 1))
    return out


def bitmap_mask_targets(bitmaps, roi_object, boxes, resolution):
    """Sample each RoI's object bitmap in the RoI's grid and threshold at 0.5.

    bitmaps ``[G, H, W]`` (one image's object masks), roi_object ``[N]`` int indexes them, boxes ``[N,4]``.
    Grid pixel ``i`` of a box samples source x ``x1 + (i + 0.5) * w / M - 0.5`` (same for y), bilinear,
    zero outside the image. Returns ``[N, M, M]`` float32 in {0, 1}.
    """
    bitmaps = np.asarray(bitmaps, dtype=np.float32)
    roi_object = np.asarray(roi_object, dtype=np.int64).reshape(-1)
    n = roi_object.shape[0]
    if n == 0:
        return np.zeros((0, resolution, resolution), dtype=np.float32)
    _, h, w = bitmaps.shape
    corner, _, size = _grid_scale(boxes, resolution)
    steps = np.arange(resolution, dtype=np.float64) + 0.5
    xs = corner[:, 0:1] + steps[None] * (size[:, 0:1] / resolution) - 0.5    # [N, M]
    ys = corner[:, 1:2] + steps[None] * (size[:, 1:2] / resolution) - 0.5
    x0 = np.floor(xs).astype(np.int64)
    y0 = np.floor(ys).astype(np.int64)
    fx = xs - x0
    fy = ys - y0
    g = roi_object[:, None, None]
    acc = np.zeros((n, resolution, resolution), dtype=np.float64)
    for dy in (0, 1):
        yy = y0 + dy
        wy = fy if dy else 1.0 - fy
        y_ok = (yy >= 0) & (yy < h)
        for dx in (0, 1):
            xx = x0 + dx
            wx = fx if dx else 1.0 - fx
            x_ok = (xx >= 0) & (xx < w)
            vals = bitmaps[g, np.clip(yy, 0, h - 1)[:, :, None], np.clip(xx, 0, w - 1)[:, None, :]]
            valid = y_ok[:, :, None] & x_ok[:, None, :]
            acc += np.where(valid, vals, 0.0) * (wy[:, :, None] * wx[:, None, :])
    return (acc >= 0.5).astype(np.float32)

"""A tiny COCO ground-truth file: polygons, a compressed RLE, a crowd RLE, category ids 1/5/9."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

CATEGORIES = [
    {"id": 1, "name": "cat", "supercategory": "animal"},
    {"id": 5, "name": "dog", "supercategory": "animal"},
    {"id": 9, "name": "bird", "supercategory": "animal"},
]
IMAGES = [
    {"id": 1, "file_name": "a.jpg", "height": 120, "width": 160},
    {"id": 2, "file_name": "b.jpg", "height": 50, "width": 70},
    {"id": 3, "file_name": "c.jpg", "height": 40, "width": 40},
    {"id": 7, "file_name": "d.jpg", "height": 30, "width": 50},
]


def _uncompressed_rle(mask):
    """Column-major run lengths starting with a run of zeros (COCO's crowd format)."""
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def _polygon_ann(ann_id, image, cat_id, polygon):
    h, w = image["height"], image["width"]
    rle = mask_util.merge(mask_util.frPyObjects([polygon], h, w))
    return {
        "id": ann_id,
        "image_id": image["id"],
        "category_id": cat_id,
        "segmentation": [polygon],
        "area": float(mask_util.area(rle)),
        "bbox": mask_util.toBbox(rle).tolist(),
        "iscrowd": 0,
    }


def _mask_ann(ann_id, image, cat_id, mask, crowd):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    if crowd:
        segmentation = _uncompressed_rle(mask.astype(np.uint8))
    else:
        segmentation = {"size": rle["size"], "counts": rle["counts"].decode("utf-8")}
    return {
        "id": ann_id,
        "image_id": image["id"],
        "category_id": cat_id,
        "segmentation": segmentation,
        "area": float(mask_util.area(rle)),
        "bbox": mask_util.toBbox(rle).tolist(),
        "iscrowd": int(crowd),
    }


def build_gt():
    img1, img2, img3, img4 = IMAGES
    anns = [
        _polygon_ann(1, img1, 1, [10, 10, 60, 10, 60, 60, 10, 60]),  # medium square
        _polygon_ann(2, img1, 5, [80, 20, 150, 20, 115, 100]),  # triangle
        _polygon_ann(3, img3, 9, [5, 5, 30, 8, 25, 35, 8, 28]),
        _polygon_ann(4, img4, 1, [2, 2, 20, 2, 20, 20, 2, 20]),
        _polygon_ann(5, img4, 1, [25, 5, 45, 5, 45, 25, 25, 25]),
        _polygon_ann(6, img2, 5, [40, 5, 65, 5, 65, 45, 40, 45]),
    ]
    ring = np.zeros((50, 70), np.uint8)
    ring[8:40, 5:35] = 1
    ring[16:30, 12:26] = 0  # a hole: only expressible as RLE
    anns.append(_mask_ann(7, img2, 9, ring, crowd=False))
    crowd = np.zeros((120, 160), np.uint8)
    crowd[70:115, 5:70] = 1
    anns.append(_mask_ann(8, img1, 1, crowd, crowd=True))
    return {"images": IMAGES, "annotations": anns, "categories": CATEGORIES}


@pytest.fixture
def gt_path(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(build_gt()))
    return str(path)

"""Tiny COCO-format datasets written to a temporary folder (images drawn with cv2)."""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util

# Deliberately not in ascending id order: labels follow the file order (pycocotools' getCatIds()).
CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 9, "name": "bird"}]


def rect_poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def rect_rle(h, w, y0, y1, x0, x1, compressed=True):
    """RLE of the pixel rectangle rows [y0, y1) x cols [x0, x1)."""
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    if compressed:
        rle = mask_util.encode(np.asfortranarray(m))
        return {"size": [h, w], "counts": rle["counts"].decode("ascii")}
    # uncompressed: run lengths over the column-major flattening, starting with zeros
    flat = m.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": [h, w], "counts": counts}


def write_image(path, h, w, seed):
    rng = np.random.default_rng(seed)
    im = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    cv2.rectangle(im, (1, 1), (w // 2, h // 2), (255, 0, 0), -1)
    assert cv2.imwrite(str(path), im)


def standard_spec():
    """Images 1-3 usable; 4 has no annotation; 5 has only a crowd annotation."""
    images = [
        {"id": 3, "file_name": "img_c.jpg", "height": 30, "width": 40},
        {"id": 1, "file_name": "img_a.jpg", "height": 24, "width": 32},
        {"id": 2, "file_name": "img_b.png", "height": 36, "width": 48},
        {"id": 4, "file_name": "img_d.jpg", "height": 20, "width": 20},
        {"id": 5, "file_name": "img_e.jpg", "height": 26, "width": 30},
    ]
    anns = [
        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [1.23456, 2, 10, 5], "area": 50, "iscrowd": 0,
         "segmentation": rect_poly(1.23456, 2, 11.23456, 7)},
        {"id": 12, "image_id": 1, "category_id": 9, "bbox": [0, 0, 0, 0], "area": 0, "iscrowd": 0,
         "segmentation": rect_poly(0, 0, 1, 1)},
        {"id": 13, "image_id": 1, "category_id": 7, "bbox": [3, 3, 4, 4], "area": 16, "iscrowd": 0, "ignore": 1,
         "segmentation": rect_poly(3, 3, 7, 7)},
        {"id": 21, "image_id": 2, "category_id": 7, "bbox": [5, 6, 10, 12], "area": 120, "iscrowd": 0,
         "segmentation": rect_rle(36, 48, 6, 18, 5, 15, compressed=False)},
        {"id": 22, "image_id": 2, "category_id": 9, "bbox": [1, 1, 0, 5], "area": 10, "iscrowd": 0,
         "segmentation": rect_poly(1, 1, 2, 6)},
        {"id": 31, "image_id": 3, "category_id": 9, "bbox": [2, 3, 4, 5], "area": 0, "iscrowd": 0,
         "segmentation": rect_poly(2, 3, 6, 8)},
        {"id": 32, "image_id": 3, "category_id": 2, "bbox": [10, 10, 8, 6], "area": 48, "iscrowd": 0,
         "segmentation": rect_poly(10, 10, 18, 16)},
        {"id": 33, "image_id": 3, "category_id": 9, "bbox": [20, 5, 10, 10], "area": 100, "iscrowd": 0,
         "segmentation": rect_poly(20, 5, 30, 15)},
        {"id": 51, "image_id": 5, "category_id": 7, "bbox": [2, 2, 6, 6], "area": 36, "iscrowd": 1,
         "segmentation": rect_rle(26, 30, 2, 8, 2, 8)},
    ]
    return {"images": images, "annotations": anns, "categories": [dict(c) for c in CATEGORIES]}


def write_coco(root, spec=None, image_dir="images", anno_name="annotations/instances.json", skip_images=()):
    """Write ``spec`` (default ``standard_spec()``) and its images under ``root``; return the paths."""
    spec = standard_spec() if spec is None else spec
    root = str(root)
    os.makedirs(os.path.join(root, image_dir), exist_ok=True)
    anno_path = os.path.join(root, anno_name)
    os.makedirs(os.path.dirname(anno_path), exist_ok=True)
    for img in spec["images"]:
        if "file_name" not in img or img["file_name"] in skip_images:
            continue
        write_image(os.path.join(root, image_dir, img["file_name"]), img["height"], img["width"], img["id"])
    with open(anno_path, "w") as f:
        json.dump(spec, f)
    return {"dataset_dir": root, "image_dir": image_dir, "anno_path": anno_name, "anno_file": anno_path}

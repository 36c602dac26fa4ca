"""Inference on image files: one drawn picture per image plus a COCO-format results file."""
import logging
import os

import numpy as np

from ..metrics.coco_eval import detections_to_coco
from ..utils.io import write_json_atomic
from ..utils.progress import progress
from ..utils.visualize import save_visualization

__all__ = ["run_inference", "results_records", "dataset_image_ids", "list_image_files", "RESULTS_FILE"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


def results_records(dets, clsid2catid, file_names):
    """COCO result records with both ``bbox`` ([x, y, w, h]) and ``segmentation`` (RLE) per detection.

    ``file_names`` maps image id -> image path; records also carry ``file_name`` for convenience.
    """
    records = []
    for det in dets:
        boxes, masks = detections_to_coco(det, clsid2catid)
        if det.get("masks") is not None and len(masks) != len(boxes):
            raise RuntimeError("internal error: {} boxes but {} masks".format(len(boxes), len(masks)))
        for i, b in enumerate(boxes):
            rec = dict(b)
            rec["file_name"] = os.path.basename(file_names.get(det["im_id"], ""))
            if masks:
                rec["segmentation"] = masks[i]["segmentation"]
            records.append(rec)
    return records


def dataset_image_ids(dataset):
    """``{file name: image id}`` from the test dataset's annotation file when it exists (else empty).

    Only the annotation file is read: a dataset that would have to be generated or downloaded is not.
    """
    reader = getattr(dataset, "image_ids_by_file", None)
    if reader is None:
        return {}
    try:
        by_name = reader()
    except (FileNotFoundError, ValueError) as e:
        logger.debug("no image ids from %r: %s", dataset, e)
        return {}
    ids = {}
    for name, im_id in by_name.items():
        ids.setdefault(os.path.basename(name), int(im_id))
    return ids


class _ImageRecords(object):
    """``{im_file, im_id}`` records of a list of image paths (a fresh dict per access: transforms fill it)."""

    def __init__(self, images):
        self.images = [os.fspath(p) for p in images]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"im_file": self.images[index], "im_id": np.array([index], dtype=np.int64)}


def _image_reader(detector, images, batch_size, worker_num):
    """Batches of ``images`` decoded and preprocessed by ``worker_num`` worker processes (0: inline), in order,
    so that loading the next images overlaps with the model."""
    from ..data.loader import Reader

    return Reader(_ImageRecords(images), detector.sample_transforms, detector.batch_transforms, batch_size=batch_size,
                  worker_num=worker_num, name="infer")


def run_inference(detector, images, output_dir="output", draw_threshold=0.5, batch_size=1, save_images=True,
                  image_ids=None, worker_num=None):
    """Detect on ``images`` (paths) with a :class:`Detector`; write pictures and ``results.json``.

    ``image_ids`` maps file names to the ``image_id`` written in ``results.json`` (e.g. those of a COCO
    annotation file, see :func:`dataset_image_ids`); other images get ids after the largest known one
    (0, 1, ... without a map). ``worker_num``: processes that decode and preprocess the next images while the
    model runs (default: the config's ``worker_num``, at most 2; none for a single batch).
    Returns ``(path of results.json, list of per-image detections)``.
    """
    import cv2

    os.makedirs(output_dir, exist_ok=True)
    image_ids = dict(image_ids or {})
    next_id = max(image_ids.values(), default=-1) + 1
    if worker_num is None:
        worker_num = min(int(detector.cfg.get("worker_num", 0) or 0), 2)
    if len(images) <= batch_size:
        worker_num = 0
    all_dets = []
    file_names = {}
    bar = progress(total=len(images), desc="infer", unit="img")
    for batch in _image_reader(detector, images, batch_size, worker_num):
        dets = detector.detect_batch(batch)
        for det in dets:
            path = images[det["im_id"]]
            im_id = image_ids.get(os.path.basename(path))
            if im_id is None:
                im_id, next_id = next_id, next_id + 1
            det["im_id"] = im_id
            file_names[det["im_id"]] = path
            if save_images:
                bgr = cv2.imread(path, cv2.IMREAD_COLOR)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                out = os.path.join(output_dir, os.path.basename(path))
                if os.path.splitext(out)[1].lower() not in (".jpg", ".jpeg", ".png", ".bmp"):
                    out += ".jpg"
                save_visualization(out, rgb, det["boxes"], det["scores"], det["labels"],
                                   masks=det["masks"], class_names=detector.class_names, threshold=draw_threshold)
            all_dets.append(det)
        bar.update(len(dets))
    bar.close()
    records = results_records(all_dets, detector.clsid2catid, file_names)
    path = os.path.join(output_dir, RESULTS_FILE)
    write_json_atomic(path, records)
    n = sum(int((d["scores"] >= draw_threshold).sum()) for d in all_dets)
    logger.info("%d images, %d detections (%d with score >= %.2f); pictures and %s in %s",
                len(images), len(records), n, draw_threshold, RESULTS_FILE, output_dir)
    return path, all_dets


def list_image_files(infer_img=None, infer_dir=None):
    """Images from ``--infer_img`` (one file) and/or ``--infer_dir`` (a folder), with clear errors."""
    from ..data.image_folder import list_images

    paths = []
    if infer_img:
        if not os.path.isfile(infer_img):
            raise FileNotFoundError("--infer_img: image file not found: {}".format(infer_img))
        paths.append(os.path.abspath(infer_img))
    if infer_dir:
        if not os.path.isdir(infer_dir):
            raise FileNotFoundError("--infer_dir: folder not found: {}".format(infer_dir))
        paths.extend(list_images([infer_dir]))
    if not paths:
        raise ValueError("give --infer_img FILE or --infer_dir DIR")
    return list(dict.fromkeys(paths))

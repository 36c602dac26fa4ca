"""Inference on image files: one drawn picture per image plus a COCO-format results file."""
import logging
import os

from tqdm import tqdm

from ..metrics.coco_eval import detections_to_coco
from ..errors import UsageError
from ..utils.io import write_json_atomic
from ..utils.visualize import save_visualization

__all__ = ["run_inference", "results_records", "RESULTS_FILE"]

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


def run_inference(detector, images, output_dir="output", draw_threshold=0.5, batch_size=1, save_images=True):
    """Detect on ``images`` (paths) with a :class:`Detector`; write pictures and ``results.json``.

    Returns ``(path of results.json, list of per-image detections)``.
    """
    import cv2

    os.makedirs(output_dir, exist_ok=True)
    all_dets = []
    file_names = {}
    bar = tqdm(total=len(images), desc="infer", unit="img", disable=None)
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        dets = detector.predict(list(chunk), batch_size=len(chunk))
        for i, (path, det) in enumerate(zip(chunk, dets)):
            det["im_id"] = start + i
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
        bar.update(len(chunk))
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
        raise UsageError("give --infer_img FILE or --infer_dir DIR")
    return list(dict.fromkeys(paths))

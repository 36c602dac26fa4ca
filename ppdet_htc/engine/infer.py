"""Inference on image files: one drawn picture per image plus a COCO-format results file."""
import logging
import os

import numpy as np

from ..metrics.coco_eval import detections_to_coco
from ..errors import ImageDecodeError, ImagesFailedError, UsageError
from ..utils.io import write_json_atomic
from ..utils.progress import progress
from ..utils.visualize import save_visualization

__all__ = ["run_inference", "results_records", "dataset_image_ids", "list_image_files", "picture_paths",
           "RESULTS_FILE"]

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


_PICTURE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_DRAWN_SUFFIX = "_det"
# A file that cannot be read as an image (or at all): skipped and reported, unless strict.
_UNREADABLE = (ImageDecodeError, OSError)


def _file_id(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def picture_paths(images, output_dir):
    """Where the drawn picture of each input goes: ``output_dir/<input file name>``, unless that would replace
    an input image (``output_dir`` is the input folder, a link to it, ...) or another picture of this run; then
    ``<stem>_det<ext>`` (``_det2``, ... if taken). Returns ``(paths, renamed)``, ``renamed`` = [(input, output)].
    """
    input_ids = {i for i in (_file_id(p) for p in images) if i is not None}
    input_paths = {os.path.normcase(os.path.realpath(p)) for p in images}
    used = set()
    paths, renamed = [], []
    for image in images:
        name = os.path.basename(image)
        if os.path.splitext(name)[1].lower() not in _PICTURE_EXTENSIONS:
            name += ".jpg"
        stem, ext = os.path.splitext(name)
        candidate, k = os.path.join(output_dir, name), 0
        while True:
            key = os.path.normcase(os.path.realpath(candidate))
            clash = key in input_paths or key in used or (_file_id(candidate) in input_ids)
            if k and not clash and os.path.exists(candidate):
                clash = True  # a renamed picture never replaces any existing file
            if not clash:
                break
            k += 1
            candidate = os.path.join(output_dir, "{}{}{}{}".format(stem, _DRAWN_SUFFIX, "" if k == 1 else k, ext))
        used.add(os.path.normcase(os.path.realpath(candidate)))
        paths.append(candidate)
        if k:
            renamed.append((image, candidate))
    return paths, renamed


class _ImageRecords(object):
    """``{im_file, im_id}`` records of a list of image paths (a fresh dict per access: transforms fill it)."""

    def __init__(self, images):
        self.images = [os.fspath(p) for p in images]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"im_file": self.images[index], "im_id": np.array([index], dtype=np.int64)}


# Set on the record of an image that could not be read (its reason), and on a batch: the unreadable images.
_UNREADABLE_KEY = "unreadable"
_SKIPPED_KEY = "skipped_images"


class _SkipUnreadable(object):
    """The detector's sample transforms as one op; an unreadable image becomes a record holding the reason
    instead of an error (``strict``: the error is raised)."""

    def __init__(self, ops, strict):
        self.ops = list(ops)
        self.strict = strict

    def __call__(self, record, rng=None):
        try:
            for op in self.ops:
                record = op(record, rng)
        except _UNREADABLE as e:
            if self.strict:
                raise
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            return {"im_file": record.get("im_file"), "im_id": record.get("im_id"), _UNREADABLE_KEY: reason}
        return record


class _BatchOfReadable(object):
    """The detector's batch transforms on the readable images of a batch; the unreadable ones travel along as
    ``[(path, reason)]`` on the first sample (or on the batch's only record when none is readable)."""

    def __init__(self, ops):
        self.ops = list(ops)

    def __call__(self, samples, rng=None):
        skipped = [(s["im_file"], s[_UNREADABLE_KEY]) for s in samples if _UNREADABLE_KEY in s]
        readable = [s for s in samples if _UNREADABLE_KEY not in s]
        if not readable:
            return [{_SKIPPED_KEY: skipped}]
        for op in self.ops:
            readable = op(readable, rng)
        for i, s in enumerate(readable):
            s[_SKIPPED_KEY] = skipped if i == 0 else []
        return readable


def _image_reader(detector, images, batch_size, worker_num, strict=False):
    """Batches of ``images`` decoded and preprocessed by ``worker_num`` worker processes (0: inline), in order,
    so that loading the next images overlaps with the model. Each batch has ``skipped_images``: a list per
    sample of ``(path, reason)`` of the batch's unreadable images (a batch of only unreadable images has no
    ``image``)."""
    from ..data.loader import Reader

    return Reader(_ImageRecords(images), [_SkipUnreadable(detector.sample_transforms, strict)],
                  [_BatchOfReadable(detector.batch_transforms)], batch_size=batch_size, worker_num=worker_num,
                  name="infer")


def run_inference(detector, images, output_dir="output", draw_threshold=0.5, batch_size=1, save_images=True,
                  image_ids=None, strict=False, worker_num=None):
    """Detect on ``images`` (paths) with a :class:`Detector`; write pictures and ``results.json``.

    ``image_ids`` maps file names to the ``image_id`` written in ``results.json`` (e.g. those of a COCO
    annotation file, see :func:`dataset_image_ids`); other images get ids after the largest known one
    (0, 1, ... without a map).
    Inputs are never overwritten: see :func:`picture_paths`. An image that cannot be read is skipped (named
    in a warning); the results of all the others are written, then :class:`ImagesFailedError` names the
    skipped files. ``strict=True`` raises at the first unreadable image instead.
    ``worker_num``: processes that decode and preprocess the next images while the model runs (default: the
    config's ``worker_num``, at most 2; none for a single batch).
    Returns ``(path of results.json, list of per-image detections)``.
    """
    import cv2

    os.makedirs(output_dir, exist_ok=True)
    image_ids = dict(image_ids or {})
    next_id = max(image_ids.values(), default=-1) + 1
    pictures, renamed = picture_paths(images, output_dir) if save_images else ([None] * len(images), [])
    if renamed:
        logger.warning("--output_dir %s would replace %d input image(s); their drawn pictures are written as "
                       "<name>%s<ext> instead (e.g. %s -> %s), the inputs stay untouched", output_dir, len(renamed),
                       _DRAWN_SUFFIX, os.path.basename(renamed[0][0]), os.path.basename(renamed[0][1]))
    if worker_num is None:
        worker_num = min(int(detector.cfg.get("worker_num", 0) or 0), 2)
    if len(images) <= batch_size:
        worker_num = 0
    all_dets = []
    file_names = {}
    failures = []
    bar = progress(total=len(images), desc="infer", unit="img")
    for batch in _image_reader(detector, images, batch_size, worker_num, strict):
        skipped = [item for per_sample in batch.pop(_SKIPPED_KEY, []) for item in per_sample]
        for path, reason in skipped:
            logger.warning("skipped %s: %s", path, reason)
        failures.extend(skipped)
        dets = detector.detect_batch(batch) if "image" in batch else []
        for det in dets:
            index = det["im_id"]
            path = images[index]
            im_id = image_ids.get(os.path.basename(path))
            if im_id is None or im_id in file_names:  # a second file of that name (another folder): a new id
                im_id, next_id = next_id, next_id + 1
            det["im_id"] = im_id
            file_names[im_id] = path
            if save_images:
                bgr = cv2.imread(path, cv2.IMREAD_COLOR)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                save_visualization(pictures[index], rgb, det["boxes"], det["scores"], det["labels"],
                                   masks=det["masks"], class_names=detector.class_names, threshold=draw_threshold)
            all_dets.append(det)
        bar.update(len(dets) + len(skipped))
    bar.close()
    records = results_records(all_dets, detector.clsid2catid, file_names)
    path = os.path.join(output_dir, RESULTS_FILE)
    write_json_atomic(path, records)
    n = sum(int((d["scores"] >= draw_threshold).sum()) for d in all_dets)
    logger.info("%d images, %d detections (%d with score >= %.2f); pictures and %s in %s",
                len(all_dets), len(records), n, draw_threshold, RESULTS_FILE, output_dir)
    if failures:
        shown = ", ".join("{} ({})".format(p, r) for p, r in failures[:5])
        more = " and {} more".format(len(failures) - 5) if len(failures) > 5 else ""
        raise ImagesFailedError(
            "{} of {} images could not be read and have no results: {}{}; the results of the other {} are in {} "
            "(fix or remove the listed files, or use --strict to stop at the first one)".format(
                len(failures), len(images), shown, more, len(all_dets), path), failures=failures, results_path=path)
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

"""Python API for inference: ``Detector(config, weights).predict(images)``."""
import os

import numpy as np
import paddle

from ..core import create, load_config
from ..data.image_array import as_rgb_uint8
from ..data.loader import collate
from ..data.transforms import build_transforms
from ..errors import ConfigError
from .model_builder import build_model, label_info, load_model_weights, select_device
from .runtimes import build_runner, resolve_runtime

__all__ = ["Detector"]


class Detector(object):
    """An HTC model ready for inference on image files or RGB arrays.

    ``config``: a config path or a loaded config; ``weights``: path, URL or model-zoo name (default: the
    config's ``weights``); ``overrides``: ``-o``-style list or dict. Preprocessing is the config's
    ``TestReader`` (resize, normalise, pad). Results are numpy, in original-image pixels.

    ``runtime`` (see ``engine/runtimes.py``): default ``onednn`` on the CPU (the model traced and run by
    Paddle Inference with oneDNN kernels; detections within box IoU 0.98 / score 0.005 of the exact path),
    ``dynamic`` (BatchNorm folded), ``openvino``, ``inference``; ``exact=True`` runs the dynamic graph with
    today's kernels and numerics.
    """

    def __init__(self, config, weights=None, overrides=None, device=None, exact=False, runtime=None):
        cfg = load_config(config, overrides) if isinstance(config, (str, os.PathLike)) else config
        self.cfg = cfg
        self.device = select_device(cfg, device)
        self.model = build_model(cfg)
        self.model.eval()
        weights = weights if weights is not None else cfg.get("weights")
        if not weights:
            raise ConfigError("no weights given: pass weights=... or set 'weights' in the config")
        load_model_weights(self.model, weights)
        self.runtime = resolve_runtime(runtime, exact, self.device)
        self.runner = build_runner(self.model, self.runtime)
        self.runtime = self.runner.runtime
        reader = cfg.get("TestReader") or {}
        self.sample_transforms = build_transforms(reader.get("sample_transforms"), "TestReader.sample_transforms")
        self.batch_transforms = build_transforms(reader.get("batch_transforms"), "TestReader.batch_transforms")
        # The TestDataset object is only asked for names/ids: no dataset is read or generated here.
        self.dataset = create(cfg["TestDataset"]) if "TestDataset" in cfg else None
        self.class_names, self.clsid2catid, self.class_names_source = label_info(cfg, self.dataset, weights)

    def _sample(self, image, index):
        if isinstance(image, (str, os.PathLike)):
            sample = {"im_file": os.fspath(image)}
        elif isinstance(image, (bytes, bytearray)):  # an encoded file (JPEG, PNG, ...)
            sample = {"image": bytes(image), "im_file": "<bytes {}>".format(index)}
        elif isinstance(image, np.ndarray) or hasattr(image, "__array__") or hasattr(image, "__array_interface__"):
            sample = {"image": as_rgb_uint8(image, "image {}".format(index)), "im_file": "<array {}>".format(index)}
        else:
            raise TypeError("images must be file paths, encoded bytes or image arrays, got {}".format(
                type(image).__name__))
        sample["im_id"] = np.array([index], dtype=np.int64)
        for op in self.sample_transforms:
            sample = op(sample)
        return sample

    def preprocess(self, images, start=0):
        samples = [self._sample(im, start + i) for i, im in enumerate(images)]
        for op in self.batch_transforms:
            samples = op(samples)
        return collate(samples)

    @paddle.no_grad()
    def predict(self, images, batch_size=1):
        """Detect objects in one image or a list of them.

        An image is a file path, the bytes of an encoded file, or an array in **RGB** order (numpy, PIL...):
        grayscale ``HxW``/``HxWx1``, ``HxWx3``, ``HxWx4`` (alpha dropped), uint8, bool, uint16 or float
        (``[0, 1]`` when its max is <= 1, else 0-255); see ``ppdet_htc/data/image_array.py``. Arrays read
        with ``cv2.imread`` are BGR: convert them first.

        Returns a dict (single image) or a list of dicts with ``boxes [k,4]`` (x1,y1,x2,y2),
        ``scores [k]``, ``labels [k]``, ``class_names`` (list of k names), ``masks bool [k,h,w]``.
        """
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        results = []
        for start in range(0, len(images), batch_size):
            batch = self.preprocess(images[start:start + batch_size], start)
            for det in self.detect_batch(batch):
                det.pop("im_id", None)
                results.append(det)
        return results[0] if single else results

    def detect_batch(self, batch):
        """Detections of an already preprocessed, collated batch (e.g. from a ``Reader`` with worker
        processes); the dicts of :meth:`predict`, plus ``im_id`` when the batch has one."""
        results = []
        for det in self.runner.detect(batch):
            det["masks"] = det["masks"].astype(bool) if det["masks"] is not None else None
            det["class_names"] = [self.class_names[int(c)] for c in det["labels"]]
            results.append(det)
        return results

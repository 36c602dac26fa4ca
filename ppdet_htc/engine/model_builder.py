"""Build the model of a config, pick the device, and load ``weights`` / ``pretrain_weights`` into it."""
import logging

import paddle

from ..core import create
from ..errors import ConfigError
from . import checkpoint

__all__ = ["build_model", "select_device", "set_cpu_threads", "cpu_threads", "load_model_weights",
           "resolve_weights_file", "weights_file", "label_info"]

logger = logging.getLogger(__name__)


def select_device(cfg=None, device=None):
    """``device`` if given, else GPU when the config asks for it and Paddle has CUDA, else CPU.

    On the CPU, Paddle's math library runs on one thread unless told otherwise; we use all cores
    (shared between the processes of a multi-process run), or ``OMP_NUM_THREADS`` when it is set.
    """
    if device is None:
        want_gpu = bool(cfg.get("use_gpu", False)) if cfg is not None else False
        device = "gpu" if want_gpu and paddle.device.is_compiled_with_cuda() else "cpu"
    paddle.set_device(device)
    if device == "cpu":
        set_cpu_threads()
    return device


def set_cpu_threads(n=None):
    """Threads for Paddle's CPU kernels: ``n``, else ``$OMP_NUM_THREADS`` as the user set it, else cores / local
    processes. (Importing Paddle sets OMP_NUM_THREADS=1 when it is unset: that value is not the user's.)"""
    import os

    from ..runtime import user_omp_num_threads

    if n is None:
        env = user_omp_num_threads()
        if env and env.isdigit():
            n = int(env)
        else:
            procs = int(os.environ.get("PADDLE_LOCAL_SIZE", os.environ.get("PADDLE_TRAINERS_NUM", "1")) or 1)
            n = max(1, (os.cpu_count() or 1) // max(procs, 1))
    try:
        from paddle.base import core
    except ImportError:  # pragma: no cover - very old Paddle
        from paddle.fluid import core
    core.set_num_threads(int(n))
    _CPU_THREADS[0] = int(n)
    return int(n)


_CPU_THREADS = [None]


def cpu_threads():
    """Threads last given to Paddle's CPU kernels by :func:`set_cpu_threads` (None before any call)."""
    return _CPU_THREADS[0]


def build_model(cfg):
    """``create(cfg.architecture)`` with a clear error when the key is missing."""
    if "architecture" not in cfg:
        raise ConfigError("{}: the config has no 'architecture' key (e.g. architecture: HybridTaskCascade)".format(
            cfg.source_of("architecture") if hasattr(cfg, "source_of") else "config"))
    return create(cfg["architecture"], cfg=cfg, where="architecture in {}".format(
        cfg.source_of("architecture") if hasattr(cfg, "source_of") else "config"))


def resolve_weights_file(spec, progress=True):
    """``model_zoo.resolve_weights``, plus bundled zoo files inside an installed wheel.

    A bundled entry (``path: weights/htc_r18_demo_shapes.pdparams``) is relative to the checkout; a wheel
    carries it as ``ppdet_htc/weights/...`` (see ``utils/resources.py``).
    """
    from ..utils.model_zoo import get_entry, resolve_weights
    from ..utils.resources import find_bundled_file

    try:
        return resolve_weights(spec, progress=progress)
    except FileNotFoundError:
        try:
            entry = get_entry(str(spec))
        except KeyError:
            entry = {}
        if "path" in entry:
            found, _ = find_bundled_file(entry["path"])
            if found:
                return found
        raise


def weights_file(spec, progress=True):
    """The local file of a weights spec (path, URL, model-zoo name or training snapshot), downloading and
    converting it if needed. A snapshot directory (``output/x/model_final``, also spelt
    ``output/x/model_final.pdparams``) gives its verified model part."""
    from .train_state import snapshot_model_file

    path = snapshot_model_file(spec)
    return path if path is not None else resolve_weights_file(spec, progress=progress)


def load_model_weights(model, spec, pretrain=False, progress=True):
    """Resolve ``spec`` (see :func:`weights_file`) and load it strictly, or leniently if ``pretrain``."""
    path = weights_file(spec, progress=progress)
    if pretrain:
        return checkpoint.load_pretrained(model, path)
    report = checkpoint.load_weights(model, path)
    logger.info("loaded weights %s", path)
    return report


COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
# COCO category ids of the 80 classes, in label order (ascending ids with gaps).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)


def label_info(cfg, dataset=None, weights=None):
    """``(class names, {label: category id}, where they came from)`` without reading any image.

    Inference needs only the names, so they come from, in order: the config's ``label_list`` (category ids
    1..N), the dataset's label map when it needs no generated or missing files (the demo set's fixed
    classes; the ``categories`` of an existing annotation file or a label-list text file), the model-zoo
    entry of ``weights`` (its ``label_list`` field), COCO's 80 classes when ``num_classes`` is 80, and
    finally ``class_0..class_{N-1}`` with a warning.
    """
    num_classes = int(cfg.get("num_classes", 80))
    names = cfg.get("label_list")
    if names is not None:
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise ConfigError("{}: label_list must be a list of class names, got {!r}".format(
                cfg.source_of("label_list") if hasattr(cfg, "source_of") else "config", names))
        if len(names) != num_classes:
            raise ConfigError("{}: label_list has {} names but num_classes is {}".format(
                cfg.source_of("label_list") if hasattr(cfg, "source_of") else "config", len(names), num_classes))
        return list(names), {i: i + 1 for i in range(len(names))}, "label_list in the config"
    reason = "no TestDataset"
    if dataset is not None and hasattr(dataset, "label_map"):
        try:
            ids, names = dataset.label_map()
            if len(names) == num_classes:
                return list(names), {i: int(c) for i, c in enumerate(ids)}, "the TestDataset's label map"
            reason = "the TestDataset names {} classes, the model has {}".format(len(names), num_classes)
        except (FileNotFoundError, ValueError) as e:
            reason = str(e)
    entry_names = _zoo_label_list(weights)
    if entry_names is not None and len(entry_names) == num_classes:
        return list(entry_names), {i: i + 1 for i in range(num_classes)}, "the model-zoo entry {}".format(weights)
    if num_classes == len(COCO_CLASS_NAMES):
        return list(COCO_CLASS_NAMES), dict(enumerate(COCO_CATEGORY_IDS)), "COCO's 80 classes"
    logger.warning("no class names (%s): classes are named class_0..class_%d; set label_list in the config",
                   reason, num_classes - 1)
    return ["class_{}".format(i) for i in range(num_classes)], {i: i + 1 for i in range(num_classes)}, "none"


def _zoo_label_list(weights):
    if not isinstance(weights, str) or not weights:
        return None
    from ..utils.model_zoo import get_entry

    try:
        names = get_entry(weights).get("label_list")
    except (KeyError, ValueError, OSError):
        return None
    return names if isinstance(names, list) else None

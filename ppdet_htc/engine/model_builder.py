"""Build the model of a config, pick the device, and load ``weights`` / ``pretrain_weights`` into it."""
import logging

import paddle

from ..core import create
from ..errors import ConfigError
from . import checkpoint

__all__ = ["build_model", "select_device", "set_cpu_threads", "load_model_weights", "class_names_for"]

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
    """Threads for Paddle's CPU kernels: ``n``, else ``$OMP_NUM_THREADS``, else cores / local processes."""
    import os

    if n is None:
        env = os.environ.get("OMP_NUM_THREADS")
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
    return int(n)


def build_model(cfg):
    """``create(cfg.architecture)`` with a clear error when the key is missing."""
    if "architecture" not in cfg:
        raise ConfigError("{}: the config has no 'architecture' key (e.g. architecture: HybridTaskCascade)".format(
            cfg.source_of("architecture") if hasattr(cfg, "source_of") else "config"))
    return create(cfg["architecture"], cfg=cfg, where="architecture in {}".format(
        cfg.source_of("architecture") if hasattr(cfg, "source_of") else "config"))


def load_model_weights(model, spec, pretrain=False, progress=True):
    """Resolve ``spec`` (path, URL, model-zoo name or training snapshot) and load it strictly, or leniently if
    ``pretrain``. A snapshot directory (``output/x/model_final``, also spelt ``output/x/model_final.pdparams``)
    gives its verified model part."""
    from ..utils.model_zoo import resolve_weights
    from .train_state import snapshot_model_file

    path = snapshot_model_file(spec)
    if path is None:
        path = resolve_weights(spec, progress=progress)
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


def class_names_for(dataset, num_classes):
    """``(names, clsid2catid)`` from the dataset's label file; COCO's when it is missing and C == 80."""
    import os

    try:
        names = dataset.get_label_list()
        return list(names), dict(dataset.clsid2catid)
    except (FileNotFoundError, ValueError, AttributeError) as e:
        if num_classes == 80:
            anno = getattr(dataset, "get_anno", lambda: None)()
            if anno is None or not os.path.isfile(anno):
                logger.info("no label file (%s); using the 80 COCO class names", e)
                return list(COCO_CLASS_NAMES), {i: c for i, c in enumerate(COCO_CATEGORY_IDS)}
        logger.warning("no label file (%s); classes are named class_0..class_%d", e, num_classes - 1)
        return ["class_{}".format(i) for i in range(num_classes)], {i: i + 1 for i in range(num_classes)}

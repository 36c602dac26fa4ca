"""Datasets, transforms and readers (records -> samples -> collated batches; see README.md)."""
from . import transforms, semantic, coco, image_folder, loader, demo_dataset  # noqa: F401  (registers the YAML tags)
from .coco import AnnotationError, COCODataSet  # noqa: F401
from .image_folder import ImageFolder  # noqa: F401
from .loader import Reader, WorkerError, build_reader, collate  # noqa: F401
from .semantic import semantic_from_instances  # noqa: F401
from .transforms import ImageDecodeError, build_transforms  # noqa: F401
from .demo_dataset import DemoShapesDataSet  # noqa: F401

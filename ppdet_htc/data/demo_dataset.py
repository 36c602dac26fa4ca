"""``!DemoShapesDataSet``: the bundled synthetic dataset as a COCO dataset, generated on first use."""
from ..core import serializable
from ..errors import ConfigError
from .coco import COCODataSet
from .demo_shapes import CATEGORIES, default_demo_root, ensure_demo_dataset

__all__ = ["DemoShapesDataSet"]


@serializable
class DemoShapesDataSet(COCODataSet):
    """A ``COCODataSet`` over ``split`` ('train' or 'val') of the demo set (``data/demo_shapes.py``).

    ``dataset_dir`` defaults to ``$PPDET_HTC_DEMO_DIR``, else ``<repo>/dataset/demo_shapes`` in a checkout or
    ``$PPDET_HTC_HOME/datasets/demo_shapes`` for an installed package; the data is generated there
    (deterministically, about 10 s) the first time images are needed; class names never need it.
    """

    def __init__(self, split: str = "train", dataset_dir: str = None, data_fields: list = ("image",),
                 sample_num: int = -1, load_crowd: bool = False, allow_empty: bool = False,
                 empty_ratio: float = 1.0, repeat: int = 1, load_semantic: bool = False,
                 semantic_source: str = "stuffthingmaps"):
        if split not in ("train", "val"):
            raise ConfigError("DemoShapesDataSet.split must be 'train' or 'val', got {!r}".format(split))
        self.split = split
        super().__init__(
            dataset_dir=dataset_dir or default_demo_root(), image_dir=split,
            anno_path="annotations/instances_{}.json".format(split), data_fields=list(data_fields),
            sample_num=sample_num, load_crowd=load_crowd, allow_empty=allow_empty, empty_ratio=empty_ratio,
            repeat=repeat, load_semantic=load_semantic, semantic_source=semantic_source,
            semantic_dir="stuffthingmaps/{}".format(split),
        )

    def parse_dataset(self):
        ensure_demo_dataset(self.dataset_dir)
        return super().parse_dataset()

    def check_files(self, max_report: int = 10):
        ensure_demo_dataset(self.dataset_dir)
        return super().check_files(max_report)

    # The classes are fixed by the generator, so naming them never generates (or reads) the dataset.

    def label_map(self):
        return [c["id"] for c in CATEGORIES], [c["name"] for c in CATEGORIES]

    def get_label_list(self):
        return [c["name"] for c in CATEGORIES]

    @property
    def catid2clsid(self):
        return {c["id"]: i for i, c in enumerate(CATEGORIES)}

    @property
    def clsid2catid(self):
        return {i: c["id"] for i, c in enumerate(CATEGORIES)}

    @property
    def cname2cid(self):
        return {c["name"]: i for i, c in enumerate(CATEGORIES)}

    @property
    def num_classes(self):
        return len(CATEGORIES)

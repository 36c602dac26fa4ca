"""The reference HTC config builds all three readers unchanged, with datasets swapped by overrides."""
import os

import numpy as np
import paddle

from ppdet_htc.core import load_config, merge_config
from ppdet_htc.data import COCODataSet, ImageFolder, build_reader

from .coco_factory import write_coco


def _config(shared_reference, paths):
    cfg = load_config(os.path.join(shared_reference, "configs", "htc", "htc_r50_fpn_1x_coco.yml"))
    ds = {"dataset_dir": paths["dataset_dir"], "anno_path": paths["anno_path"], "image_dir": paths["image_dir"]}
    merge_config(cfg, {"TrainDataset": ds, "EvalDataset": ds})
    merge_config(cfg, ["TestDataset.dataset_dir={}".format(paths["dataset_dir"]),
                       "TestDataset.anno_path={}".format(paths["anno_path"]),
                       "TestDataset.image_dir=images", "TrainReader.batch_size=2"])
    return cfg


def test_reference_config_builds_three_readers(shared_reference, tmp_path):
    paths = write_coco(tmp_path)
    cfg = _config(shared_reference, paths)
    train = build_reader(cfg, "train", seed=1, rank=0, world_size=1)
    evals = build_reader(cfg, "eval", rank=0, world_size=1)
    test = build_reader(cfg, "test", rank=0, world_size=1)

    assert isinstance(train.dataset, COCODataSet) and isinstance(test.dataset, ImageFolder)
    assert train.dataset.data_fields == ["image", "gt_bbox", "gt_class", "gt_poly", "is_crowd"]
    assert evals.dataset.data_fields == ["image"]
    assert (train.batch_size, train.shuffle, train.drop_last) == (2, True, True)
    assert (evals.batch_size, evals.shuffle, evals.drop_last) == (4, False, False)
    assert test.batch_size == 1 and train.worker_num == evals.worker_num == 4
    assert (len(train), len(evals), len(test)) == (1, 1, 5)  # test: every image of the folder
    assert test.dataset.get_label_list() == ["cat", "dog", "bird"]

    batch = next(iter(evals))  # 3 images, worker process, reference 800/1333 resize, pad 32
    assert batch["image"].shape[0] == 3 and batch["image"].dtype == paddle.float32
    assert batch["image"].shape[2] % 32 == 0 and batch["image"].shape[3] % 32 == 0
    h, w = 24, 32  # image 1: s = min(800/24, 1333/32)
    s = min(800 / 24, 1333 / 32)
    np.testing.assert_allclose(batch["im_shape"].numpy()[0], [s * h, s * w], rtol=1e-6)
    tb = next(iter(train))
    assert len(tb["gt_bbox"]) == 2 and len(tb["gt_poly"]) == 2


def test_golden_small_eval_dataset(shared_reference):
    data = os.path.join(shared_reference, "golden_small", "data")
    ds = COCODataSet(dataset_dir=data, image_dir="val", anno_path="annotations/instances_val.json")
    assert len(ds) == 20
    assert ds.clsid2catid == {0: 1, 1: 2, 2: 3, 3: 4}
    assert ds.get_label_list() == ["ellipse", "quad", "triangle", "pentagon"]
    ids = [int(r["im_id"][0]) for r in ds.roidbs]
    assert ids == sorted(ids)
    ds.check_files()

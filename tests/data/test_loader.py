"""Reader: batching/collation, seeded augmentation, distributed split, workers, resume, errors."""
import multiprocessing
import os

import numpy as np
import paddle
import pytest

from ppdet_htc.core import ConfigError
from ppdet_htc.data import ImageDecodeError, Reader, WorkerError, build_reader

from .coco_factory import write_coco
from .test_coco import ALL_FIELDS, _ds

NORM = {"is_scale": True, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
TARGET = [40, 64]


def _cfg(batch_size=2, flip=True, semantic=False, group_by_size=False):
    sample = [{"Decode": {}}, {"Resize": {"interp": 1, "target_size": TARGET, "keep_ratio": True}}]
    if flip:
        sample.append({"RandomFlip": {"prob": 0.5}})
    sample += [{"NormalizeImage": dict(NORM)}, {"Permute": {}}]
    batch = [{"PadBatch": {"pad_to_stride": 32}}]
    if semantic:
        batch.append({"SegRescale": {"scale_factor": 0.125}})
    train = {"sample_transforms": sample, "batch_transforms": batch, "batch_size": batch_size, "shuffle": True,
             "drop_last": True, "collate_batch": False}
    evals = {"sample_transforms": [s for s in sample if "RandomFlip" not in s], "batch_transforms": batch,
             "batch_size": batch_size, "shuffle": False, "drop_last": False, "group_by_size": group_by_size}
    return {"TrainReader": train, "EvalReader": evals, "TestReader": dict(evals, batch_size=1), "worker_num": 0}


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path)


def _scale(h, w):
    return min(min(TARGET) / min(h, w), max(TARGET) / max(h, w))


def _assert_same(x, y, key):
    if isinstance(x, paddle.Tensor):
        x, y = x.numpy(), y.numpy()
    if isinstance(x, np.ndarray):
        np.testing.assert_array_equal(x, y, err_msg=key)
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), key
        for u, v in zip(x, y):
            _assert_same(u, v, key)
    elif isinstance(x, dict):
        assert x.keys() == y.keys(), key
        for k in x:
            _assert_same(x[k], y[k], key + "." + str(k))
    else:
        assert x == y, key


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        _assert_same(x, y, "batch")


def test_train_batch_shapes_dtypes_and_values(coco):
    ds = _ds(coco, data_fields=ALL_FIELDS, repeat=2)
    reader = build_reader(_cfg(batch_size=2), "train", dataset=ds, seed=3, rank=0, world_size=1)
    assert len(reader) == 3
    batches = list(reader)
    assert len(batches) == 3
    for b in batches:
        img = b["image"]
        assert isinstance(img, paddle.Tensor) and img.dtype == paddle.float32
        assert img.shape[:2] == [2, 3] and img.shape[2] % 32 == 0 and img.shape[3] % 32 == 0
        assert b["im_shape"].dtype == paddle.float32 and b["im_shape"].shape == [2, 2]
        assert b["scale_factor"].dtype == paddle.float32 and b["scale_factor"].shape == [2, 2]
        assert b["im_id"].dtype == paddle.int64 and b["im_id"].shape == [2, 1]
        assert len(b["gt_bbox"]) == len(b["gt_class"]) == len(b["is_crowd"]) == len(b["gt_poly"]) == 2
        assert isinstance(b["h"], np.ndarray) and isinstance(b["w"], np.ndarray)
        for i in range(2):
            h, w = int(b["h"][i]), int(b["w"][i])
            s = _scale(h, w)
            np.testing.assert_allclose(b["im_shape"].numpy()[i], [s * h, s * w], rtol=1e-6)
            np.testing.assert_allclose(b["scale_factor"].numpy()[i], [s, s], rtol=1e-6)
            n = len(b["gt_poly"][i])
            assert b["gt_bbox"][i].dtype == paddle.float32 and b["gt_bbox"][i].shape == [n, 4]
            assert b["gt_class"][i].dtype == paddle.int32 and b["gt_class"][i].shape == [n, 1]
            assert b["is_crowd"][i].dtype == paddle.int32 and b["is_crowd"][i].shape == [n, 1]
            assert os.path.isfile(b["im_file"][i])
            rec = ds.roidbs[[int(r["im_id"][0]) for r in ds.roidbs].index(int(b["im_id"].numpy()[i, 0]))]
            assert b["im_file"][i] == rec["im_file"]
            np.testing.assert_array_equal(b["gt_class"][i].numpy(), rec["gt_class"])
            box = rec["gt_bbox"] * s
            if b.get("flipped", [None, None])[i]:
                width = round(s * w)  # the flip mirrors about the resized (cv2-rounded) pixel width
                box = np.stack([width - box[:, 2], box[:, 1], width - box[:, 0], box[:, 3]], 1)
            np.testing.assert_allclose(b["gt_bbox"][i].numpy(), box, rtol=1e-5, atol=1e-4)
    seen = sorted(int(i) for b in batches for i in b["im_id"].numpy()[:, 0])
    assert seen == [1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_eval_reader_keeps_order_and_every_image(coco, batch_size):
    reader = build_reader(_cfg(batch_size=batch_size), "eval", dataset=_ds(coco), rank=0, world_size=1)
    batches = list(reader)
    assert len(batches) == len(reader) == (3 if batch_size == 1 else 2)
    assert [b["image"].shape[0] for b in batches] == ([1, 1, 1] if batch_size == 1 else [2, 1])
    ids = [int(i) for b in batches for i in b["im_id"].numpy()[:, 0]]
    assert ids == [1, 2, 3]
    assert "gt_bbox" not in batches[0] and "flipped" not in batches[0]
    np.testing.assert_array_equal(batches[0]["h"], [24, 36][:batch_size])


def test_eval_reader_groups_images_of_similar_size(tmp_path):
    """With group_by_size (the eval/test default) a batch only holds images that get the same padded
    canvas, so each image is padded exactly as it would be alone."""
    sizes = [(40, 60), (40, 120), (40, 60), (40, 120), (40, 60)]  # canvases 64x64 and 32x64
    spec = {"images": [{"id": i + 1, "file_name": "s{}.jpg".format(i), "height": h, "width": w}
                       for i, (h, w) in enumerate(sizes)],
            "annotations": [{"id": 100 + i, "image_id": i + 1, "category_id": 2, "bbox": [1, 1, 8, 8], "area": 64,
                             "iscrowd": 0, "segmentation": [[1, 1, 9, 1, 9, 9, 1, 9]]} for i in range(len(sizes))],
            "categories": [{"id": 2, "name": "thing"}]}
    ds = _ds(write_coco(tmp_path, spec))
    grouped = build_reader(_cfg(batch_size=2, group_by_size=True), "eval", dataset=ds, rank=0, world_size=1)
    batches = grouped.batch_indices()
    assert sorted(len(b) for b in batches) == [1, 2, 2]
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))  # every image once
    single = build_reader(_cfg(batch_size=1), "eval", dataset=ds, rank=0, world_size=1)
    alone = {int(b["im_id"][0, 0]): tuple(b["image"].shape[2:]) for b in single}
    for batch in grouped:
        for im_id in batch["im_id"].numpy()[:, 0]:
            assert tuple(batch["image"].shape[2:]) == alone[int(im_id)]
    plain = build_reader(_cfg(batch_size=2), "eval", dataset=ds, rank=0, world_size=1)
    assert [i for b in plain.batch_indices() for i in b] == list(range(len(sizes)))


def test_shuffle_order_and_flips_follow_the_seeds(coco):
    ds = _ds(coco, data_fields=ALL_FIELDS, repeat=4)  # 12 samples
    seed = 11
    for epoch in (0, 1):
        reader = build_reader(_cfg(batch_size=1), "train", dataset=ds, seed=seed, rank=0, world_size=1)
        reader.set_epoch(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(ds))
        assert [i for b in reader.batch_indices() for i in b] == order.tolist()
        for pos, batch in enumerate(reader):
            index = order[pos]
            expect_flip = np.random.default_rng([seed, epoch, index]).uniform(0, 1) < 0.5
            assert bool(batch.get("flipped", [None])[0]) == expect_flip
            assert int(batch["im_id"].numpy()[0, 0]) == int(ds[index]["im_id"][0])
    r0 = build_reader(_cfg(), "train", dataset=ds, seed=seed, rank=0, world_size=1)
    r1 = build_reader(_cfg(), "train", dataset=ds, seed=seed, rank=0, world_size=1)
    _assert_batches_equal(list(r0), list(r1))
    r1.set_epoch(1)
    assert r0.batch_indices() != r1.batch_indices()


@pytest.mark.parametrize("n,bs,drop_last", [(7, 2, False), (7, 2, True), (8, 2, True), (3, 4, False), (9, 1, False)])
def test_distributed_split(n, bs, drop_last):
    readers = [Reader(list(range(n)), batch_size=bs, shuffle=True, drop_last=drop_last, seed=5, rank=r, world_size=2)
               for r in range(2)]
    per_rank = [r.batch_indices() for r in readers]
    assert len(per_rank[0]) == len(per_rank[1]) == len(readers[0]) == len(readers[1]) > 0
    flat = [[i for b in batches for i in b] for batches in per_rank]
    if drop_last:
        assert not set(flat[0]) & set(flat[1])
        assert all(len(b) == bs for batches in per_rank for b in batches)
        assert len(flat[0]) + len(flat[1]) >= n - (2 * bs - 1)
    else:
        assert set(flat[0]) | set(flat[1]) == set(range(n))
        assert len(flat[0]) == len(flat[1])
        assert len(flat[0]) + len(flat[1]) - n < 2  # at most one padded duplicate for 2 ranks
        if n % 2 == 0:
            assert not set(flat[0]) & set(flat[1])


def test_distributed_readers_cover_the_dataset(coco):
    ds = _ds(coco, repeat=2)  # 6 samples, 3 per rank
    ids = []
    counts = []
    for rank in range(2):
        reader = build_reader(_cfg(batch_size=2), "eval", dataset=ds, rank=rank, world_size=2)
        batches = list(reader)
        counts.append(len(batches))
        ids.append([int(i) for b in batches for i in b["im_id"].numpy()[:, 0]])
    assert counts == [2, 2]
    assert sorted(ids[0] + ids[1]) == [1, 1, 2, 2, 3, 3]
    assert ids[0] == [1, 3, 2] and ids[1] == [2, 1, 3]  # every other sample of the epoch order


def test_workers_give_the_same_batches_and_resume(coco):
    ds = _ds(coco, data_fields=ALL_FIELDS, repeat=3)  # 9 samples -> 4 batches of 2
    cfg = _cfg(batch_size=2)
    serial = build_reader(cfg, "train", dataset=ds, seed=7, rank=0, world_size=1, worker_num=0)
    workers = build_reader(cfg, "train", dataset=ds, seed=7, rank=0, world_size=1, worker_num=2)
    for epoch in (0, 2):
        serial.set_epoch(epoch)
        workers.set_epoch(epoch)
        full = list(serial)
        _assert_batches_equal(full, list(workers))
        _assert_batches_equal(full[2:], list(workers.iter_from(2)))
        _assert_batches_equal(full[1:], list(serial.skip(1)))
        _assert_batches_equal(full, list(serial))  # skip applies to one iteration only
    with pytest.raises(ValueError, match="cannot start at batch 5"):
        serial.iter_from(5)


def test_abandoned_iteration_stops_its_workers(coco):
    reader = build_reader(_cfg(batch_size=1), "eval", dataset=_ds(coco), rank=0, world_size=1, worker_num=2)
    it = iter(reader)
    next(it)
    assert len(multiprocessing.active_children()) >= 2
    it.close()
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("worker_num", [0, 2])
def test_bad_image_error_names_the_file(tmp_path, worker_num):
    paths = write_coco(tmp_path)
    bad = os.path.join(paths["dataset_dir"], "images", "img_b.png")
    with open(bad, "wb") as f:
        f.write(b"not a png")
    reader = build_reader(_cfg(batch_size=1), "eval", dataset=_ds(paths), rank=0, world_size=1,
                          worker_num=worker_num)
    with pytest.raises(ImageDecodeError) as e:
        list(reader)
    assert bad in str(e.value)
    if worker_num:
        assert isinstance(e.value.__cause__, WorkerError) and "Traceback" in str(e.value.__cause__)


class _ExitProcess(object):
    """A transform that kills its process (simulates a crashing worker)."""

    def __call__(self, sample, rng=None):
        os._exit(3)


def test_dead_worker_is_reported(coco):
    reader = Reader(_ds(coco), sample_transforms=[_ExitProcess()], worker_num=1, name="EvalReader")
    with pytest.raises(RuntimeError, match=r"EvalReader: worker 0 .* exited with code 3 .*img_a.jpg"):
        list(reader)


def test_other_transform_errors_get_image_context(coco):
    class Boom(object):
        def __call__(self, sample, rng=None):
            raise KeyError("gt_thing")

    reader = Reader(_ds(coco), sample_transforms=[Boom()])
    with pytest.raises(KeyError, match="Boom for .*img_a.jpg"):
        list(reader)


def test_semantic_batches(coco):
    ds = _ds(coco, data_fields=ALL_FIELDS, load_semantic=True, semantic_source="instances")
    reader = build_reader(_cfg(batch_size=2, semantic=True), "train", dataset=ds, rank=0, world_size=1)
    b = next(iter(reader))
    sem = b["semantic"]
    assert sem.dtype == paddle.int32
    assert sem.shape == [2, 1, b["image"].shape[2] // 8, b["image"].shape[3] // 8]
    assert "semantic_from_instances" not in b and "semantic_crowd_poly" not in b
    assert set(np.unique(sem.numpy())) <= {0, 1, 2, 3, 255}


def test_reader_config_errors(coco):
    ds = _ds(coco)
    cfg = _cfg()
    cfg["TrainReader"]["sample_transforms"].append({"RandomFlipp": {}})
    with pytest.raises(ValueError, match=r"TrainReader.sample_transforms: unknown transform 'RandomFlipp'"):
        build_reader(cfg, "train", dataset=ds, rank=0, world_size=1)
    cfg = _cfg()
    cfg["EvalReader"]["batch_transforms"] = [{"PadBatch": {"pad_to": 32}}]
    with pytest.raises(ValueError, match=r"EvalReader.batch_transforms: 'pad_to' is not a parameter of .*PadBatch"):
        build_reader(cfg, "eval", dataset=ds, rank=0, world_size=1)
    cfg = _cfg()
    cfg["TrainReader"]["batchsize"] = 2
    with pytest.raises(ConfigError, match="'batchsize' is not a key of TrainReader; did you mean 'batch_size'"):
        build_reader(cfg, "train", dataset=ds, rank=0, world_size=1)
    cfg = _cfg(batch_size=0)
    with pytest.raises(ConfigError, match="TrainReader.batch_size must be a positive int"):
        build_reader(cfg, "train", dataset=ds, rank=0, world_size=1)
    with pytest.raises(ValueError, match="mode must be one of"):
        build_reader(_cfg(), "val", dataset=ds)
    with pytest.raises(ConfigError, match="no TestDataset"):
        build_reader(_cfg(), "test", rank=0, world_size=1)
    cfg = _cfg(batch_size=4)
    with pytest.raises(ValueError, match="3 samples on 1 rank.*batch_size 4.*no batch"):
        len(build_reader(cfg, "train", dataset=ds, rank=0, world_size=1))


def test_rank_defaults_to_paddle_distributed(coco):
    reader = build_reader(_cfg(), "eval", dataset=_ds(coco))
    assert (reader.rank, reader.world_size) == (0, 1)


def test_spawned_workers_match(coco):
    """Workers started with 'spawn' (no fork: macOS/Windows) unpickle the dataset and transforms."""
    ds = _ds(coco, data_fields=ALL_FIELDS)
    serial = build_reader(_cfg(batch_size=1), "train", dataset=ds, seed=2, rank=0, world_size=1)
    spawned = build_reader(_cfg(batch_size=1), "train", dataset=ds, seed=2, rank=0, world_size=1, worker_num=1,
                           mp_context="spawn")
    _assert_batches_equal(list(serial), list(spawned))

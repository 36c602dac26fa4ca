"""The synthetic demo dataset: deterministic, COCO-valid, and its labels match the rendered pixels."""
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from ppdet_htc.data import demo_shapes as ds

SMALL = dict(num_train=12, num_val=4, seed=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo") / "shapes")
    ds.generate_demo_dataset(root, progress=False, **SMALL)
    return root


@pytest.fixture(scope="module")
def coco_train(dataset):
    return COCO(os.path.join(dataset, "annotations", "instances_train.json"))


@pytest.fixture(scope="module")
def rendered_40():
    return [ds.render_image(ds.image_rng(3, "train", i)) for i in range(40)]


def _rerender(split, image_id, seed=SMALL["seed"]):
    """The generator's in-memory image and objects for a written image (ids are index + 1)."""
    return ds.render_image(ds.image_rng(seed, split, image_id - 1))


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------------------------------------ layout & COCO


def test_layout_and_marker(dataset):
    assert sorted(os.listdir(os.path.join(dataset, "train"))) == ["{:06d}.jpg".format(i) for i in range(1, 13)]
    assert len(os.listdir(os.path.join(dataset, "val"))) == 4
    assert sorted(os.listdir(os.path.join(dataset, "stuffthingmaps", "train"))) == \
        ["{:06d}.png".format(i) for i in range(1, 13)]
    marker = ds.read_marker(dataset)
    assert marker == {"version": ds.DEMO_VERSION,
                      "params": dict(SMALL, min_size=256, max_size=384)}
    # nothing left behind next to the root (temp dirs are renamed or removed)
    assert sorted(os.listdir(os.path.dirname(dataset))) == [".shapes.lock", "shapes"]


def test_coco_json_structure(dataset, coco_train):
    with open(os.path.join(dataset, "annotations", "instances_val.json")) as f:
        val = json.load(f)
    for coco in (coco_train.dataset, val):
        assert set(coco) == {"info", "licenses", "images", "annotations", "categories"}
        assert [c["name"] for c in coco["categories"]] == ["ellipse", "quad", "triangle", "pentagon"]
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
        assert {c["supercategory"] for c in coco["categories"]} == {"shape"}
        assert [im["id"] for im in coco["images"]] == list(range(1, len(coco["images"]) + 1))
        assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
        for ann in coco["annotations"]:
            assert set(ann) == {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
            assert ann["iscrowd"] == 0
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
            assert all(isinstance(v, float) for p in ann["segmentation"] for v in p)
    assert len(val["images"]) == 4


def test_image_sizes_match_json_and_range(dataset, coco_train):
    for im in coco_train.dataset["images"]:
        assert 256 <= im["width"] <= 384 and 256 <= im["height"] <= 384
        pixels = cv2.imread(os.path.join(dataset, "train", im["file_name"]))
        assert pixels.shape == (im["height"], im["width"], 3)
    sizes = {(im["width"], im["height"]) for im in coco_train.dataset["images"]}
    assert len(sizes) > 6  # width and height really vary


def test_jpeg_is_the_rendered_image(dataset):
    image, _ = _rerender("train", 1)
    other, _ = _rerender("train", 2)
    written = cv2.imread(os.path.join(dataset, "train", "000001.jpg"))[:, :, ::-1].astype(np.float32)
    assert np.abs(written - image).mean() < 8.0  # JPEG q95 loss, mostly on the fine noise
    h, w = min(image.shape[0], other.shape[0]), min(image.shape[1], other.shape[1])
    assert np.abs(written[:h, :w] - other[:h, :w]).mean() > 25.0


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_and_pixels(tmp_path):
    params = dict(num_train=4, num_val=2, seed=11, progress=False)
    a = ds.generate_demo_dataset(str(tmp_path / "a"), **params)
    b = ds.generate_demo_dataset(str(tmp_path / "b"), **params)
    for split in ("train", "val"):
        name = os.path.join("annotations", "instances_{}.json".format(split))
        assert _read(os.path.join(a, name)) == _read(os.path.join(b, name))
        for fname in os.listdir(os.path.join(a, split)):
            pa, pb = cv2.imread(os.path.join(a, split, fname)), cv2.imread(os.path.join(b, split, fname))
            assert np.array_equal(pa, pb)
    for fname in os.listdir(os.path.join(a, "stuffthingmaps", "train")):
        rel = os.path.join("stuffthingmaps", "train", fname)
        assert np.array_equal(cv2.imread(os.path.join(a, rel), 0), cv2.imread(os.path.join(b, rel), 0))
    c = ds.generate_demo_dataset(str(tmp_path / "c"), **dict(params, seed=12))
    name = os.path.join("annotations", "instances_train.json")
    assert _read(os.path.join(a, name)) != _read(os.path.join(c, name))


def test_splits_use_separate_streams():
    train_img, _ = ds.render_image(ds.image_rng(5, "train", 0))
    val_img, _ = ds.render_image(ds.image_rng(5, "val", 0))
    assert train_img.shape != val_img.shape or not np.array_equal(train_img, val_img)


# ------------------------------------------------------------------------------------------ objects


def test_object_counts(rendered_40, coco_train):
    counts = [len(objects) for _, objects in rendered_40]
    assert min(counts) >= 1 and max(counts) <= 6
    assert sum(c >= 3 for c in counts) >= 5
    per_image = [len(coco_train.getAnnIds(imgIds=i)) for i in coco_train.getImgIds()]
    assert min(per_image) >= 1 and max(per_image) <= 6
    assert sum(c >= 3 for c in per_image) >= 3


def test_object_sizes_and_classes(rendered_40):
    sides, classes = [], set()
    for _, objects in rendered_40:
        for obj in objects:
            ys, xs = np.nonzero(obj.mask)
            sides.append(max(np.ptp(xs), np.ptp(ys)) + 1)
            classes.add(obj.category_id)
    assert min(sides) >= 14 and max(sides) <= 101
    assert np.ptp(sides) > 50  # sizes really vary
    assert classes == {1, 2, 3, 4}


def test_visible_masks_follow_drawing_order(rendered_40):
    overlapped = 0
    for _, objects in rendered_40:
        union_later = np.zeros_like(objects[0].mask)
        for obj in reversed(objects):
            assert np.array_equal(obj.visible, obj.mask & ~union_later)
            overlapped += bool(np.any(obj.mask & union_later))
            union_later |= obj.mask
        assert np.array_equal(objects[-1].visible, objects[-1].mask)
    assert overlapped >= 3  # occlusion actually happens


def test_visible_masks_are_annotatable(rendered_40):
    for _, objects in rendered_40:
        for obj in objects:
            assert ds.is_annotated(obj)
            assert not ds.has_holes(obj.visible)


def test_objects_contrast_with_their_surroundings(rendered_40):
    diffs = []
    for image, objects in rendered_40:
        for obj in objects:
            inside, around = ds._local_colors(image, obj.visible)
            diffs.append(np.linalg.norm(inside - around))
    assert np.median(diffs) > 60 and np.mean(np.array(diffs) > 25) > 0.95


# ------------------------------------------------------------------------------------------ annotations


def test_polygons_decode_to_visible_masks(coco_train):
    checked = 0
    for image_id in coco_train.getImgIds():
        _, objects = _rerender("train", image_id)
        anns = coco_train.loadAnns(coco_train.getAnnIds(imgIds=image_id))
        kept = [o for o in objects if ds.is_annotated(o)]
        assert len(anns) == len(kept)
        for ann, obj in zip(anns, kept):
            decoded = coco_train.annToMask(ann).astype(bool)
            assert ann["category_id"] == obj.category_id
            assert _iou(decoded, obj.visible) >= 0.9
            assert ann["area"] == obj.visible.sum()
            checked += 1
    assert checked >= 20


def test_bbox_is_tight_around_decoded_mask(coco_train):
    for ann in coco_train.loadAnns(coco_train.getAnnIds()):
        ys, xs = np.nonzero(coco_train.annToMask(ann))
        tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert np.allclose(ann["bbox"], tight, atol=1.0)


def test_semantic_maps_match_visible_masks(dataset, coco_train):
    for image_id in coco_train.getImgIds():
        image, objects = _rerender("train", image_id)
        label = cv2.imread(os.path.join(dataset, "stuffthingmaps", "train", "{:06d}.png".format(image_id)),
                           cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.shape == image.shape[:2]
        truth = np.zeros(image.shape[:2], np.uint8)
        for obj in objects:  # visible masks are disjoint, so order does not matter here
            truth[obj.visible] = obj.category_id
        assert np.array_equal(label, truth)
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4}
        # ...and with the written polygons wherever exactly one or no decoded mask covers a pixel
        anns = coco_train.loadAnns(coco_train.getAnnIds(imgIds=image_id))
        masks = np.stack([coco_train.annToMask(a).astype(bool) for a in anns])
        expected = (masks * np.array([a["category_id"] for a in anns])[:, None, None]).max(0)
        clear = masks.sum(0) <= 1
        assert np.mean(label[clear] == expected[clear]) > 0.99


def test_mask_to_polygons_is_exact_for_awkward_masks():
    mask = np.zeros((20, 30), bool)
    mask[0, 0] = True  # single pixel in the corner
    mask[19, 25:30] = True  # strip on the bottom-right border
    for i in range(6):  # 8-connected diagonal chain
        mask[5 + i, 5 + i] = True
    mask[3:12, 14:24] = True
    mask[6, 14:18] = False  # notch
    import pycocotools.mask as mask_util

    polygons = ds.mask_to_polygons(mask)
    assert len(polygons) == 4
    decoded = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, 20, 30))).astype(bool)
    assert np.array_equal(decoded, mask)


def test_too_hidden_objects_are_dropped():
    mask = np.zeros((50, 50), bool)
    mask[10:30, 10:30] = True  # 400 px
    tiny = mask.copy()
    tiny[:, 16:] = False  # 120 px visible: exactly 30%, kept
    obj = ds.ShapeObject(1, np.zeros((4, 2)), mask, tiny, (0, 0, 0))
    assert ds.is_annotated(obj)
    obj.visible = mask & ~np.pad(np.ones((20, 15), bool), ((10, 20), (10, 25)))  # 100 px = 25%
    assert obj.visible.sum() == 100 and not ds.is_annotated(obj)
    small = np.zeros((50, 50), bool)
    small[0:6, 0:6] = True  # 36 px, fully visible but < 40 px
    assert ds.annotate_objects([obj, ds.ShapeObject(2, np.zeros((4, 2)), small, small.copy(), (0, 0, 0))]) == []


def test_pick_color_contrasts_with_background():
    rng = np.random.default_rng(0)
    image = np.full((64, 64, 3), 128, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    for _ in range(20):
        assert np.linalg.norm(ds.pick_color(rng, image, mask) - 128) >= 80


# ------------------------------------------------------------------------------------------ ensure / CLI


def test_ensure_is_idempotent_and_regenerates(tmp_path):
    root = str(tmp_path / "demo")
    params = dict(num_train=3, num_val=1, seed=1, progress=False)
    assert ds.ensure_demo_dataset(root, **params) == root
    marker, ann = os.path.join(root, ds.MARKER), os.path.join(root, "annotations", "instances_train.json")
    before = (os.stat(marker).st_mtime_ns, os.stat(ann).st_mtime_ns, os.stat(root).st_ino)
    ds.ensure_demo_dataset(root, **params)
    assert (os.stat(marker).st_mtime_ns, os.stat(ann).st_mtime_ns, os.stat(root).st_ino) == before

    os.remove(marker)
    ds.ensure_demo_dataset(root, **params)
    assert os.path.exists(marker) and os.stat(root).st_ino != before[2]

    ds.ensure_demo_dataset(root, **dict(params, num_train=5))  # different params -> regenerated
    assert len(os.listdir(os.path.join(root, "train"))) == 5
    assert ds.read_marker(root)["params"]["num_train"] == 5


def test_interrupted_generation_never_looks_complete(tmp_path, monkeypatch):
    root = str(tmp_path / "demo")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ds, "generate_split", boom)
    with pytest.raises(KeyboardInterrupt):
        ds.ensure_demo_dataset(root, num_train=2, num_val=1, progress=False)
    assert not os.path.exists(root)
    assert [n for n in os.listdir(tmp_path) if not n.endswith(".lock")] == []


def test_leftovers_of_a_killed_run_are_cleaned(tmp_path):
    stale = tmp_path / ".demo.tmp-killed"
    (stale / "train").mkdir(parents=True)
    unrelated = tmp_path / ".other.tmp-x"
    unrelated.mkdir()
    ds.ensure_demo_dataset(str(tmp_path / "demo"), num_train=1, num_val=1, progress=False)
    assert not stale.exists() and unrelated.exists()


def test_rejects_bad_parameters(tmp_path):
    from ppdet_htc.errors import UsageError

    with pytest.raises(UsageError):  # a user error: one line from ppdet-htc-demo-data
        ds.generate_demo_dataset(str(tmp_path / "a"), min_size=64, max_size=96, progress=False)
    with pytest.raises(UsageError):
        ds.ensure_demo_dataset(str(tmp_path / "a"), min_size=300, max_size=290, progress=False)
    with pytest.raises(TypeError):
        ds.ensure_demo_dataset(str(tmp_path / "a"), num_trian=3)
    assert not (tmp_path / "a").exists()


def test_refuses_to_replace_unrelated_directory(tmp_path):
    root = tmp_path / "precious"
    root.mkdir()
    (root / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError):
        ds.generate_demo_dataset(str(root), num_train=1, num_val=1, progress=False)
    assert (root / "thesis.tex").read_text() == "keep me"


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.delenv(ds.ENV_ROOT, raising=False)
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(ds.__file__)))
    assert ds.default_demo_root() == os.path.join(os.path.dirname(package_dir), "dataset", "demo_shapes")
    monkeypatch.setenv(ds.ENV_ROOT, str(tmp_path / "elsewhere"))
    assert ds.default_demo_root() == str(tmp_path / "elsewhere")
    assert ds.ensure_demo_dataset(num_train=1, num_val=1, progress=False) == str(tmp_path / "elsewhere")
    assert ds.read_marker(str(tmp_path / "elsewhere"))["params"]["num_train"] == 1


def test_cli(tmp_path, capsys):
    root = str(tmp_path / "cli")
    ds.main(["--root", root, "--num_train", "2", "--num_val", "1", "--seed", "4"])
    assert capsys.readouterr().out.strip().endswith(root)
    assert ds.read_marker(root)["params"] == dict(num_train=2, num_val=1, seed=4, min_size=256, max_size=384)
    mtime = os.stat(os.path.join(root, ds.MARKER)).st_mtime_ns
    ds.main(["--root", root, "--num_train", "2", "--num_val", "1", "--seed", "4"])
    assert os.stat(os.path.join(root, ds.MARKER)).st_mtime_ns == mtime
    ds.main(["--root", root, "--num_train", "2", "--num_val", "1", "--seed", "4", "--force"])
    assert os.stat(os.path.join(root, ds.MARKER)).st_mtime_ns != mtime

"""ImageFolder: image listing, running ids, label maps from a COCO json or a txt label list."""
import json
import os

import numpy as np
import pytest

from ppdet_htc.core import TaggedDict, create
from ppdet_htc.core.config import Config
from ppdet_htc.data import ImageFolder

from .coco_factory import CATEGORIES, write_image


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i, name in enumerate(["b.png", "a.jpg", "c.JPEG", "d.bmp"]):
        write_image(d / name, 10 + i, 12, i)
    (d / "notes.txt").write_text("not an image")
    (d / "sub").mkdir()
    return d


def test_set_images_expands_folders_sorted_and_numbers_them(folder, tmp_path):
    extra = tmp_path / "z.jpg"
    write_image(extra, 8, 8, 9)
    ds = ImageFolder()
    ds.set_images([str(folder), str(extra)])
    files = [os.path.basename(r["im_file"]) for r in ds.roidbs]
    assert files == ["a.jpg", "b.png", "c.JPEG", "d.bmp", "z.jpg"]
    assert [int(r["im_id"][0]) for r in ds.roidbs] == [0, 1, 2, 3, 4]
    assert ds[0]["im_id"].dtype == np.int64 and len(ds) == 5
    assert ds.get_imid2path()[4] == str(extra)


def test_image_dir_from_config_is_relative_to_dataset_dir(folder, tmp_path):
    ds = create(TaggedDict("ImageFolder", {"dataset_dir": str(tmp_path), "image_dir": "imgs", "sample_num": 2}),
                Config())
    assert [os.path.basename(r["im_file"]) for r in ds.roidbs] == ["a.jpg", "b.png"]


def test_bad_image_paths(folder, tmp_path):
    ds = ImageFolder()
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        ds.set_images([str(tmp_path / "missing.jpg")])
    with pytest.raises(ValueError, match="notes.txt is not an image"):
        ds.set_images([str(folder / "notes.txt")])
    with pytest.raises(FileNotFoundError, match="no image .* in folder .*sub"):
        ds.set_images([str(folder / "sub")])
    with pytest.raises(ValueError, match="set_images"):
        len(ImageFolder())


def test_labels_from_coco_json_follow_file_order(tmp_path):
    anno = tmp_path / "ann" / "val.json"
    anno.parent.mkdir()
    anno.write_text(json.dumps({"images": [], "annotations": [], "categories": CATEGORIES}))
    ds = ImageFolder(dataset_dir=str(tmp_path), anno_path="ann/val.json")
    assert ds.get_anno() == str(anno)
    assert ds.get_label_list() == ["cat", "dog", "bird"]
    assert ds.clsid2catid == {0: 7, 1: 2, 2: 9} and ds.catid2clsid == {7: 0, 2: 1, 9: 2}
    assert ds.num_classes == 3


def test_labels_from_txt(tmp_path):
    (tmp_path / "labels.txt").write_text("person\n\ncar\n")
    ds = ImageFolder(anno_path=str(tmp_path / "labels.txt"))
    assert ds.get_label_list() == ["person", "car"] and ds.clsid2catid == {0: 0, 1: 1}


def test_label_errors(tmp_path):
    with pytest.raises(ValueError, match="anno_path is not set"):
        ImageFolder().get_label_list()
    with pytest.raises(FileNotFoundError, match="nope.json"):
        ImageFolder(dataset_dir=str(tmp_path), anno_path="nope.json").get_label_list()
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        ImageFolder(anno_path=str(tmp_path / "bad.json")).get_label_list()
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="x.xml must be a COCO .json or a .txt"):
        ImageFolder(anno_path=str(tmp_path / "x.xml")).get_label_list()

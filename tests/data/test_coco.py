"""COCODataSet: parsing, filtering, label maps and error messages on tiny generated datasets."""
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from ppdet_htc.core import TaggedDict, create
from ppdet_htc.core.config import Config
from ppdet_htc.data import AnnotationError, COCODataSet

from .coco_factory import rect_poly, standard_spec, write_coco

ALL_FIELDS = ["image", "gt_bbox", "gt_class", "gt_poly", "is_crowd"]


def _ds(paths, **kw):
    return COCODataSet(dataset_dir=paths["dataset_dir"], image_dir=paths["image_dir"], anno_path=paths["anno_path"],
                       **kw)


def _by_id(ds):
    return {int(r["im_id"][0]): r for r in ds.roidbs}


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path)


def test_records_sorted_and_category_maps_follow_getCatIds(coco):
    ds = _ds(coco, data_fields=ALL_FIELDS)
    assert len(ds) == 3
    assert [int(r["im_id"][0]) for r in ds.roidbs] == [1, 2, 3]
    cat_ids = COCO(coco["anno_file"]).getCatIds()
    assert ds.catid2clsid == {cid: i for i, cid in enumerate(cat_ids)} == {7: 0, 2: 1, 9: 2}
    assert ds.clsid2catid == {0: 7, 1: 2, 2: 9}
    assert ds.get_label_list() == ["cat", "dog", "bird"]
    assert ds.cname2cid == {"cat": 0, "dog": 1, "bird": 2}
    assert ds.num_classes == 3
    rec = _by_id(ds)[1]
    assert rec["im_file"] == os.path.join(coco["dataset_dir"], "images", "img_a.jpg")
    assert os.path.isabs(rec["im_file"])
    assert (rec["h"], rec["w"]) == (24, 32)
    assert rec["im_id"].dtype == np.int64 and rec["im_id"].shape == (1,)


def test_bbox_conversion_class_mapping_and_dropped_annotations(coco):
    recs = _by_id(_ds(coco, data_fields=ALL_FIELDS))
    # image 1: ann 12 (all-zero bbox) and 13 (ignore) are dropped
    np.testing.assert_array_equal(recs[1]["gt_bbox"], np.array([[1.235, 2.0, 11.235, 7.0]], np.float32))
    assert recs[1]["gt_bbox"].dtype == np.float32
    np.testing.assert_array_equal(recs[1]["gt_class"], [[1]])
    assert recs[1]["gt_class"].dtype == np.int32 and recs[1]["is_crowd"].dtype == np.int32
    # image 2: ann 22 has width 0 -> dropped
    np.testing.assert_array_equal(recs[2]["gt_bbox"], [[5, 6, 15, 18]])
    np.testing.assert_array_equal(recs[2]["gt_class"], [[0]])
    # image 3: ann 31 has area 0 -> dropped; order of the rest follows the file
    np.testing.assert_array_equal(recs[3]["gt_bbox"], [[10, 10, 18, 16], [20, 5, 30, 15]])
    np.testing.assert_array_equal(recs[3]["gt_class"], [[1], [2]])
    np.testing.assert_array_equal(recs[3]["is_crowd"], [[0], [0]])
    assert recs[3]["gt_poly"] == [rect_poly(10, 10, 18, 16), rect_poly(20, 5, 30, 15)]


def test_uncompressed_rle_becomes_compressed_rle(coco):
    segm = _by_id(_ds(coco, data_fields=ALL_FIELDS))[2]["gt_poly"][0]
    assert isinstance(segm, dict) and isinstance(segm["counts"], bytes)
    expected = np.zeros((36, 48), np.uint8)
    expected[6:18, 5:15] = 1
    np.testing.assert_array_equal(mask_util.decode(segm), expected)


def test_crowd_loaded_only_with_load_crowd(coco):
    without = _ds(coco, data_fields=ALL_FIELDS)
    assert 5 not in _by_id(without)
    recs = _by_id(_ds(coco, data_fields=ALL_FIELDS, load_crowd=True))
    assert sorted(recs) == [1, 2, 3, 5]
    np.testing.assert_array_equal(recs[5]["is_crowd"], [[1]])
    np.testing.assert_array_equal(recs[5]["gt_bbox"], [[2, 2, 8, 8]])
    mask = mask_util.decode(recs[5]["gt_poly"][0])
    assert mask.shape == (26, 30) and mask[2:8, 2:8].all() and mask.sum() == 36


def test_allow_empty_and_empty_ratio(coco):
    recs = _ds(coco, data_fields=ALL_FIELDS, allow_empty=True).roidbs
    # non-empty images first (ascending id), then the empty ones (reference order)
    assert [int(r["im_id"][0]) for r in recs] == [1, 2, 3, 4, 5]
    empty = recs[3]
    assert empty["gt_bbox"].shape == (0, 4) and empty["gt_class"].shape == (0, 1) and empty["gt_poly"] == []
    # empty_ratio r keeps int(3 * r / (1 - r)) empty images (at most the 2 available)
    assert len(_ds(coco, data_fields=ALL_FIELDS, allow_empty=True, empty_ratio=0.3)) == 4
    assert len(_ds(coco, data_fields=ALL_FIELDS, allow_empty=True, empty_ratio=0.1)) == 3
    assert len(_ds(coco, data_fields=ALL_FIELDS, allow_empty=True, empty_ratio=0.5)) == 5


def test_eval_fields_keep_reference_filtering_and_log_it(coco, caplog):
    with caplog.at_level(logging.INFO, logger="ppdet_htc.data.coco"):
        ds = _ds(coco)
        recs = ds.roidbs
    assert [int(r["im_id"][0]) for r in recs] == [1, 2, 3]
    assert set(recs[0]) == {"im_file", "im_id", "h", "w"}
    text = caplog.text
    assert "3 of 5 images used" in text
    assert "1 no annotation" in text and "1 no usable annotation" in text


def test_sample_num_and_repeat(coco):
    ds = _ds(coco, sample_num=2)
    assert [int(r["im_id"][0]) for r in ds.roidbs] == [1, 2]
    rep = _ds(coco, repeat=3)
    assert len(rep) == 9
    assert [int(rep[i]["im_id"][0]) for i in range(9)] == [1, 2, 3] * 3
    with pytest.raises(IndexError):
        rep[9]


def test_getitem_returns_private_copies(coco):
    ds = _ds(coco, data_fields=ALL_FIELDS)
    a = ds[0]
    a["gt_bbox"][0, 0] = 99.0
    a["gt_poly"][0][0][0] = -1.0
    assert ds[0]["gt_bbox"][0, 0] == np.float32(1.235)
    assert ds[0]["gt_poly"][0][0][0] == pytest.approx(1.23456)


def test_parsing_is_lazy_and_missing_images_found_by_check_files(tmp_path):
    paths = write_coco(tmp_path, skip_images=("img_b.png",))
    ds = _ds(paths, data_fields=ALL_FIELDS)
    assert ds._records is None  # nothing read at construction
    assert len(ds) == 3  # a missing image does not fail parsing
    with pytest.raises(FileNotFoundError) as e:
        ds.check_files()
    assert "img_b.png" in str(e.value) and "img_a.jpg" not in str(e.value)


def test_degenerate_polygons_are_dropped_with_their_annotation(tmp_path):
    spec = standard_spec()
    spec["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]  # fewer than 3 points
    paths = write_coco(tmp_path, spec)
    assert 1 not in _by_id(_ds(paths, data_fields=ALL_FIELDS))
    assert 1 in _by_id(_ds(paths, data_fields=["image", "gt_bbox", "gt_class"]))


def test_semantic_record_fields(coco):
    ds = _ds(coco, data_fields=ALL_FIELDS, load_semantic=True)
    assert ds.roidbs[0]["semantic_file"] == os.path.join(coco["dataset_dir"], "stuffthingmaps", "train2017",
                                                         "img_a.png")
    ds = _ds(coco, data_fields=ALL_FIELDS, load_semantic=True, semantic_dir="sem")
    assert ds.roidbs[1]["semantic_file"] == os.path.join(coco["dataset_dir"], "sem", "img_b.png")
    ds = _ds(coco, data_fields=ALL_FIELDS, load_semantic=True, semantic_source="instances")
    assert ds.roidbs[0]["semantic_from_instances"] is True
    with pytest.raises(ValueError, match="gt_poly"):
        _ds(coco, data_fields=["image", "gt_class"], load_semantic=True, semantic_source="instances")
    with pytest.raises(ValueError, match="semantic_source"):
        _ds(coco, load_semantic=True, semantic_source="stuff")


def test_semantic_from_instances_records_crowd_regions_even_without_load_crowd(tmp_path):
    spec = standard_spec()
    crowd = dict(spec["annotations"][-1], id=34, image_id=3, segmentation=rect_poly(0, 0, 4, 4))
    spec["annotations"].append(crowd)
    paths = write_coco(tmp_path, spec)
    rec = _by_id(_ds(paths, data_fields=ALL_FIELDS, load_semantic=True, semantic_source="instances"))[3]
    assert rec["semantic_crowd_poly"] == [rect_poly(0, 0, 4, 4)]
    assert len(rec["gt_poly"]) == 2  # the crowd one is not an object


def test_built_from_yaml_tag(coco):
    tagged = TaggedDict("COCODataSet", {"dataset_dir": coco["dataset_dir"], "image_dir": "images",
                                        "anno_path": coco["anno_path"], "data_fields": ALL_FIELDS})
    ds = create(tagged, Config())
    assert isinstance(ds, COCODataSet) and len(ds) == 3
    with pytest.raises(ValueError, match="allow_empty"):
        create(TaggedDict("COCODataSet", {"allow_empty": "yes"}), Config())


# ------------------------------------------------------------------------------------------ bad input


def _write_spec(tmp_path, mutate):
    spec = standard_spec()
    mutate(spec)
    return write_coco(tmp_path, spec)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        len(COCODataSet(dataset_dir=str(tmp_path), image_dir="images", anno_path="nope.json"))
    assert os.path.join(str(tmp_path), "nope.json") in str(e.value)


def test_anno_path_unset():
    with pytest.raises(ValueError, match="anno_path"):
        len(COCODataSet(dataset_dir="x"))


def test_invalid_json(tmp_path):
    paths = write_coco(tmp_path)
    with open(paths["anno_file"], "w") as f:
        f.write('{"images": [')
    with pytest.raises(AnnotationError) as e:
        len(_ds(paths))
    assert paths["anno_file"] in str(e.value) and "invalid JSON" in str(e.value)


def test_unknown_category_names_annotation_image_and_file(tmp_path):
    paths = _write_spec(tmp_path, lambda s: s["annotations"][3].update(category_id=42))
    with pytest.raises(AnnotationError) as e:
        len(_ds(paths))
    msg = str(e.value)
    assert paths["anno_file"] in msg and "annotation id 21" in msg and "image_id 2" in msg and "42" in msg


def test_unknown_image_id(tmp_path):
    paths = _write_spec(tmp_path, lambda s: s["annotations"][0].update(image_id=77))
    with pytest.raises(AnnotationError) as e:
        len(_ds(paths))
    msg = str(e.value)
    assert paths["anno_file"] in msg and "annotation id 11" in msg and "image_id 77" in msg


def test_missing_image_directory(tmp_path):
    paths = write_coco(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        len(COCODataSet(dataset_dir=paths["dataset_dir"], image_dir="val2017", anno_path=paths["anno_path"]))
    assert os.path.join(paths["dataset_dir"], "val2017") in str(e.value)


def test_missing_segmentation_with_gt_poly(tmp_path):
    paths = _write_spec(tmp_path, lambda s: s["annotations"][6].pop("segmentation"))
    assert len(_ds(paths, data_fields=["image", "gt_bbox", "gt_class"])) == 3  # not needed -> fine
    with pytest.raises(AnnotationError) as e:
        len(_ds(paths, data_fields=ALL_FIELDS))
    msg = str(e.value)
    assert "annotation id 32" in msg and paths["anno_file"] in msg and "segmentation" in msg


def test_malformed_bbox_and_missing_keys(tmp_path):
    paths = _write_spec(tmp_path, lambda s: s["annotations"][6].update(bbox=[1, 2, 3]))
    with pytest.raises(AnnotationError, match="annotation id 32.*bbox"):
        len(_ds(paths))
    paths = _write_spec(tmp_path, lambda s: s.pop("categories"))
    with pytest.raises(AnnotationError, match="'categories' must be a list"):
        len(_ds(paths))
    paths = _write_spec(tmp_path, lambda s: s["images"][0].pop("file_name"))
    with pytest.raises(AnnotationError, match=r"images\[0\].*file_name"):
        len(_ds(paths))
    paths = _write_spec(tmp_path, lambda s: s["images"].append(dict(s["images"][0])))
    with pytest.raises(AnnotationError, match="image id 3 appears twice"):
        len(_ds(paths))


def test_no_usable_image_is_an_error(tmp_path):
    paths = _write_spec(tmp_path, lambda s: s.update(annotations=[]))
    with pytest.raises(AnnotationError) as e:
        len(_ds(paths))
    assert paths["anno_file"] in str(e.value) and "5 no annotation" in str(e.value)


def test_unknown_data_field():
    with pytest.raises(ValueError) as e:
        COCODataSet(data_fields=["image", "gt_polys"])
    assert "gt_polys" in str(e.value) and "gt_poly" in str(e.value)


def test_annotation_file_without_annotations_loads_images_only(tmp_path):
    paths = _write_spec(tmp_path, lambda s: s.pop("annotations"))
    assert len(_ds(paths)) == 5
    with pytest.raises(AnnotationError, match="gt_bbox"):
        len(_ds(paths, data_fields=["image", "gt_bbox"]))


def test_rle_size_must_match_image(tmp_path):
    def mutate(s):
        s["annotations"][3]["segmentation"]["size"] = [10, 10]

    paths = _write_spec(tmp_path, mutate)
    with pytest.raises(AnnotationError, match="annotation id 21.*RLE size"):
        len(_ds(paths, data_fields=ALL_FIELDS))


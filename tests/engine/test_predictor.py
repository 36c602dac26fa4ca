"""Detector.predict accepts what the command line accepts: paths, encoded bytes, grayscale, RGBA, floats."""
import os

import cv2
import numpy as np
import pytest

from ppdet_htc.engine.predictor import Detector

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "demo", "htc_r18_demo_shapes.yml")


@pytest.fixture(scope="module")
def detector():
    return Detector(DEMO, overrides=["worker_num=0"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    im = np.full((160, 200, 3), (70, 90, 60), np.uint8)
    cv2.circle(im, (60, 70), 35, (250, 210, 40), -1)
    cv2.fillPoly(im, [np.array([[120, 130], [190, 130], [155, 60]], np.int32)], (40, 60, 230))
    path = str(tmp_path_factory.mktemp("img") / "scene.png")
    cv2.imwrite(path, im[:, :, ::-1])  # stored as an ordinary file (BGR on disk)
    return im, path


def _same(a, b):
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    np.testing.assert_array_equal(a["masks"], b["masks"])


def test_class_names_come_from_the_config_without_a_dataset(detector):
    assert detector.class_names == ["ellipse", "quad", "triangle", "pentagon"]
    assert detector.class_names_source == "label_list in the config"
    assert detector.clsid2catid == {0: 1, 1: 2, 2: 3, 3: 4}


def test_rgb_path_bytes_and_float_images_agree(detector, scene):
    rgb, path = scene
    ref = detector.predict(rgb)
    assert len(ref["scores"]) > 0 and set(ref["class_names"]) <= set(detector.class_names)
    _same(detector.predict(path), ref)
    with open(path, "rb") as f:
        _same(detector.predict(f.read()), ref)
    _same(detector.predict(rgb.astype(np.float32) / 255.0), ref)  # 0-1 floats
    _same(detector.predict(rgb.astype(np.float64)), ref)  # 0-255 floats
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 128, np.uint8)], axis=2)
    _same(detector.predict(rgba), ref)
    batch = detector.predict([rgb, path], batch_size=2)
    _same(batch[0], ref)


def test_grayscale_images_equal_their_three_channel_copy(detector, scene, tmp_path):
    gray = cv2.cvtColor(scene[0], cv2.COLOR_RGB2GRAY)
    ref = detector.predict(np.stack([gray] * 3, axis=2))
    _same(detector.predict(gray), ref)
    _same(detector.predict(gray[:, :, None]), ref)
    path = str(tmp_path / "gray.png")
    cv2.imwrite(path, gray)  # a one-channel file, as the command line would read it
    _same(detector.predict(path), ref)


def test_unusable_inputs_are_clear_errors(detector):
    with pytest.raises(TypeError, match="file paths, encoded bytes or image arrays"):
        detector.predict(12)
    with pytest.raises(ValueError, match="HxWx3"):
        detector.predict(np.zeros((3, 64, 64), np.uint8))

"""Sample/batch transforms: mmdetection's pre-processing (SEMANTICS_MMDET.md 2, 12.1, 11) against independent
NumPy/OpenCV transcriptions, and PaddleDetection's default numerics unchanged.
"""
import cv2
import numpy as np
import pytest

from ppdet_htc.errors import ConfigError
from ppdet_htc.data.transforms import (NormalizeImage, PadBatch, RandomFlip, RandomResize, Resize, SegRescale,
                                       build_transforms)

MMDET_MEAN = [123.675, 116.28, 103.53]
MMDET_STD = [58.395, 57.12, 57.375]
MMDET_TEST_PIPELINE = [
    {"Decode": {}},
    {"Resize": {"target_size": [800, 1333], "keep_ratio": True, "interp": 1, "scale_from_size": True}},
    {"NormalizeImage": {"is_scale": False, "mean": MMDET_MEAN, "std": MMDET_STD, "float32_arithmetic": True}},
    {"Permute": {}},
]


def mmcv_rescale_size(h, w, scale=(1333, 800)):
    """mmcv ``rescale_size`` for a tuple scale, written from SEMANTICS_MMDET 2.2: (new_h, new_w)."""
    s = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * s + 0.5), int(w * s + 0.5)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _sample(h, w, **extra):
    return dict(image=_image(h, w), h=h, w=w, im_shape=np.array([h, w], np.float32),
                scale_factor=np.ones(2, np.float32), **extra)


# ------------------------------------------------------------------------------------------- resize


@pytest.mark.parametrize("h, w, expected", [
    (480, 640, (800, 1067)),   # SEMANTICS_MMDET 10: w_s = 1067/640 != h_s = 800/480
    (640, 480, (1067, 800)),
    (427, 640, (800, 1199)),
    (375, 500, (800, 1067)),
    (333, 1000, (444, 1333)),  # long side binds
    (1001, 2666, (501, 1333)),  # 1001 * 0.5 = 500.5: rounds half up (Python's round() would give 500)
    (800, 1333, (800, 1333)),
    (1, 1, (800, 800)),
])
def test_scale_from_size_sizes_and_scale_factors(h, w, expected):
    assert mmcv_rescale_size(h, w) == expected
    img = _image(h, w)
    out = Resize([800, 1333], keep_ratio=True, interp=1, scale_from_size=True)(dict(_sample(h, w), image=img))
    new_h, new_w = expected
    assert out["image"].shape == (new_h, new_w, 3) and out["image"].dtype == np.float32
    np.testing.assert_array_equal(out["image"], cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(out["im_shape"], np.array([new_h, new_w], np.float32))
    np.testing.assert_array_equal(out["scale_factor"], np.array([new_h / h, new_w / w], np.float32))
    assert out["scale_factor"].dtype == np.float32


def test_scale_from_size_differs_from_the_paddle_default():
    """640x480: PaddleDetection's fx=fy=5/3 keeps im_shape 1066.67 and one scale factor; mmdetection's does not."""
    img = _image(480, 640)
    paddle_style = Resize([800, 1333], keep_ratio=True, interp=1)(dict(_sample(480, 640), image=img))
    np.testing.assert_array_equal(paddle_style["im_shape"], np.array([800, 640 * (800 / 480)], np.float32))
    np.testing.assert_array_equal(paddle_style["scale_factor"], np.array([800 / 480] * 2, np.float32))
    np.testing.assert_array_equal(paddle_style["image"],
                                  cv2.resize(img, None, None, fx=800 / 480, fy=800 / 480, interpolation=1))
    assert paddle_style["image"].shape == (800, 1067, 3)
    mm = Resize([800, 1333], keep_ratio=True, interp=1, scale_from_size=True)(dict(_sample(480, 640), image=img))
    assert mm["scale_factor"][0] != mm["scale_factor"][1]


def test_scale_from_size_without_keep_ratio():
    out = Resize([512, 768], keep_ratio=False, scale_from_size=True)(_sample(300, 500))
    assert out["image"].shape[:2] == (512, 768)
    np.testing.assert_array_equal(out["scale_factor"], np.array([512 / 300, 768 / 500], np.float32))


def test_scale_from_size_annotations():
    """Boxes x f32(scale) per axis, clipped to the integer size; full-image masks, RLE/bitmap masks and the
    semantic map resized to the output size with nearest neighbour (mmdetection BitmapMasks.rescale)."""
    rng = np.random.default_rng(4)
    h, w = 480, 640
    boxes = np.array([[10.5, 20.25, 300.75, 470.5], [600, 0, 640, 480]], np.float32)
    masks = rng.integers(0, 2, size=(2, h, w), dtype=np.uint8)
    sem = rng.integers(0, 183, size=(h, w), dtype=np.uint8)
    out = Resize([800, 1333], keep_ratio=True, interp=1, scale_from_size=True)(
        _sample(h, w, gt_bbox=boxes.copy(), gt_segm=masks.copy(), gt_poly=[masks[0].copy(), [[0, 0, 10, 0, 10, 10]]],
                semantic=sem.copy()))
    sx, sy = np.float32(1067 / 640), np.float32(800 / 480)
    want = boxes * np.array([sx, sy, sx, sy], np.float32)
    want[:, 0::2] = np.clip(want[:, 0::2], 0, 1067)
    want[:, 1::2] = np.clip(want[:, 1::2], 0, 800)
    np.testing.assert_array_equal(out["gt_bbox"], want)
    near = [cv2.resize(m, (1067, 800), interpolation=cv2.INTER_NEAREST) for m in masks]
    np.testing.assert_array_equal(out["gt_segm"], np.stack(near))
    np.testing.assert_array_equal(out["gt_poly"][0], near[0])
    np.testing.assert_allclose(out["gt_poly"][1][0], [0, 0, 10 * sx, 0, 10 * sx, 10 * sy], rtol=1e-6)
    np.testing.assert_array_equal(out["semantic"], cv2.resize(sem, (1067, 800), interpolation=cv2.INTER_NEAREST))


def test_paddle_default_resize_is_unchanged():
    """PaddleDetection numerics (golden parity depends on them): fx=fy=s, unrounded im_shape, [s, s]."""
    img = _image(427, 640)
    out = Resize([800, 1333], keep_ratio=True, interp=1)(dict(_sample(427, 640), image=img,
                                                               gt_bbox=np.array([[1, 2, 3, 4]], np.float32)))
    s = min(800 / 427, 1333 / 640)
    np.testing.assert_array_equal(out["image"], cv2.resize(img, None, None, fx=s, fy=s, interpolation=1))
    np.testing.assert_array_equal(out["im_shape"], np.array([427 * s, 640 * s], np.float32))
    np.testing.assert_array_equal(out["scale_factor"], np.array([s, s], np.float32))
    np.testing.assert_array_equal(out["gt_bbox"], np.array([[1, 2, 3, 4]], np.float32) * s)


# ------------------------------------------------------------------------------------------- random resize


def test_random_range_multiscale_like_mmdetection():
    """mmdetection's dconv model: img_scale=[(1600, 400), (1600, 1400)], multiscale_mode='range'."""
    op = RandomResize([[400, 1600], [1400, 1600]], keep_ratio=True, random_range=True, scale_from_size=True)
    rng = np.random.default_rng(0)
    targets = np.array([op.sample_target(rng) for _ in range(4000)])
    assert (targets[:, 1] == 1600).all()
    assert targets[:, 0].min() == 400 and targets[:, 0].max() == 1400
    assert len(np.unique(targets[:, 0])) > 900  # every integer short side is possible
    for h, w, seed in [(480, 640, 1), (640, 427, 2), (200, 1000, 3)]:
        target = op.sample_target(np.random.default_rng(seed))
        out = op(_sample(h, w), np.random.default_rng(seed))
        new_h, new_w = mmcv_rescale_size(h, w, scale=(target[1], target[0]))
        assert out["image"].shape[:2] == (new_h, new_w) and max(new_h, new_w) <= 1600
        np.testing.assert_array_equal(out["im_shape"], [new_h, new_w])


def test_random_choice_and_errors():
    op = RandomResize([[100, 200], [300, 400]], keep_ratio=False)
    seen = {tuple(op(_sample(50, 60), np.random.default_rng(i))["image"].shape[:2]) for i in range(20)}
    assert seen == {(100, 200), (300, 400)}
    with pytest.raises(ConfigError, match="at least two with random_range"):
        RandomResize([[400, 1600]], random_range=True)
    with pytest.raises(ConfigError, match="RandomResize.target_size"):
        RandomResize(800)


# ------------------------------------------------------------------------------------------- flip


def test_flip_boxes_masks_and_semantic():
    rng = np.random.default_rng(2)
    masks = rng.integers(0, 2, size=(2, 6, 8), dtype=np.uint8)
    sem = rng.integers(0, 10, size=(6, 8), dtype=np.uint8)
    img = _image(6, 8)
    out = RandomFlip(prob=1.0)(dict(_sample(6, 8), image=img.copy(), gt_bbox=np.array([[1, 2, 3, 5]], np.float32),
                                    gt_segm=masks.copy(), semantic=sem.copy()), np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], img[:, ::-1])
    np.testing.assert_array_equal(out["gt_bbox"], [[5, 2, 7, 5]])  # mmdetection: x1' = W - x2, no -1
    np.testing.assert_array_equal(out["gt_segm"], masks[:, :, ::-1])
    np.testing.assert_array_equal(out["semantic"], sem[:, ::-1])


# ------------------------------------------------------------------------------------------- normalise


def test_float32_normalisation_bit_exact_for_all_uint8_values():
    """Every uint8 value of every channel: float32 ``(x - mean)/std`` (mmdetection 3.x), which equals mmcv 2.x's
    ``cv2.subtract(f32 mean)`` then ``* 1/f64(f32(std))`` in double; the float64 default differs."""
    x = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)  # [256, 1, 3]
    out = NormalizeImage(mean=MMDET_MEAN, std=MMDET_STD, is_scale=False, float32_arithmetic=True)({"image": x})
    got = out["image"]
    assert got.dtype == np.float32
    default = NormalizeImage(mean=MMDET_MEAN, std=MMDET_STD, is_scale=False)({"image": x})["image"]
    for c in range(3):
        v = np.arange(256, dtype=np.float32)
        torch_like = (v - np.float32(MMDET_MEAN[c])) / np.float32(MMDET_STD[c])
        mmcv2x = ((v - np.float32(MMDET_MEAN[c])).astype(np.float64)
                  * (1.0 / np.float64(np.float32(MMDET_STD[c])))).astype(np.float32)
        np.testing.assert_array_equal(got[:, 0, c], torch_like)
        np.testing.assert_array_equal(got[:, 0, c], mmcv2x)
        assert (default[:, 0, c] != torch_like).sum() > 30  # the option matters


# ------------------------------------------------------------------------------------------- whole pipeline


def test_mmdet_test_pipeline_end_to_end(tmp_path):
    """Decode -> Resize -> NormalizeImage -> Permute -> PadBatch(32) on a 640x480 JPEG equals an independent
    transcription of mmdetection's steps: BGR decode, cv2 resize to (1067, 800), BGR->RGB, float32 normalise,
    zero padding at the bottom/right to 800x1088 (after normalisation)."""
    bgr = _image(480, 640, seed=9)
    path = str(tmp_path / "im.jpg")
    cv2.imwrite(path, bgr)
    ops = build_transforms(MMDET_TEST_PIPELINE)
    sample = {"im_file": path, "h": 480, "w": 640}
    for op in ops:
        sample = op(sample)
    (sample,) = PadBatch(pad_to_stride=32)([sample])

    decoded = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    resized = cv2.resize(decoded, (1067, 800), interpolation=cv2.INTER_LINEAR)
    rgb = resized[:, :, ::-1].astype(np.float32)
    norm = (rgb - np.array(MMDET_MEAN, np.float32)) / np.array(MMDET_STD, np.float32)
    want = np.zeros((3, 800, 1088), np.float32)
    want[:, :, :1067] = norm.transpose(2, 0, 1)
    assert sample["image"].shape == (3, 800, 1088)
    np.testing.assert_array_equal(sample["image"], want)
    np.testing.assert_array_equal(sample["im_shape"], [800, 1067])
    np.testing.assert_array_equal(sample["scale_factor"], np.array([800 / 480, 1067 / 640], np.float32))


def test_semantic_pad_and_rescale_match_mmdetection():
    """Labels padded with 255 to the padded size, then 1/8 nearest = every 8th pixel from the top-left
    (2.x SegRescale via cv2 dsize, 3.x F.interpolate(scale_factor=1/8): src = 8 * dst)."""
    rng = np.random.default_rng(6)
    sem = rng.integers(0, 183, size=(800, 1067), dtype=np.uint8)
    s = {"image": np.zeros((3, 800, 1067), np.float32), "semantic": sem}
    (s,) = SegRescale(0.125)(PadBatch(pad_to_stride=32)([s]))
    padded = np.full((800, 1088), 255, np.uint8)
    padded[:, :1067] = sem
    np.testing.assert_array_equal(s["semantic"], padded[::8, ::8])

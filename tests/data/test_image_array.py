"""Image arrays from the Python API become what the command line would decode (RGB uint8 HxWx3)."""
import numpy as np
import pytest

from ppdet_htc.data.image_array import as_rgb_uint8


def _rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def test_uint8_rgb_is_unchanged_and_contiguous():
    rgb = _rgb()
    out = as_rgb_uint8(rgb[:, ::-1])
    np.testing.assert_array_equal(out, rgb[:, ::-1])
    assert out.flags.c_contiguous and out.dtype == np.uint8


def test_grayscale_and_rgba():
    gray = _rgb()[:, :, 0]
    expected = np.stack([gray] * 3, axis=2)
    np.testing.assert_array_equal(as_rgb_uint8(gray), expected)
    np.testing.assert_array_equal(as_rgb_uint8(gray[:, :, None]), expected)
    rgba = np.concatenate([_rgb(), np.full((5, 7, 1), 17, np.uint8)], axis=2)
    np.testing.assert_array_equal(as_rgb_uint8(rgba), rgba[:, :, :3])


def test_float_images_in_both_ranges_and_other_dtypes():
    rgb = _rgb()
    np.testing.assert_array_equal(as_rgb_uint8(rgb.astype(np.float32) / 255.0), rgb)
    np.testing.assert_array_equal(as_rgb_uint8(rgb.astype(np.float64)), rgb)
    np.testing.assert_array_equal(as_rgb_uint8(rgb.astype(np.float16) / np.float16(255)), rgb)
    np.testing.assert_array_equal(as_rgb_uint8(rgb.astype(np.uint16) * 257), rgb)
    np.testing.assert_array_equal(as_rgb_uint8(rgb.astype(np.int64)), rgb)
    np.testing.assert_array_equal(as_rgb_uint8(np.array([[[300.0, -4.0, 12.4]]])), [[[255, 0, 12]]])
    mask = np.zeros((2, 2), bool)
    mask[0, 0] = True
    assert as_rgb_uint8(mask)[0, 0].tolist() == [255, 255, 255] and as_rgb_uint8(mask)[1, 1].tolist() == [0, 0, 0]


def test_bad_arrays_name_the_problem():
    with pytest.raises(ValueError, match=r"HxW or HxWx1 \(grayscale\), HxWx3 \(RGB\) or HxWx4 \(RGBA\)"):
        as_rgb_uint8(np.zeros((3, 5, 7), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        as_rgb_uint8(np.full((2, 2, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="image 2"):
        as_rgb_uint8(np.zeros((0, 3, 3)), "image 2")

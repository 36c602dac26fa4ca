"""Turn the image arrays people pass to the Python API into the RGB uint8 ``HxWx3`` the model reads.

The command line decodes files with OpenCV (grayscale and RGBA files become 3-channel colour, 16-bit
files 8-bit); :func:`as_rgb_uint8` gives arrays the same treatment, so ``Detector.predict`` accepts what
``infer.py`` accepts. The channel convention is **RGB** (as PIL and matplotlib give): convert an array
read with ``cv2.imread`` (BGR) with ``cv2.cvtColor(im, cv2.COLOR_BGR2RGB)`` first.

=================================  =====================================================================
input                              becomes
=================================  =====================================================================
``HxW`` or ``HxWx1`` (grayscale)   the gray value in all three channels
``HxWx3``                          taken as RGB
``HxWx4`` (RGBA)                   RGB; the alpha channel is dropped (as OpenCV does for files)
uint8                              as is
bool                               0 / 255
float (any precision)              values in ``[0, 1]`` (max <= 1) are scaled by 255, otherwise taken as
                                   0-255; rounded and clipped. NaN/inf is an error
uint16                             divided by 257 (65535 -> 255), as OpenCV reduces 16-bit files
other integers                     clipped to 0-255
=================================  =====================================================================
"""
import numpy as np

__all__ = ["as_rgb_uint8"]


def as_rgb_uint8(image, name="image"):
    """``image`` (numpy array or anything ``np.asarray`` accepts, e.g. a PIL image) -> RGB uint8 HxWx3."""
    arr = np.asarray(image)
    if arr.dtype == object or arr.size == 0:
        raise ValueError("{}: expected an image array, got {} with shape {}".format(name, arr.dtype, arr.shape))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ValueError("{}: expected HxW or HxWx1 (grayscale), HxWx3 (RGB) or HxWx4 (RGBA), got shape {}".format(
            name, arr.shape))
    return np.ascontiguousarray(_to_uint8(arr, name))


def _to_uint8(arr, name):
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float32)
        if not np.isfinite(values).all():
            raise ValueError("{}: the float image contains NaN or infinite values".format(name))
        if values.max() <= 1.0:
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if arr.dtype == np.uint16:
        return np.rint(arr.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise ValueError("{}: unsupported image dtype {}".format(name, arr.dtype))

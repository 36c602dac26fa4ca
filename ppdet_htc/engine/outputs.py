"""Turn the model's batched output tensors into one plain numpy dict per image."""
import numpy as np

__all__ = ["split_outputs"]


def split_outputs(outputs, im_ids=None):
    """Model output (``bbox``, ``bbox_num``, ``mask``, ``origin_shape``) -> list of per-image dicts.

    Each dict: ``boxes float32 [k,4]`` (x1, y1, x2, y2, original pixels), ``scores [k]``, ``labels int64 [k]``,
    ``masks uint8 [k,h,w]`` cropped to the image's own size (or None), ``im_id`` when given.
    """
    bbox = outputs["bbox"].numpy()
    nums = outputs["bbox_num"].numpy().astype(np.int64)
    masks = outputs.get("mask")
    masks = masks.numpy() if masks is not None else None
    shapes = outputs["origin_shape"].numpy().astype(np.int64)
    if im_ids is not None:
        im_ids = np.asarray(im_ids.numpy() if hasattr(im_ids, "numpy") else im_ids).reshape(-1)
    results = []
    start = 0
    for i, n in enumerate(nums):
        h, w = int(shapes[i, 0]), int(shapes[i, 1])
        rows = bbox[start:start + n]
        det = {
            "boxes": rows[:, 2:6].astype(np.float32),
            "scores": rows[:, 1].astype(np.float32),
            "labels": rows[:, 0].astype(np.int64),
            "masks": masks[start:start + n, :h, :w] if masks is not None else None,
            "image_size": (h, w),
        }
        if im_ids is not None:
            det["im_id"] = int(im_ids[i])
        results.append(det)
        start += n
    return results

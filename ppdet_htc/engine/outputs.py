"""Turn the model's batched output tensors into one plain numpy dict per image (result conversion)."""
import numpy as np

from ..utils.timing import phase

__all__ = ["split_outputs"]


def split_outputs(outputs, im_ids=None, mask_post_process=None):
    """Model output -> list of per-image dicts.

    ``outputs``: ``bbox``, ``bbox_num``, ``origin_shape`` and either ``mask_prob`` + ``mask_box`` (dynamic
    mode: masks are pasted here, per image at its own size, by ``mask_post_process``, default
    ``MaskPostProcess()``) or an already pasted ``mask`` (exported programs).
    Each dict: ``boxes float32 [k,4]`` (x1, y1, x2, y2, original pixels), ``scores [k]``, ``labels int64 [k]``,
    ``masks uint8 [k,h,w]`` at the image's own size (or None), ``image_size``, ``im_id`` when given.
    """
    bbox = outputs["bbox"].numpy()
    nums = outputs["bbox_num"].numpy().astype(np.int64)
    shapes = outputs["origin_shape"].numpy().astype(np.int64)
    pasted = outputs.get("mask")
    pasted = pasted.numpy() if pasted is not None else None
    probs = outputs.get("mask_prob") if pasted is None else None
    if probs is not None and mask_post_process is None:
        from ..modeling.post_process import MaskPostProcess

        mask_post_process = MaskPostProcess()
    if im_ids is not None:
        im_ids = np.asarray(im_ids.numpy() if hasattr(im_ids, "numpy") else im_ids).reshape(-1)
    results = []
    start = 0
    for i, n in enumerate(nums):
        h, w = int(shapes[i, 0]), int(shapes[i, 1])
        rows = bbox[start:start + n]
        if pasted is not None:
            masks = pasted[start:start + n, :h, :w]
        elif probs is not None:
            with phase("mask_paste"):
                masks = mask_post_process.paste_image(probs[start:start + n], outputs["mask_box"][start:start + n],
                                                      h, w).numpy()
        else:
            masks = None
        det = {
            "boxes": rows[:, 2:6].astype(np.float32),
            "scores": rows[:, 1].astype(np.float32),
            "labels": rows[:, 0].astype(np.int64),
            "masks": masks,
            "image_size": (h, w),
        }
        if im_ids is not None:
            det["im_id"] = int(im_ids[i])
        results.append(det)
        start += n
    return results

"""Hybrid Task Cascade (Chen et al., CVPR 2019): the whole model, read top to bottom.

    C = backbone(image); P = FPN(C); S, seg = semantic_head(P)          (S optional)
    proposals = RPN(P)
    for t in 0..2:  box_t = B_t(RoIAlign(P, r) + pool(RoIAlign(S, r)));  r = refine(box_t)
    detections = NMS(softmax(mean_t logits_t), decode(deltas_2, r_1))
    masks = mean_t sigmoid(M_t(RoIAlign(P, det) + RoIAlign(S, det)))   (information flow M_0 -> M_1 -> M_2)
"""
import paddle
import paddle.nn as nn

from ...core import register
from ...core.config import create
from ...utils.timing import phase
from ...errors import ConfigError

__all__ = ["HybridTaskCascade"]


@register
class HybridTaskCascade(nn.Layer):
    """HTC meta-architecture. ``forward`` returns losses in train mode and detections in eval mode.

    Inference output (all tensors, detections of all images concatenated image-major):
    ``bbox [K,6]`` rows ``[label, score, x1, y1, x2, y2]`` in original-image pixels, ``bbox_num [B]``,
    ``origin_shape [B,2]`` (h, w), and the masks as ``mask_prob [K,M,M]`` (probabilities of each
    detection's class) with their paste boxes ``mask_box [K,4]`` (original pixels). Pasting them into
    full-image masks is result conversion, done per image outside the forward pass
    (``engine.outputs.split_outputs``), so that the forward pass never waits for the host; exported
    programs (static graph) paste inside and also return ``mask [K,H,W]`` uint8.
    """

    __category__ = "architecture"
    __inject__ = ["bbox_post_process", "mask_post_process"]

    def __init__(
        self,
        backbone: object,
        neck: object,
        rpn_head: object,
        bbox_head: object,
        bbox_post_process: object = "BBoxPostProcess",
        mask_post_process: object = "MaskPostProcess",
        fused_semantic_head: object = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.bbox_head = bbox_head
        self.bbox_post_process = bbox_post_process
        self.mask_post_process = mask_post_process
        self.fused_semantic_head = fused_semantic_head

    @classmethod
    def from_config(cls, cfg, *args, **kwargs):
        backbone = create(cfg["backbone"], where="HybridTaskCascade.backbone")
        neck = create(cfg["neck"], input_shape=backbone.out_shape, where="HybridTaskCascade.neck")
        shapes = neck.out_shape
        rpn_head = create(cfg["rpn_head"], input_shape=shapes, where="HybridTaskCascade.rpn_head")
        semantic = cfg.get("fused_semantic_head")
        if semantic:
            semantic = create(semantic, input_shape=shapes, where="HybridTaskCascade.fused_semantic_head")
        bbox_head = create(cfg["bbox_head"], input_shape=shapes,
                           semantic_shape=semantic.out_shape if semantic else None,
                           where="HybridTaskCascade.bbox_head")
        return {
            "backbone": backbone,
            "neck": neck,
            "rpn_head": rpn_head,
            "bbox_head": bbox_head,
            "fused_semantic_head": semantic or None,
        }

    @property
    def with_semantic(self):
        return self.fused_semantic_head is not None

    def _features(self, inputs):
        with phase("backbone_fpn"):
            feats = self.neck(self.backbone(inputs))
        semantic_feat, seg_logits = None, None
        if self.with_semantic:
            with phase("semantic_head"):
                semantic_feat, seg_logits = self.fused_semantic_head(feats)
        return feats, semantic_feat, seg_logits

    def forward(self, inputs):
        if self.training:
            return self.get_loss(inputs)
        return self.get_pred(inputs)

    def get_loss(self, inputs):
        """Dict of losses (keys as in PaddleDetection) plus ``loss``, their sum."""
        feats, semantic_feat, seg_logits = self._features(inputs)
        rois, rois_num, losses = self.rpn_head(feats, inputs)
        losses = dict(losses)
        losses.update(self.bbox_head.loss(feats, rois, rois_num, inputs, semantic_feat))
        if self.with_semantic:
            if "semantic" not in inputs:
                raise ConfigError(
                    "the config has a FusedSemanticHead but the batch has no 'semantic' labels; "
                    "enable semantic labels in the dataset (see README: semantic labels) or remove the head"
                )
            losses.update(self.fused_semantic_head.loss(seg_logits, inputs["semantic"]))
        losses["loss"] = paddle.add_n([v for v in losses.values()])
        return losses

    def get_pred(self, inputs):
        im_shape = inputs["im_shape"].astype("float32")
        scale_factor = inputs["scale_factor"].astype("float32")
        feats, semantic_feat, _ = self._features(inputs)
        with phase("rpn"):
            rois, rois_num, _ = self.rpn_head(feats, inputs)
        probs, deltas, last_rois = self.bbox_head.predict(feats, rois, rois_num, im_shape, semantic_feat)
        # Exported programs: kernels of Paddle 2.x and Paddle Inference's oneDNN backend reject empty
        # tensors, so a placeholder detection (score -1) keeps every tensor non-empty; the exported
        # outputs end with it and deploy/python/infer.py drops it (dygraph outputs never contain it).
        exported = not paddle.in_dynamic_mode()
        with phase("box_postprocess"):
            dets_in, dets_out, dets_num, origin_shape = self.bbox_post_process(
                probs, deltas, last_rois, rois_num, im_shape, scale_factor, placeholder=exported)
        labels = dets_in[:, 0].astype("int64")
        mask_prob = self.bbox_head.mask_head.predict(feats, dets_in[:, 2:], dets_num, labels, semantic_feat)
        mask_box = self.bbox_post_process.paste_boxes(dets_in, dets_out, dets_num, scale_factor)
        out = {"bbox": dets_out, "bbox_num": dets_num, "mask_prob": mask_prob, "mask_box": mask_box,
               "origin_shape": origin_shape}
        if exported:
            out["mask"] = self.mask_post_process(mask_prob, mask_box, dets_num, origin_shape)
        return out

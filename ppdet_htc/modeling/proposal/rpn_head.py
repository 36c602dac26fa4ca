"""Region Proposal Network head: shared 3x3 conv, per-anchor objectness logit and box deltas."""
from typing import Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import ParamAttr
from paddle.nn.initializer import Constant, Normal

from ...core import build_nested, register
from ..layers import Conv2D, inference, relu
from ..sampling import GroundTruth
from ..shape_spec import ShapeSpec, in_channel_from
from ...utils.timing import phase
from .anchor_generator import AnchorGenerator
from .proposal_generator import ProposalGenerator
from .target_assign import RPNTargetAssign

__all__ = ["RPNHead"]


def _conv(ch_in, ch_out, k):
    return Conv2D(
        ch_in, ch_out, k, padding=(k - 1) // 2,
        weight_attr=ParamAttr(initializer=Normal(mean=0.0, std=0.01)),
        bias_attr=ParamAttr(initializer=Constant(0.0)),
    )


class RPNFeat(nn.Layer):
    """The shared 3x3 conv + ReLU applied to every FPN level (``rpn_feat.rpn_conv``)."""

    def __init__(self, ch_in, ch_out):
        super().__init__()
        self.rpn_conv = _conv(ch_in, ch_out, 3)

    def forward(self, feats):
        fast = inference(self)
        return [relu(self.rpn_conv(f), fast) for f in feats]


def smooth_l1(diff, beta):
    """Elementwise smooth-L1: ``0.5 d^2 / beta`` below ``beta``, ``|d| - 0.5 beta`` above."""
    ad = paddle.abs(diff)
    if beta <= 0:
        return ad
    return paddle.where(ad < beta, 0.5 * ad * ad / beta, ad - 0.5 * beta)


@register
class RPNHead(nn.Layer):
    """RPN over FPN levels P2..P6: objectness (sigmoid, one logit per anchor) and 4 deltas per anchor.

    Sub-configs are plain dicts as in PaddleDetection (``anchor_generator: {...}``); a dict replaces
    the default entirely, missing entries take the class defaults. ``check_inside_image`` is
    accepted for config compatibility but, as in the reference, does not filter anchors.
    """

    __nested__ = {
        "anchor_generator": "AnchorGenerator",
        "rpn_target_assign": "RPNTargetAssign",
        "train_proposal": "ProposalGenerator",
        "test_proposal": "ProposalGenerator",
    }

    def __init__(
        self,
        anchor_generator: Optional[dict] = None,
        rpn_target_assign: Optional[dict] = None,
        train_proposal: Optional[dict] = None,
        test_proposal: Optional[dict] = None,
        in_channel: int = 1024,
        export_onnx: bool = False,
        check_inside_image: bool = False,
        use_smooth_l1_loss: bool = False,
        smooth_l1_loss_beta_nume: float = 1.0,
        smooth_l1_loss_beta_deno: float = 9.0,
    ):
        super().__init__()
        self.anchor_generator = build_nested(AnchorGenerator, anchor_generator, ("RPNHead", "anchor_generator"))
        self.rpn_target_assign = build_nested(RPNTargetAssign, rpn_target_assign, ("RPNHead", "rpn_target_assign"))
        if train_proposal is None:
            train_proposal = {"pre_nms_top_n": 12000, "post_nms_top_n": 2000}
        self.train_proposal = build_nested(ProposalGenerator, train_proposal, ("RPNHead", "train_proposal"))
        self.test_proposal = build_nested(ProposalGenerator, test_proposal, ("RPNHead", "test_proposal"))
        self.check_inside_image = check_inside_image
        self.use_smooth_l1_loss = use_smooth_l1_loss
        self.smooth_l1_beta = smooth_l1_loss_beta_nume / smooth_l1_loss_beta_deno
        num_anchors = self.anchor_generator.num_anchors
        self.rpn_feat = RPNFeat(in_channel, in_channel)
        self.rpn_rois_score = _conv(in_channel, num_anchors, 1)
        self.rpn_rois_delta = _conv(in_channel, 4 * num_anchors, 1)

    @classmethod
    def from_config(cls, cfg, input_shape=None, **kwargs):
        return in_channel_from(input_shape)

    def forward(self, feats, inputs):
        """Returns ``(rois [R,4], rois_num [B], losses or None)``; losses only in training."""
        rpn_feats = self.rpn_feat(feats)
        scores = [self.rpn_rois_score(f) for f in rpn_feats]
        deltas = [self.rpn_rois_delta(f) for f in rpn_feats]
        anchors = self.anchor_generator(rpn_feats)
        prop = self.train_proposal if self.training else self.test_proposal
        with paddle.no_grad():
            rois, rois_num = prop(
                [s.detach() for s in scores], [d.detach() for d in deltas], anchors, inputs["im_shape"]
            )
        if not self.training:
            return rois, rois_num, None
        return rois, rois_num, self.get_loss(scores, deltas, anchors, inputs)

    def get_loss(self, scores, deltas, anchors, inputs):
        """Binary CE on the sampled anchors and (smooth) L1 on the sampled positives, divided by the
        assigner's normaliser (256*B by default). Masked sums over all anchors: no data-dependent shapes."""
        batch = scores[0].shape[0]
        logits = paddle.concat([s.transpose([0, 2, 3, 1]).reshape([batch, -1]) for s in scores], axis=1)
        pred = paddle.concat([d.transpose([0, 2, 3, 1]).reshape([batch, -1, 4]) for d in deltas], axis=1)
        all_anchors = paddle.concat([a.reshape([-1, 4]) for a in anchors])
        with phase("target_assign"):
            gt = GroundTruth.from_inputs(inputs)
            labels, targets, norm = self.rpn_target_assign(all_anchors, gt, inputs.get("im_shape"))
        logits = logits.reshape([-1])
        pred = pred.reshape([-1, 4])
        sampled = (labels >= 0).astype(logits.dtype)
        positive = (labels == 1).astype(logits.dtype)
        loss_cls = (F.binary_cross_entropy_with_logits(logits, positive, reduction="none") * sampled).sum()
        diff = pred - targets
        reg = smooth_l1(diff, self.smooth_l1_beta) if self.use_smooth_l1_loss else paddle.abs(diff)
        loss_reg = (reg * positive.unsqueeze(1)).sum()
        return {"loss_rpn_cls": loss_cls / norm, "loss_rpn_reg": loss_reg / norm}

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self.rpn_rois_score.weight.shape[1])]

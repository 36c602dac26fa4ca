"""FusedSemanticHead's loss vs the NumPy reference (SEMANTICS.md 10.1 and the semantic product
decision): cross-entropy over the non-ignored pixels (ignore 255), x loss_weight, labels resized to
the logits by nearest neighbour."""
import numpy as np
import paddle
import pytest

from .. import numpy_ref_train as tref


# ---------------------------------------------------------------------------------------------------
# Adapter: the only call into ppdet_htc (re-point it after a refactor)
# ---------------------------------------------------------------------------------------------------
def run_semantic_loss(seg_logits, labels, ignore_index=255, loss_weight=0.2):
    """Semantic loss (already multiplied by ``loss_weight``) of logits ``[B,K,h,w]`` for integer labels
    ``[B,H,W]`` or ``[B,1,H,W]`` (any size; ``ignore_index`` pixels ignored). Returns a float."""
    from ppdet_htc.modeling.heads.semantic_head import FusedSemanticHead

    k = seg_logits.shape[1]
    head = FusedSemanticHead(in_channel=4, num_ins=2, semantic_num_class=k, ignore_index=ignore_index,
                             loss_weight=loss_weight)
    out = head.loss(paddle.to_tensor(np.asarray(seg_logits, np.float32)), paddle.to_tensor(labels))
    assert set(out) == {"loss_semantic"}
    return float(out["loss_semantic"])


# ---------------------------------------------------------------------------------------------------
def _case(seed, b=2, k=5, h=6, w=9, label_hw=None, ignore_frac=0.3, dtype=np.int32):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (b, k, h, w)).astype(np.float32)
    lh, lw = label_hw or (h, w)
    labels = rng.integers(0, k, (b, lh, lw))
    labels[rng.random((b, lh, lw)) < ignore_frac] = 255
    return logits, labels.astype(dtype)


@pytest.mark.parametrize("loss_weight", [0.2, 1.0])
def test_semantic_loss_same_size(loss_weight):
    logits, labels = _case(0)
    got = run_semantic_loss(logits, labels, loss_weight=loss_weight)
    exp = tref.semantic_loss_ref(logits, labels, loss_weight=loss_weight)
    np.testing.assert_allclose(got, exp, rtol=1e-5)
    # averaged over the non-ignored pixels only: including them as class 0 would give another value
    assert abs(tref.semantic_loss_ref(logits, np.where(labels == 255, 0, labels), loss_weight=loss_weight) - exp) > 1e-3


@pytest.mark.parametrize("label_hw", [(12, 18), (13, 20), (3, 5)], ids=["half", "non_integer", "upsample"])
def test_semantic_loss_resizes_labels_by_nearest_neighbour(label_hw):
    logits, labels = _case(1, label_hw=label_hw)
    got = run_semantic_loss(logits, labels)
    exp = tref.semantic_loss_ref(logits, labels)
    np.testing.assert_allclose(got, exp, rtol=1e-5)


def test_semantic_loss_accepts_labels_with_a_channel_axis():
    """The loader's SegRescale gives ``[B,1,H,W]`` (float or int); the channel axis is dropped."""
    logits, labels = _case(2, label_hw=(12, 18))
    got = run_semantic_loss(logits, labels[:, None].astype(np.float32))
    np.testing.assert_allclose(got, tref.semantic_loss_ref(logits, labels), rtol=1e-5)


def test_semantic_loss_all_ignored_is_zero():
    logits, labels = _case(3, ignore_frac=1.0)
    assert run_semantic_loss(logits, labels) == 0.0

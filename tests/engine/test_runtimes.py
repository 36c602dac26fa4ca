"""Runtimes: the fast ones (BN folded, Paddle Inference with oneDNN / OpenVINO) give the exact path's
detections within the stated tolerance (box IoU >= 0.98, score within 0.005)."""
import os

import numpy as np
import paddle
import pytest

from ppdet_htc.core import load_config
from ppdet_htc.engine.checkpoint import save_state_file
from ppdet_htc.engine.model_builder import build_model
from ppdet_htc.engine.predictor import Detector
from ppdet_htc.engine.runtimes import DEFAULT_RUNTIME, RUNTIME_ENV, resolve_runtime
from ppdet_htc.modeling.layers import resize_bilinear_align_corners
from tests.detection_parity import SCORE_TOL, unmatched
from tests.engine.test_export import TINY, _images

THRESHOLD = 0.18


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runtimes")
    # With the semantic head: its feature is added to every RoI feature, so an error there moves every box.
    semantic = ["HybridTaskCascade.fused_semantic_head=FusedSemanticHead", "FusedSemanticHead.semantic_num_class=7"]
    paddle.seed(1)
    model = build_model(load_config(TINY, semantic))
    weights = str(tmp / "tiny.pdparams")
    save_state_file(weights, model.state_dict())
    opts = semantic + ["BBoxPostProcess.nms.score_threshold={}".format(THRESHOLD), "TestDataset.anno_path=null"]
    cfg = load_config(TINY, opts)
    assert build_model(cfg).with_semantic
    images = _images(str(tmp))
    exact = Detector(cfg, weights=weights, exact=True)
    assert exact.runtime == "exact"
    return {"cfg": cfg, "weights": weights, "images": images, "exact": exact.predict(images)}


def test_resolve_runtime(monkeypatch):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.delenv("PPDET_HTC_EXACT", raising=False)
    assert resolve_runtime() == DEFAULT_RUNTIME == "onednn"
    assert resolve_runtime("openvino", exact=True) == "exact"
    assert resolve_runtime("onednn", device="gpu") == "dynamic"  # Paddle Inference runtimes here are CPU-only
    monkeypatch.setenv(RUNTIME_ENV, "dynamic")
    assert resolve_runtime() == "dynamic"
    monkeypatch.setenv("PPDET_HTC_EXACT", "1")
    assert resolve_runtime() == "exact" and resolve_runtime("onednn") == "onednn"  # an explicit choice wins
    with pytest.raises(ValueError, match="runtime must be one of"):
        resolve_runtime("fast")


@pytest.mark.parametrize("runtime", [None, "dynamic", "openvino", "inference"])
def test_fast_runtimes_match_the_exact_path(setup, runtime, monkeypatch):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)  # None: the default runtime, whatever the shell says
    monkeypatch.delenv("PPDET_HTC_EXACT", raising=False)
    if runtime == "openvino" and not hasattr(paddle.inference.Config(), "enable_openvino_engine"):
        pytest.skip("Paddle {} has no OpenVINO engine".format(paddle.__version__))
    det = Detector(setup["cfg"], weights=setup["weights"], runtime=runtime)
    assert det.runtime == (runtime or DEFAULT_RUNTIME)
    dets = det.predict(setup["images"])
    exact = setup["exact"]
    assert sum(len(d["scores"]) for d in exact) >= 5  # the comparison has detections to compare
    # Every exact detection clearly above the score threshold is found again (the ones within the score
    # tolerance of the threshold may fall below it); and vice versa.
    assert unmatched(exact, dets, THRESHOLD + SCORE_TOL) == []
    assert unmatched(dets, exact, THRESHOLD + SCORE_TOL) == []
    for d, e in zip(dets, exact):
        assert d["masks"].dtype == bool and d["masks"].shape[1:] == e["masks"].shape[1:]
        assert d["class_names"] == [det.class_names[int(c)] for c in d["labels"]]


def test_dynamic_runtime_folds_batch_norm(setup):
    det = Detector(setup["cfg"], weights=setup["weights"], runtime="dynamic")
    assert not any(isinstance(l, paddle.nn.BatchNorm2D) for l in det.model.backbone.sublayers())
    exact = Detector(setup["cfg"], weights=setup["weights"], exact=True)
    assert any(isinstance(l, paddle.nn.BatchNorm2D) for l in exact.model.backbone.sublayers())


def test_two_matmul_resize_equals_bilinear_interpolation_and_survives_onednn(tmp_path):
    """The resize of exported programs (modeling.layers.resize_bilinear_align_corners, two 2-D matrix products)
    equals bilinear align_corners interpolation, also after a convolution on Paddle Inference's oneDNN backend
    (where the broadcast-matmul form computed wrong values)."""
    from ppdet_htc.engine.runtimes import create_inference_predictor

    class ConvResize(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(16, 16, 3, padding=1)

        def forward(self, x, like):
            return resize_bilinear_align_corners(self.conv(x), paddle.shape(like)[2], paddle.shape(like)[3])

    paddle.seed(0)
    layer = ConvResize()
    layer.eval()
    x = np.random.default_rng(0).standard_normal((1, 16, 24, 20)).astype("float32")
    for out_hw in ((12, 10), (37, 41)):  # down and up
        like = np.zeros((1, 1) + out_hw, "float32")
        with paddle.no_grad():
            feat = layer.conv(paddle.to_tensor(x))
            ref = paddle.nn.functional.interpolate(feat, size=list(out_hw), mode="bilinear", align_corners=True).numpy()
            np.testing.assert_allclose(layer(paddle.to_tensor(x), paddle.to_tensor(like)).numpy(), ref, atol=1e-4)
    spec = [paddle.static.InputSpec([1, 16, None, None], "float32", "x"),
            paddle.static.InputSpec([1, 1, None, None], "float32", "like")]
    paddle.jit.save(paddle.jit.to_static(layer, input_spec=spec), str(tmp_path / "model"))
    pred = create_inference_predictor(str(tmp_path), "onednn", 1)
    for name, arr in zip(pred.get_input_names(), [x, like]):
        h = pred.get_input_handle(name)
        h.reshape(arr.shape)
        h.copy_from_cpu(arr)
    pred.run()
    out = pred.get_output_handle(pred.get_output_names()[0]).copy_to_cpu()
    np.testing.assert_allclose(out, ref, atol=1e-4)


TINY_MMDET = os.path.join(os.path.dirname(TINY), "htc_tiny_mmdet.yml")


PADDLE3 = int(paddle.__version__.split(".")[0]) >= 3 or paddle.__version__.startswith("0.")


@pytest.mark.skipif(not PADDLE3, reason="exported mmdetection-convention programs need Paddle >= 3 (see below)")
@pytest.mark.parametrize("runtime", [None, "inference"])
def test_mmdetection_convention_runs_on_the_fast_runtimes(tmp_path, runtime, monkeypatch):
    """The mmdetection convention's pieces (BatchedNMSProposalGenerator, FinestScaleLevelMapper, per-stage
    DeltaXYWHBBoxCoder, BatchedNMS, rescale before NMS) trace into the program: same detections as the exact
    path, also for an image where no score passes the threshold (no empty tensor reaches oneDNN)."""
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.delenv("PPDET_HTC_EXACT", raising=False)
    paddle.seed(1)
    weights = str(tmp_path / "tiny_mmdet.pdparams")
    save_state_file(weights, build_model(load_config(TINY_MMDET)).state_dict())
    cfg = load_config(TINY_MMDET, ["BBoxPostProcess.nms.score_threshold=0.2"])
    images = _images(str(tmp_path))
    exact = Detector(cfg, weights=weights, exact=True).predict(images)
    det = Detector(cfg, weights=weights, runtime=runtime)
    assert det.runtime == (runtime or DEFAULT_RUNTIME)  # not a fallback to the dynamic graph
    dets = det.predict(images)
    counts = [len(d["scores"]) for d in exact]
    assert min(counts) == 0 and max(counts) >= 5, counts  # both cases happen
    assert unmatched(exact, dets, 0.2 + SCORE_TOL) == [] and unmatched(dets, exact, 0.2 + SCORE_TOL) == []
    for d, e in zip(dets, exact):
        assert d["masks"].shape[1:] == e["masks"].shape[1:]
        if len(e["scores"]) == 0:  # the blank image: its best score is far below the threshold
            assert len(d["scores"]) == 0


def test_paddle2_cannot_run_the_mmdetection_level_mapper_exported_so_the_runtime_falls_back(tmp_path, monkeypatch,
                                                                                              caplog):
    """Paddle 2.x's static executor rejects the empty tensors of an FPN level without RoIs (FinestScaleLevelMapper):
    there the Paddle Inference runtimes fall back to the dynamic graph with a one-line warning, and export says
    why; the PaddleDetection convention is not affected."""
    import logging

    from ppdet_htc.engine.export import paddle2_export_blockers

    mmdet_model = build_model(load_config(TINY_MMDET))
    assert paddle2_export_blockers(mmdet_model, "2.6.2") == ["FinestScaleLevelMapper (HybridTaskCascadeHead)",
                                                             "FinestScaleLevelMapper (HybridTaskMaskHead)"]
    assert paddle2_export_blockers(mmdet_model, "3.3.1") == []
    assert paddle2_export_blockers(build_model(load_config(TINY)), "2.6.2") == []
    paddle.seed(1)
    weights = str(tmp_path / "tiny_mmdet.pdparams")
    save_state_file(weights, mmdet_model.state_dict())
    monkeypatch.setattr(paddle, "__version__", "2.6.2")
    with caplog.at_level(logging.WARNING, logger="ppdet_htc"):
        det = Detector(TINY_MMDET, weights=weights, runtime="onednn")
    assert det.runtime == "dynamic"
    (line,) = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert "\n" not in line and "needs Paddle >= 3" in line and "FinestScaleLevelMapper" in line
    assert det.predict(_images(str(tmp_path))[0])["boxes"].shape[1] == 4

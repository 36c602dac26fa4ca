"""BatchedNMS (mmdetection's post-process NMS) with the exported programs' placeholder row: the detections are
those without it plus the row ``[0, -1, 0, 0, 1, 1]`` at the end, also when no score passes the threshold,
and a program traced from it runs on Paddle Inference (native and oneDNN kernels, which reject empty tensors)."""
import numpy as np
import paddle
import pytest

from ppdet_htc.modeling.post_process import BatchedNMS

PLACEHOLDER = [0, -1, 0, 0, 1, 1]


def _case(seed, n_per_image=(30, 20), num_classes=3, high=True):
    rng = np.random.default_rng(seed)
    n = sum(n_per_image)
    xy = rng.uniform(0, 80, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (n, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 0.4 if high else 0.1, (n, num_classes)).astype(np.float32)
    return boxes, scores, np.array(n_per_image, np.int32)


def _nms(nms, boxes, scores, nums, placeholder):
    dets, num = nms(paddle.to_tensor(boxes), paddle.to_tensor(scores), paddle.to_tensor(nums), placeholder=placeholder)
    return dets.numpy(), num.numpy()


@pytest.mark.parametrize("keep_top_k, high", [(100, True), (5, True), (100, False)])
def test_placeholder_is_one_more_row_at_the_end(keep_top_k, high):
    nms = BatchedNMS(score_threshold=0.2, nms_threshold=0.5, keep_top_k=keep_top_k)
    boxes, scores, nums = _case(1, high=high)
    dets, num = _nms(nms, boxes, scores, nums, False)
    with_row, with_num = _nms(nms, boxes, scores, nums, True)
    if high:
        assert num.min() > 0 and (keep_top_k > 5 or num.max() == 5)  # the case has detections (and a cut at k)
    else:
        assert dets.shape == (0, 6) and num.tolist() == [0, 0]  # no score passes the threshold
    np.testing.assert_array_equal(with_row[:-1], dets)
    np.testing.assert_array_equal(with_row[-1], PLACEHOLDER)
    assert with_num.tolist() == num.tolist()[:-1] + [num[-1] + 1]  # counted in the last image


def test_placeholder_program_runs_on_paddle_inference(tmp_path):
    from ppdet_htc.engine.runtimes import create_inference_predictor

    nms = BatchedNMS(score_threshold=0.2, nms_threshold=0.5, keep_top_k=100)

    class Program(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.unused = self.create_parameter([1])  # a saved program needs a parameters file
            self.nms = nms

        def forward(self, boxes, scores):
            nums = paddle.shape(boxes)[0:1].astype("int32")  # one image, as exported models run
            return self.nms(boxes + self.unused * 0, scores, nums, placeholder=True)

    layer = Program()
    layer.eval()
    spec = [paddle.static.InputSpec([None, 4], "float32", "boxes"),
            paddle.static.InputSpec([None, 3], "float32", "scores")]
    paddle.jit.save(paddle.jit.to_static(layer, input_spec=spec, full_graph=True), str(tmp_path / "model"))
    for high in (True, False):
        boxes, scores, _ = _case(2, (40,), high=high)
        want, want_num = _nms(nms, boxes, scores, np.array([40], np.int32), True)
        for engine in ("inference", "onednn"):
            pred = create_inference_predictor(str(tmp_path), engine, 1)
            for name, arr in zip(pred.get_input_names(), (boxes, scores)):
                handle = pred.get_input_handle(name)
                handle.reshape(arr.shape)
                handle.copy_from_cpu(arr)
            pred.run()
            dets, num = [pred.get_output_handle(n).copy_to_cpu() for n in pred.get_output_names()]
            np.testing.assert_allclose(dets, want, atol=1e-5, err_msg="{} {}".format(engine, high))
            assert num.tolist() == want_num.tolist() and len(dets) == (want_num[0] if high else 1)

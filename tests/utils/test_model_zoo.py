"""Tests of the model-zoo manifest and of resolve_weights (local server, no internet)."""
import copy
import hashlib
import importlib
import os
import pickle

import numpy as np
import pytest
import yaml

from ppdet_htc.utils.download import ChecksumError

from .test_download import LocalServer

dl = importlib.import_module("ppdet_htc.utils.download")
mz = importlib.import_module("ppdet_htc.utils.model_zoo")

OFFICIAL_URLS = {
    "htc_r50_fpn_1x_coco": "https://bj.bcebos.com/v1/paddledet/models/htc_r50_fpn_1x_coco.pdparams",
    "ResNet50_cos_pretrained":
        "https://paddledet.bj.bcebos.com/models/pretrained/ResNet50_cos_pretrained.pdparams",
    "ResNet50_vd_ssld_v2_pretrained":
        "https://paddledet.bj.bcebos.com/models/pretrained/ResNet50_vd_ssld_v2_pretrained.pdparams",
    "ResNet101_vd_pretrained":
        "https://paddledet.bj.bcebos.com/models/pretrained/ResNet101_vd_pretrained.pdparams",
}
WEIGHTS = pickle.dumps({"w": np.arange(600, dtype=np.float32)}, protocol=4)  # a small, complete .pdparams


@pytest.fixture
def server():
    srv = LocalServer().start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the real ~/.cache, and never sleep between retries."""
    monkeypatch.setenv("PPDET_HTC_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.0)


def entry(name, **fields):
    base = {"name": name, "sha256": None, "config": None, "metrics": None, "description": "test"}
    base.update(fields)
    return base


# --------------------------------------------------------------------------------------------
# Manifest content
# --------------------------------------------------------------------------------------------


def test_packaged_manifest_is_next_to_module_and_parses():
    assert os.path.isfile(mz.DEFAULT_MANIFEST)
    with open(mz.DEFAULT_MANIFEST, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    assert [e["name"] for e in raw["models"]] == mz.model_names()


def test_every_entry_has_required_fields():
    for item in mz.list_models():
        for key in ("name", "sha256", "config", "metrics", "description"):
            assert key in item, (item["name"], key)
        assert ("url" in item) != ("path" in item), item["name"]
        assert item["description"].strip()


def test_official_urls_are_exact():
    models = {m["name"]: m for m in mz.list_models()}
    for name, url in OFFICIAL_URLS.items():
        assert models[name]["url"] == url


def test_htc_entry_points_to_config_without_semantic_head_and_official_metrics():
    item = mz.get_entry("htc_r50_fpn_1x_coco")
    assert item["config"] == "configs/htc/htc_without_semantic_r50_fpn_1x_coco.yml"
    assert item["metrics"]["bbox_ap"] == 42.1 and item["metrics"]["mask_ap"] == 37.3
    assert item["metrics"]["dataset"] == "COCO val2017"
    assert "PaddleDetection" in item["metrics"]["source"]


def test_backbones_have_no_config():
    for name in OFFICIAL_URLS:
        if name == "htc_r50_fpn_1x_coco":
            continue
        assert mz.get_entry(name)["config"] is None


def test_demo_entry_is_bundled():
    item = mz.get_entry("htc_r18_demo_shapes")
    assert item["path"] == "weights/htc_r18_demo_shapes.pdparams"
    assert item["config"] == "configs/demo/htc_r18_demo_shapes.yml"
    assert item["metrics"]["bbox_ap"] > 50 and item["metrics"]["mask_ap"] > 45 and "url" not in item


def test_repo_root_is_parent_of_package():
    assert os.path.isdir(os.path.join(mz.REPO_ROOT, "ppdet_htc", "utils"))


def test_list_models_returns_copies():
    mz.list_models()[0]["url"] = "http://evil/x.pdparams"
    assert mz.list_models()[0]["url"] == OFFICIAL_URLS["htc_r50_fpn_1x_coco"]


@pytest.mark.parametrize("bad, message", [
    ([{"name": "x", "url": "http://h/x.pdparams"}], "missing field"),
    ([entry("x", url="http://h/x", path="w/x")], "exactly one"),
    ([entry("x")], "exactly one"),
    ([entry("x", url="ftp://h/x")], "http"),
    ([entry("x", url="http://h/x", sha256="abc")], "sha256"),
    ([entry("x", url="http://h/x"), entry("x", url="http://h/y")], "duplicate"),
    ({"nothing": []}, "models"),
])
def test_invalid_manifest_is_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        mz.load_manifest(bad)


def test_manifest_from_yaml_file(tmp_path):
    path = tmp_path / "zoo.yml"
    path.write_text(yaml.safe_dump({"models": [entry("mine", url="http://h/mine.pdparams")]}))
    assert mz.model_names(str(path)) == ["mine"]


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def test_unknown_name_suggests_closest():
    with pytest.raises(KeyError) as info:
        mz.get_entry("htc_r50_fpn_1x_cocoo")
    message = str(info.value)
    assert "Did you mean: htc_r50_fpn_1x_coco" in message
    assert "htc_r18_demo_shapes" in message  # full list of names follows


# --------------------------------------------------------------------------------------------
# resolve_weights
# --------------------------------------------------------------------------------------------


def test_existing_local_path_returned_as_is(tmp_path):
    path = tmp_path / "model_final.pdparams"
    path.write_bytes(WEIGHTS)
    assert mz.resolve_weights(str(path)) == str(path)


def test_local_path_without_suffix(tmp_path):
    (tmp_path / "model_final.pdparams").write_bytes(WEIGHTS)
    spec = str(tmp_path / "model_final")
    assert mz.resolve_weights(spec) == spec + ".pdparams"


def test_url_is_downloaded_to_cache(server, tmp_path):
    url = server.add("direct.pdparams", WEIGHTS)
    path = mz.resolve_weights(url, progress=False)
    assert path == dl.cache_path_for_url(url, str(tmp_path / "home" / "weights"))
    assert path.endswith("_direct.pdparams")
    with open(path, "rb") as f:
        assert f.read() == WEIGHTS


def test_url_with_dest_dir(server, tmp_path):
    url = server.add("direct.pdparams", WEIGHTS)
    path = mz.resolve_weights(url, dest_dir=str(tmp_path / "d"))
    assert path == dl.cache_path_for_url(url, str(tmp_path / "d"))


def test_zoo_name_downloads_and_verifies_sha256(server, tmp_path):
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    manifest = [entry("tiny_zoo_model", url=server.add("tiny.pdparams", WEIGHTS), sha256=digest)]
    path = mz.resolve_weights("tiny_zoo_model", manifest=manifest)
    assert path == dl.cache_path_for_url(manifest[0]["url"], str(tmp_path / "home" / "weights"))
    assert mz.resolve_weights("tiny_zoo_model", manifest=manifest) == path
    assert len(server.requests("tiny.pdparams")) == 1  # second call is a cache hit


def test_zoo_name_with_wrong_sha256_raises(server):
    manifest = [entry("bad_model", url=server.add("bad.pdparams", WEIGHTS), sha256="0" * 64)]
    with pytest.raises(ChecksumError):
        mz.resolve_weights("bad_model", manifest=manifest)


def test_packaged_entry_resolves_through_monkeypatched_manifest(server, monkeypatch, tmp_path):
    """The real entry name, pointed at the local server instead of bcebos."""
    models = copy.deepcopy(mz.list_models())
    for item in models:
        if item["name"] == "ResNet50_cos_pretrained":
            item["url"] = url = server.add("ResNet50_cos_pretrained.pdparams", WEIGHTS)
    real_load = mz.load_manifest
    monkeypatch.setattr(mz, "load_manifest", lambda manifest=None: real_load(manifest or models))
    path = mz.resolve_weights("ResNet50_cos_pretrained")
    assert path == dl.cache_path_for_url(url, str(tmp_path / "home" / "weights"))


def test_bundled_entry_resolves_to_repo_file(tmp_path):
    bundled = tmp_path / "bundled.pdparams"
    bundled.write_bytes(WEIGHTS)
    manifest = [entry("bundled", path=str(bundled))]
    assert mz.resolve_weights("bundled", manifest=manifest) == str(bundled)


def test_bundled_relative_path_is_relative_to_repo_root():
    # setup.py is at the repository root; any existing file works to check the join.
    manifest = [entry("rooted", path="setup.py")]
    assert mz.resolve_weights("rooted", manifest=manifest) == os.path.join(mz.REPO_ROOT, "setup.py")


def test_missing_bundled_file_explains_how_to_create_it(tmp_path):
    manifest = [entry("demo", path="weights/definitely_missing_demo.pdparams",
                      create="Train it with `ppdet-htc-train -c demo.yml`.")]
    with pytest.raises(FileNotFoundError) as info:
        mz.resolve_weights("demo", manifest=manifest)
    message = str(info.value)
    assert "missing" in message
    assert os.path.join(mz.REPO_ROOT, "weights", "definitely_missing_demo.pdparams") in message
    assert "ppdet-htc-train" in message


def test_packaged_demo_entry_error_when_not_trained_yet():
    demo_file = os.path.join(mz.REPO_ROOT, "weights", "htc_r18_demo_shapes.pdparams")
    if os.path.exists(demo_file):
        assert mz.resolve_weights("htc_r18_demo_shapes") == demo_file
        return
    with pytest.raises(FileNotFoundError) as info:
        mz.resolve_weights("htc_r18_demo_shapes")
    message = str(info.value)
    assert demo_file in message
    assert "configs/demo/htc_r18_demo_shapes.yml" in message


def test_unknown_spec_lists_zoo_names():
    with pytest.raises(FileNotFoundError) as info:
        mz.resolve_weights("output/nope/model_final")
    message = str(info.value)
    assert "output/nope/model_final" in message
    assert "output/nope/model_final.pdparams" in message
    for name in OFFICIAL_URLS:
        assert name in message


def test_unknown_spec_close_to_a_name_gets_suggestion():
    with pytest.raises(FileNotFoundError, match="Did you mean: ResNet50_cos_pretrained"):
        mz.resolve_weights("ResNet50_cos_pretrain")


def test_local_file_wins_over_zoo_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "htc_r50_fpn_1x_coco.pdparams").write_bytes(WEIGHTS)
    assert mz.resolve_weights("htc_r50_fpn_1x_coco") == "htc_r50_fpn_1x_coco.pdparams"


def test_download_does_not_need_paddle():
    import subprocess
    import sys

    code = ("import sys; sys.modules['paddle'] = None\n"
            "import ppdet_htc.utils.model_zoo as mz\n"
            "print(len(mz.list_models()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=mz.REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 5


# --------------------------------------------------------------------------------------------
# mmdetection's checkpoints: download the .pth, check its sha256 prefix, convert once, cache
# --------------------------------------------------------------------------------------------

MMDET_ZOO = {  # issue 10: mmdetection's published HTC checkpoints and their box / mask AP
    "htc_r50_fpn_1x_coco": ("htc_r50_fpn_1x_coco_20200317-7332cf16.pth", 42.3, 37.4),
    "htc_r50_fpn_20e_coco": ("htc_r50_fpn_20e_coco_20200319-fe28c577.pth", 43.3, 38.3),
    "htc_r101_fpn_20e_coco": ("htc_r101_fpn_20e_coco_20200317-9b41b48f.pth", 44.8, 39.6),
    "htc_x101_32x4d_fpn_16x1_20e_coco": ("htc_x101_32x4d_fpn_16x1_20e_coco_20200318-de97ae01.pth", 46.1, 40.5),
    "htc_x101_64x4d_fpn_16x1_20e_coco": ("htc_x101_64x4d_fpn_16x1_20e_coco_20200318-b181fd7a.pth", 47.0, 41.4),
    "htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_16x1_20e_coco": (
        "htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_16x1_20e_coco_20200312-946fd751.pth", 50.4, 43.8),
}
R18_CONFIG = """
_BASE_: ['{repo}/configs/htc/htc_without_semantic_r50_fpn_1x_coco.yml']
num_classes: 4
ResNet: {{depth: 18, variant: b}}
FPN: {{out_channel: 128}}
HybridTaskCascadeTwoFCHead: {{out_channel: 256}}
HybridTaskMaskFeat: {{out_channel: 128, num_convs: 4}}
"""


def test_packaged_mmdet_entries():
    models = {m["name"]: m for m in mz.list_models()}
    for config_name, (file_name, box, mask) in MMDET_ZOO.items():
        item = models["mmdet_" + config_name]
        assert item["url"] == "https://download.openmmlab.com/mmdetection/v2.0/htc/{}/{}".format(config_name, file_name)
        assert item["format"] == "mmdet_pth"
        assert item["config"] == "configs/htc_mmdet/{}.yml".format(config_name)
        assert item["metrics"]["bbox_ap"] == box and item["metrics"]["mask_ap"] == mask
        assert item["metrics"]["dataset"] == "COCO val2017" and item["metrics"]["reproduced"] is False
        assert "published by mmdetection" in item["metrics"]["source"]
        assert "not reproduced" in item["metrics"]["source"]
    assert sum(1 for m in models.values() if m.get("format") == "mmdet_pth") == len(MMDET_ZOO)


def test_packaged_mmdet_configs_exist():
    folder = os.path.join(mz.REPO_ROOT, "configs", "htc_mmdet")
    if not os.path.isdir(folder):
        pytest.skip("configs/htc_mmdet/ is not in this tree yet (the lead adds it); the entries name its files")
    for item in mz.list_models():
        if item.get("format") == "mmdet_pth":
            assert os.path.isfile(os.path.join(mz.REPO_ROOT, item["config"])), item["config"]


@pytest.mark.parametrize("bad, message", [
    ([entry("m", url="http://h/htc.pth", format="mmdet_pth", config="c.yml")], "8 hex digits"),
    ([entry("m", url="http://h/htc_20200101-0123abcd.pth", format="mmdet_pth")], "needs the 'config'"),
    ([entry("m", path="w/htc_20200101-0123abcd.pth", format="mmdet_pth", config="c.yml")], "needs a 'url'"),
    ([entry("m", url="http://h/x.pdparams", format="onnx")], "'format' must be one of"),
])
def test_invalid_mmdet_entries_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        mz.load_manifest(bad)


@pytest.fixture(scope="module")
def mmdet_pth(tmp_path_factory):
    """golden_visible's R18 weights (mmdetection names) as a published-style legacy .pth, float16 tensors."""
    from tests.conftest import SHARED_REFERENCE
    from tests.engine.pth_writer import write_pth

    src = os.path.join(SHARED_REFERENCE, "mmdet", "golden_visible", "weights_noseg_mmdet_fp16.npz")
    if not os.path.isfile(src):
        pytest.skip("../shared/reference/mmdet/golden_visible is not available")
    with np.load(src) as npz:
        state = {k: npz[k] for k in npz.files}
    tmp = tmp_path_factory.mktemp("mmdet_pth")
    path = write_pth(str(tmp / "r18.pth"), {"meta": {"mmdet_version": "2.0.0", "epoch": 12}, "state_dict": state},
                     fmt="legacy")
    with open(path, "rb") as f:
        data = f.read()
    config = tmp / "htc_r18_mmdet.yml"
    config.write_text(R18_CONFIG.format(repo=mz.REPO_ROOT))
    return {"data": data, "prefix": hashlib.sha256(data).hexdigest()[:8], "config": str(config), "state": state}


def mmdet_entry(server, pth, name="mmdet_tiny", prefix=None):
    file_name = "htc_r18_20200317-{}.pth".format(prefix or pth["prefix"])
    return entry(name, url=server.add(file_name, pth["data"]), format="mmdet_pth", config=pth["config"])


def test_mmdet_name_downloads_checks_prefix_converts_once_and_caches(server, mmdet_pth, tmp_path, monkeypatch):
    from ppdet_htc.engine import convert_mmdet
    from ppdet_htc.engine.checkpoint import load_state_file

    calls = []
    real = convert_mmdet.convert_mmdet_checkpoint
    monkeypatch.setattr(convert_mmdet, "convert_mmdet_checkpoint", lambda *a, **k: calls.append(a) or real(*a, **k))
    manifest = [mmdet_entry(server, mmdet_pth)]
    path = mz.resolve_weights("mmdet_tiny", manifest=manifest, progress=False)
    cache = str(tmp_path / "home" / "weights")
    pth_path = dl.cache_path_for_url(manifest[0]["url"], cache)
    assert path == os.path.splitext(pth_path)[0] + ".pdparams" == mz.converted_path(manifest[0])
    assert os.path.isfile(pth_path) and len(calls) == 1
    state = load_state_file(path)
    assert len(state) == 191 and "bbox_head.head.0.fc6.weight" in state
    assert mz.resolve_weights("mmdet_tiny", manifest=manifest) == path  # cached: no download, no conversion
    assert len(server.requests(os.path.basename(manifest[0]["url"]))) == 1 and len(calls) == 1
    os.remove(path)  # only the .pth left: converted again, not downloaded again
    assert mz.resolve_weights("mmdet_tiny", manifest=manifest) == path
    assert len(server.requests(os.path.basename(manifest[0]["url"]))) == 1 and len(calls) == 2
    leftovers = [n for n in os.listdir(cache) if n.endswith((".part", ".tmp"))]
    assert leftovers == []


def test_mmdet_pth_with_wrong_sha256_prefix_is_refused(server, mmdet_pth, tmp_path):
    manifest = [mmdet_entry(server, mmdet_pth, prefix="0badc0de")]
    with pytest.raises(ChecksumError) as info:
        mz.resolve_weights("mmdet_tiny", manifest=manifest)
    assert "0badc0de... (a prefix)" in str(info.value) and mmdet_pth["prefix"] in str(info.value)
    cache = tmp_path / "home" / "weights"
    assert not [n for n in os.listdir(cache) if n.endswith((".pth", ".pdparams"))]


def test_mmdet_name_offline_says_where_to_put_either_file(mmdet_pth, tmp_path):
    from .test_download import closed_port

    url = "http://127.0.0.1:{}/mmdetection/htc_r18_20200317-{}.pth".format(closed_port(), mmdet_pth["prefix"])
    manifest = [entry("mmdet_tiny", url=url, format="mmdet_pth", config=mmdet_pth["config"])]
    with pytest.raises(dl.DownloadError) as info:
        mz.resolve_weights("mmdet_tiny", manifest=manifest)
    message = str(info.value)
    cache = str(tmp_path / "home" / "weights")
    assert url in message and "\n" not in message
    assert dl.cache_path_for_url(url, cache) in message  # the .pth, by hand
    assert mz.converted_path(manifest[0]) in message and "ppdet-htc-convert-mmdet" in message  # or the converted file
    converted = mz.converted_path(manifest[0])  # placing the converted file there works offline
    os.makedirs(os.path.dirname(converted), exist_ok=True)
    with open(converted, "wb") as f:
        f.write(WEIGHTS)
    assert mz.resolve_weights("mmdet_tiny", manifest=manifest) == converted


def test_mmdet_name_with_missing_config_names_it(server, mmdet_pth, tmp_path):
    item = mmdet_entry(server, mmdet_pth)
    item["config"] = "configs/htc_mmdet/not_there.yml"
    with pytest.raises(FileNotFoundError, match="not_there.yml is missing"):
        mz.resolve_weights("mmdet_tiny", manifest=[item])


def test_concurrent_resolution_converts_once(server, mmdet_pth, monkeypatch):
    import threading

    from ppdet_htc.engine import convert_mmdet

    calls = []
    real = convert_mmdet.convert_mmdet_checkpoint
    monkeypatch.setattr(convert_mmdet, "convert_mmdet_checkpoint", lambda *a, **k: calls.append(a) or real(*a, **k))
    manifest = [mmdet_entry(server, mmdet_pth)]
    paths, errors = [], []

    def work():
        try:
            paths.append(mz.resolve_weights("mmdet_tiny", manifest=manifest, progress=False))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(set(paths)) == 1 and len(paths) == 2
    assert len(calls) == 1


def test_weights_and_pretrain_weights_accept_mmdet_names(server, mmdet_pth, monkeypatch, tmp_path):
    """`weights=` loads strictly; `pretrain_weights=` fine-tunes into a model with other classes."""
    import paddle

    from ppdet_htc.core import load_config
    from ppdet_htc.engine.model_builder import build_model, load_model_weights

    manifest = [mmdet_entry(server, mmdet_pth)]
    real_load = mz.load_manifest
    monkeypatch.setattr(mz, "load_manifest", lambda m=None: real_load(m or manifest))
    model = build_model(load_config(mmdet_pth["config"]))
    load_model_weights(model, "mmdet_tiny", progress=False)
    fc = mmdet_pth["state"]["roi_head.bbox_head.1.shared_fcs.1.weight"].astype(np.float32)
    np.testing.assert_array_equal(model.state_dict()["bbox_head.head.1.fc7.weight"].numpy(), fc.T)
    finetune = tmp_path / "finetune.yml"
    finetune.write_text("_BASE_: ['{}']\nnum_classes: 2\n".format(mmdet_pth["config"]))
    paddle.seed(3)
    small = build_model(load_config(str(finetune)))
    report = load_model_weights(small, "mmdet_tiny", pretrain=True, progress=False)
    skipped = sorted(k for k, _, _ in report["shape"])
    assert skipped and all("bbox_score" in k or "conv_logits" in k for k in skipped)
    np.testing.assert_array_equal(small.state_dict()["bbox_head.head.1.fc7.weight"].numpy(), fc.T)

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

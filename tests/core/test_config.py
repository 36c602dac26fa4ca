"""Config system: _BASE_ merging, -o overrides, create(), and the error messages users see."""
import os
import textwrap

import pytest

from ppdet_htc.core import ConfigError, create, load_config, merge_config, parse_overrides
from ppdet_htc.core.config import TaggedDict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return str(path)


def test_base_merge_order_and_relative_paths(tmp_path):
    write(tmp_path / "a" / "base1.yml", """
        epoch: 1
        FPN: {out_channel: 64, extra_stage: 1}
        TrainReader: {batch_size: 2, shuffle: true}
    """)
    write(tmp_path / "a" / "base2.yml", """
        epoch: 2
        FPN: {out_channel: 128}
        TrainReader: {sample_transforms: [{Decode: {}}]}
    """)
    top = write(tmp_path / "top.yml", """
        _BASE_: ['a/base1.yml', 'a/base2.yml']
        TrainReader: {batch_size: 8}
    """)
    cfg = load_config(top)
    assert cfg.epoch == 2  # later base wins
    assert cfg.FPN == {"out_channel": 128, "extra_stage": 1}  # nested dicts merge key by key
    assert cfg.TrainReader == {"batch_size": 8, "shuffle": True, "sample_transforms": [{"Decode": {}}]}
    assert cfg.filename == "top"
    assert cfg.source_of("FPN", "out_channel").endswith(os.path.join("a", "base2.yml"))
    assert cfg.source_of("TrainReader", "batch_size").endswith("top.yml")


def test_overrides_are_typed_and_dotted(tmp_path):
    top = write(tmp_path / "c.yml", "FPN: {out_channel: 64}\nweights: a.pdparams\n")
    cfg = load_config(top, ["FPN.out_channel=32", "epoch=3", "lr=0.5", "flag=True", "lst=[1,2]", "weights=out/x"])
    assert cfg.FPN.out_channel == 32 and isinstance(cfg.FPN.out_channel, int)
    assert cfg.epoch == 3 and cfg.lr == 0.5 and cfg.flag is True and cfg.lst == [1, 2]
    assert cfg.weights == "out/x"
    assert cfg.source_of("FPN", "out_channel").startswith("-o")
    assert parse_overrides(["A.b.c=1", "A.b.d=x"]) == {"A": {"b": {"c": 1, "d": "x"}}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_reference_configs_load_unchanged(shared_reference):
    for name in ("htc_r50_fpn_1x_coco.yml", "htc_semantic_r50_fpn_1x_coco.yml"):
        cfg = load_config(os.path.join(shared_reference, "configs", "htc", name))
        assert cfg.architecture == "HybridTaskCascade"
        assert isinstance(cfg.TrainDataset, TaggedDict) and cfg.TrainDataset.tag == "COCODataSet"
        assert [type(s).__name__ for s in cfg.LearningRate.schedulers] == ["TaggedDict", "TaggedDict"]
        lr = create("LearningRate")
        assert lr.base_lr == 0.02


def test_misspelt_module_names_file_and_suggestion(tmp_path):
    top = write(tmp_path / "bad.yml", """
        architecture: HybridTaskCascade
        HybridTaskCascade: {backbone: ResNett, neck: FPN, rpn_head: RPNHead, bbox_head: HybridTaskCascadeHead}
    """)
    cfg = load_config(top)
    with pytest.raises(KeyError) as e:
        create(cfg.architecture)
    msg = str(e.value)
    assert "ResNett" in msg and "'ResNet'" in msg and "HybridTaskCascade.backbone" in msg


def test_misspelt_key_names_file_key_and_candidates(tmp_path):
    top = write(tmp_path / "bad.yml", "FPN: {out_channels: 64}\n")
    load_config(top)
    with pytest.raises(ConfigError) as e:
        create("FPN")
    msg = str(e.value)
    assert str(top) in msg and "'out_channels'" in msg and "'out_channel'" in msg


def test_misspelt_nested_key(tmp_path):
    top = write(tmp_path / "bad.yml", "RPNHead: {anchor_generator: {aspect_ratio: [1.0], strides: [4]}}\n")
    load_config(top)
    with pytest.raises(ConfigError) as e:
        create("RPNHead")
    msg = str(e.value)
    assert "aspect_ratio" in msg and "aspect_ratios" in msg and "RPNHead.anchor_generator" in msg and str(top) in msg


def test_wrong_type_names_expected_type(tmp_path):
    top = write(tmp_path / "bad.yml", "FPN: {out_channel: abc}\n")
    load_config(top)
    with pytest.raises(ConfigError) as e:
        create("FPN")
    assert "expected int" in str(e.value) and "FPN.out_channel" in str(e.value) and str(top) in str(e.value)
    cfg = load_config(write(tmp_path / "ok.yml", "FPN: {out_channel: 64}\n"), ["FPN.out_channel=[1]"])
    with pytest.raises(ConfigError, match="expected int, got list"):
        create("FPN", cfg)
    load_config(write(tmp_path / "b2.yml", "ResNet: {freeze_norm: 3}\n"))
    with pytest.raises(ConfigError, match="expected bool"):
        create("ResNet")


def test_unknown_tag_and_top_level_typo(tmp_path):
    with pytest.raises(ConfigError, match="unknown YAML tag !COCODataset.*did you mean !COCODataSet"):
        load_config(write(tmp_path / "t.yml", "TrainDataset: !COCODataset {dataset_dir: x}\n"))
    with pytest.raises(ConfigError, match="'EvalReadr'.*'EvalReader'"):
        load_config(write(tmp_path / "u.yml", "EvalReadr: {batch_size: 1}\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(write(tmp_path / "v.yml", "_BASE_: ['missing.yml']\n"))
    with pytest.raises(ConfigError, match="cycle"):
        write(tmp_path / "x.yml", "_BASE_: ['y.yml']\n")
        load_config(write(tmp_path / "y.yml", "_BASE_: ['x.yml']\n"))


def test_shared_inject_and_tagged_override(tmp_path):
    top = write(tmp_path / "s.yml", """
        num_classes: 7
        BBoxPostProcess:
          decode: {name: RCNNBox, prior_box_var: [1.0, 2.0, 3.0, 4.0]}
          nms: {name: MultiClassNMS, keep_top_k: 5}
        MaskAssigner: {num_classes: 3}
        EvalDataset: !COCODataSet {dataset_dir: a, anno_path: b.json}
    """)
    cfg = load_config(top, ["EvalDataset.dataset_dir=/data/coco"])
    post = create("BBoxPostProcess")
    assert post.num_classes == 7  # __shared__ from the top level
    assert post.decode.prior_box_var == [1.0, 2.0, 3.0, 4.0] and post.nms.keep_top_k == 5  # __inject__ dicts
    assert create("MaskAssigner").num_classes == 3  # the section wins over the top level
    assert cfg.EvalDataset.tag == "COCODataSet" and cfg.EvalDataset.dataset_dir == "/data/coco"
    ds = create(cfg.EvalDataset)
    assert type(ds).__name__ == "COCODataSet" and ds.dataset_dir == "/data/coco"


def test_merge_config_replaces_lists(tmp_path):
    cfg = load_config(write(tmp_path / "m.yml", "A: {l: [1, 2, 3], d: {x: 1}}\n"), validate=False)
    merge_config(cfg, {"A": {"l": [9], "d": {"y": 2}}})
    assert cfg.A.l == [9] and cfg.A.d == {"x": 1, "y": 2}


def test_packaged_configs_resolve_from_any_directory(tmp_path, monkeypatch):
    """`-c` and `_BASE_` name packaged configs with or without the leading `configs/`, from anywhere."""
    monkeypatch.chdir(tmp_path)
    for name in ("configs/htc/htc_r50_fpn_1x_coco.yml", "htc/htc_r50_fpn_1x_coco.yml"):
        cfg = load_config(name)
        assert cfg.path == os.path.join(REPO, "configs", "htc", "htc_r50_fpn_1x_coco.yml")
        assert cfg.filename == "htc_r50_fpn_1x_coco" and cfg.num_classes == 80
    user = write(tmp_path / "elsewhere" / "mine.yml", """
        _BASE_: ['configs/htc/htc_without_semantic_r50_fpn_1x_coco.yml']
        num_classes: 3
    """)
    cfg = load_config(user)
    assert cfg.num_classes == 3 and cfg.architecture == "HybridTaskCascade"
    assert cfg.source_of("architecture").endswith(os.path.join("htc", "_base_", "htc.yml"))
    # A file next to the including config wins over a packaged one of the same name.
    write(tmp_path / "elsewhere" / "htc" / "htc_r50_fpn_1x_coco.yml", "epoch: 99\n")
    near = write(tmp_path / "elsewhere" / "near.yml", "_BASE_: ['htc/htc_r50_fpn_1x_coco.yml']\n")
    assert load_config(near).epoch == 99


def test_missing_config_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config("htc/no_such_config.yml")
    msg = str(e.value)
    assert "looked in" in msg and str(tmp_path / "htc" / "no_such_config.yml") in msg
    assert os.path.join(REPO, "configs", "htc", "no_such_config.yml") in msg
    user = write(tmp_path / "u.yml", "_BASE_: ['../nowhere/base.yml']\n")
    with pytest.raises(ConfigError) as e:
        load_config(user)
    assert "_BASE_ file '../nowhere/base.yml' not found; looked in: " in str(e.value)
    assert str(tmp_path.parent / "nowhere" / "base.yml") in str(e.value)


def test_exponent_numbers_are_floats_in_files_and_overrides(tmp_path):
    """PyYAML (YAML 1.1) reads 1e-4 as a string; configs and -o must read it as the number users mean."""
    top = write(tmp_path / "n.yml", """
        LearningRate: {base_lr: 1e-4}
        a: 1e6
        b: -1e-5
        c: 1.5E+3
        d: [2e-3, 1.5e3, .5e1]
        e: '1e-4'
        f: 10
        g: 1.2.3
    """)
    cfg = load_config(top, validate=False)
    assert cfg.LearningRate.base_lr == 1e-4 and isinstance(cfg.LearningRate.base_lr, float)
    assert (cfg.a, cfg.b, cfg.c, cfg.d) == (1e6, -1e-5, 1500.0, [2e-3, 1500.0, 5.0])
    assert all(isinstance(v, float) for v in (cfg.a, cfg.b, cfg.c))
    assert cfg.e == "1e-4" and cfg.f == 10 and isinstance(cfg.f, int) and cfg.g == "1.2.3"  # quoted/ints/text stay
    assert create("LearningRate", cfg).base_lr == 1e-4  # passes the float type check of the module
    cfg = load_config(top, ["LearningRate.base_lr=2e-4", "a=1E6", "b=-1e-5", "c=1.5E+3", "d=[1e-4,3]", "h=1e"],
                      validate=False)
    assert cfg.LearningRate.base_lr == 2e-4 and isinstance(cfg.LearningRate.base_lr, float)
    assert (cfg.a, cfg.b, cfg.c, cfg.d, cfg.h) == (1e6, -1e-5, 1500.0, [1e-4, 3], "1e")
    assert create("LearningRate", cfg).base_lr == 2e-4

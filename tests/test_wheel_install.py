"""The wheel works outside the checkout: build it, install it into a fresh venv, run the commands elsewhere.

The venv sees the global site-packages (``--system-site-packages``) so Paddle and the other dependencies
are reused (fast, no network); only the wheel is installed (``--no-deps --no-index``). The test checks
that the commands import the installed copy, not this checkout.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "dataset", "output",
                                "output_inference", "log", "vdl_log", ".pytest_cache", "tests", ".venv*", "*.pyc")


def _run(cmd, cwd, env, timeout=600, stdout=None):
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, universal_newlines=True)
    assert proc.returncode == 0, "{} exited {}:\n{}\n{}".format(" ".join(cmd), proc.returncode,
                                                             (proc.stdout or "")[-2000:], proc.stderr[-4000:])
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    import importlib.util

    if not (importlib.util.find_spec("wheel") or importlib.util.find_spec("setuptools.command.bdist_wheel")):
        pytest.fail("building a wheel offline needs the 'wheel' package: pip install -e '.[test]'")
    tmp = tmp_path_factory.mktemp("wheel")
    src = str(tmp / "src")
    shutil.copytree(REPO, src, ignore=IGNORE)  # build from a copy: nothing is written into the checkout
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")],
         str(tmp), env)
    wheel, = glob.glob(str(tmp / "dist" / "ppdet_htc-*.whl"))
    venv = str(tmp / "venv")
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], str(tmp), env)
    python = os.path.join(venv, "bin", "python")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel], str(tmp), env)
    work = tmp / "work"
    work.mkdir()
    env = dict(env, PPDET_HTC_HOME=str(tmp / "home"), PPDET_HTC_PROGRESS="lines")
    env.pop("PPDET_HTC_DEMO_DIR", None)
    return {"wheel": wheel, "venv": venv, "bin": os.path.join(venv, "bin"), "python": python, "work": str(work),
            "env": env, "home": str(tmp / "home")}


def _installed_package_dir(inst):
    out = _run([inst["python"], "-c", "import ppdet_htc, os; print(os.path.dirname(ppdet_htc.__file__))"],
               inst["work"], inst["env"]).stdout.strip()
    return out


def test_wheel_carries_configs_manifest_and_demo_checkpoint(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for name in ("ppdet_htc/utils/model_zoo.yml", "ppdet_htc/configs/runtime.yml",
                 "ppdet_htc/configs/htc/_base_/htc.yml", "ppdet_htc/configs/htc/htc_r50_fpn_1x_coco.yml",
                 "ppdet_htc/configs/demo/htc_r18_demo_shapes.yml", "ppdet_htc/weights/htc_r18_demo_shapes.pdparams",
                 "ppdet_htc/weights/htc_r18_demo_shapes.train.log"):
        assert name in names, name
    assert not any(n.startswith(("configs/", "weights/", "tests/")) for n in names)  # nothing outside the package
    pkg = _installed_package_dir(installed)
    assert pkg.startswith(installed["venv"]), pkg  # the installed copy, not this checkout


def test_every_command_runs_from_the_installed_wheel(installed):
    entry_points = glob.glob(os.path.join(installed["venv"], "lib", "python*", "site-packages",
                                          "ppdet_htc-*.dist-info", "entry_points.txt"))[0]
    commands = [line.split("=")[0].strip() for line in open(entry_points) if line.strip().startswith("ppdet-htc-")]
    expected = {"ppdet-htc-train", "ppdet-htc-eval", "ppdet-htc-infer", "ppdet-htc-export", "ppdet-htc-benchmark",
                "ppdet-htc-analyze", "ppdet-htc-plot-log", "ppdet-htc-demo-data"}
    assert expected <= set(commands), commands
    procs = [(c, subprocess.Popen([os.path.join(installed["bin"], c), "--help"], cwd=installed["work"],
                                  env=installed["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True)) for c in commands]
    for name, proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "usage:" in out, (name, err[-2000:])


def test_demo_eval_from_a_temporary_directory_with_a_packaged_base(installed):
    """A user config outside any checkout names a packaged config in _BASE_; the bundled demo weights are
    found in the wheel; the command exits 0, writes output/<config name>/ and the analysis plots."""
    work = installed["work"]
    with open(os.path.join(work, "my_demo.yml"), "w") as f:
        f.write("_BASE_: ['demo/htc_r18_demo_shapes.yml']\nworker_num: 0\n")
    env = dict(installed["env"], PPDET_HTC_DEMO_DIR=os.path.join(REPO, "dataset", "demo_shapes"))
    with open(os.path.join(work, "eval.log"), "w") as log:
        _run([os.path.join(installed["bin"], "ppdet-htc-eval"), "-c", "my_demo.yml", "--plot"], work, env,
             stdout=log)
    text = open(os.path.join(work, "eval.log")).read()
    pkg = _installed_package_dir(installed)
    assert "loaded weights {}".format(os.path.join(pkg, "weights", "htc_r18_demo_shapes.pdparams")) in text
    out = os.path.join(work, "output", "my_demo")
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    recorded = json.load(open(os.path.join(REPO, "weights", "htc_r18_demo_shapes.metrics.json")))
    assert 100 * metrics["bbox"]["AP"] >= recorded["bbox_ap"] - 1.0
    assert 100 * metrics["segm"]["AP"] >= recorded["mask_ap"] - 1.0
    for name in ("pr_curves_bbox.png", "pr_curves_segm.png", "error_breakdown_bbox.png",
                 "error_breakdown_segm_per_class.png", "confusion_matrix.png"):
        data = open(os.path.join(out, "plots", name), "rb").read()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10000, name


def test_infer_and_plot_log_from_the_wheel_create_no_dataset(installed):
    import cv2
    import numpy as np

    work = installed["work"]
    im = np.full((120, 160, 3), 80, np.uint8)
    cv2.circle(im, (60, 60), 30, (40, 220, 250), -1)
    cv2.imwrite(os.path.join(work, "photo.jpg"), im)
    _run([os.path.join(installed["bin"], "ppdet-htc-infer"), "-c", "configs/demo/htc_r18_demo_shapes.yml",
          "--infer_img", "photo.jpg", "--output_dir", "pics"], work, installed["env"])
    assert os.path.isfile(os.path.join(work, "pics", "results.json"))
    assert not os.path.exists(os.path.join(installed["home"], "datasets"))
    assert not os.path.exists(os.path.join(work, "dataset"))
    log = os.path.join(_installed_package_dir(installed), "weights", "htc_r18_demo_shapes.train.log")
    _run([os.path.join(installed["bin"], "ppdet-htc-plot-log"), log, "--output", "curves.png"], work,
         installed["env"])
    assert open(os.path.join(work, "curves.png"), "rb").read(8) == PNG_SIGNATURE

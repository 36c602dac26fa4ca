"""Install script for ppdet_htc (HTC instance segmentation for PaddlePaddle)."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    with open(os.path.join(HERE, "ppdet_htc", "version.py"), encoding="utf-8") as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def read_readme():
    path = os.path.join(HERE, "README.md")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


setup(
    name="ppdet_htc",
    version=read_version(),
    description="Hybrid Task Cascade (HTC) instance segmentation for PaddlePaddle, "
    "compatible with PaddleDetection configs and checkpoints",
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.8",
    # The repository's top-level configs/ and weights/ folders ship inside the wheel as ppdet_htc/configs and
    # ppdet_htc/weights (mapped here, not copied in the repository), so `-c htc/htc_r50_fpn_1x_coco.yml`,
    # `_BASE_` and the bundled demo checkpoint work from any directory (ppdet_htc/utils/resources.py).
    packages=find_packages(include=["ppdet_htc", "ppdet_htc.*"]) + ["ppdet_htc.configs", "ppdet_htc.weights"],
    package_dir={"ppdet_htc.configs": "configs", "ppdet_htc.weights": "weights"},
    package_data={
        "ppdet_htc": ["utils/model_zoo.yml"],
        "ppdet_htc.configs": ["*.yml", "*/*.yml", "*/*/*.yml", "*/*/*/*.yml"],
        "ppdet_htc.weights": ["*.pdparams", "*.json", "*.log", "*.md"],
    },
    include_package_data=True,
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "pycocotools",
        "pyyaml",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "cpu": ["paddlepaddle>=2.6"],
        "gpu": ["paddlepaddle-gpu>=2.6"],
        "test": ["pytest>=7", "pytest-timeout", "wheel"],
        "vdl": ["visualdl"],
    },
    entry_points={
        "console_scripts": [
            # ppdet_htc.console wraps the cli mains so that success exits 0 whatever they return.
            "ppdet-htc-infer=ppdet_htc.console:infer",
            "ppdet-htc-eval=ppdet_htc.console:evaluate",
            "ppdet-htc-train=ppdet_htc.console:train",
            "ppdet-htc-export=ppdet_htc.console:export",
            "ppdet-htc-benchmark=ppdet_htc.console:benchmark",
            "ppdet-htc-analyze=ppdet_htc.console:analyze",
            "ppdet-htc-plot-log=ppdet_htc.console:plot_log",
            "ppdet-htc-demo-data=ppdet_htc.console:demo_data",
            "ppdet-htc-convert-mmdet=ppdet_htc.console:convert_mmdet",
        ]
    },
)

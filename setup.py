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
    packages=find_packages(include=["ppdet_htc", "ppdet_htc.*"]),
    package_data={"ppdet_htc": ["utils/model_zoo.yml"]},
    include_package_data=True,
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "pycocotools",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        "cpu": ["paddlepaddle>=2.6"],
        "gpu": ["paddlepaddle-gpu>=2.6"],
        "test": ["pytest>=7", "pytest-timeout"],
        "vdl": ["visualdl"],
    },
    entry_points={
        "console_scripts": [
            "ppdet-htc-infer=ppdet_htc.cli:infer_main",
            "ppdet-htc-eval=ppdet_htc.cli:eval_main",
            "ppdet-htc-train=ppdet_htc.cli:train_main",
            "ppdet-htc-convert-mmdet=ppdet_htc.cli:convert_mmdet_main",
        ]
    },
)

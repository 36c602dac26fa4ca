"""Shared engine-test data: a tiny synthetic shapes dataset (12 train / 4 val images), made once per session."""
import pytest

from ppdet_htc.data.demo_shapes import generate_demo_dataset


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "demo"
    generate_demo_dataset(str(root), num_train=12, num_val=4, seed=7, progress=False)
    return str(root)

from .htc import HybridTaskCascade  # noqa: F401

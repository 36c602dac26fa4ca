from .roi_extractor import RoIAlign  # noqa: F401
from .roi_assigner import BBoxAssigner, MaskAssigner  # noqa: F401
from .htc_bbox_head import HybridTaskCascadeHead, HybridTaskCascadeTwoFCHead  # noqa: F401
from .htc_mask_head import HybridTaskMaskFeat, HybridTaskMaskHead, MaskFeat  # noqa: F401
from .semantic_head import FusedSemanticHead  # noqa: F401

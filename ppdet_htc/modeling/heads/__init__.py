from .roi_extractor import CanonicalLevelMapper, FinestScaleLevelMapper, RoIAlign  # noqa: F401
from .roi_assigner import BBoxAssigner, MaskAssigner  # noqa: F401
from .box_heads import HybridTaskCascadeTwoFCHead  # noqa: F401
from .stage_fusion import MaskStageFusion, MeanLogitsFusion  # noqa: F401
from .htc_roi_head import HybridTaskCascadeHead  # noqa: F401
from .htc_mask_head import HybridTaskMaskFeat, HybridTaskMaskHead, MaskFeat  # noqa: F401
from .semantic_head import FusedSemanticHead  # noqa: F401

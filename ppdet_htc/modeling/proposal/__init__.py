from .anchor_generator import AnchorGenerator  # noqa: F401
from .proposal_generator import ProposalGenerator  # noqa: F401
from .rpn_head import RPNHead  # noqa: F401
from .target_assign import RPNTargetAssign  # noqa: F401

"""Model code: backbone -> neck -> proposals -> HTC heads -> post-processing."""
from . import backbones, box_coder, losses, necks, proposal, heads, post_process, architectures  # noqa: F401

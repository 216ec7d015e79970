"""SSD detector: backbone (with extra layers) -> multi-box head -> (loss | decode + NMS)."""
from ppdet.core.registry import ARCHITECTURES
from ppdet.modeling.architectures.one_stage import OneStageDetector

# the SSD parts register on import; ppdet.modeling imports only this module for them
from ppdet.modeling.heads.ssd_head import SSDHead  # noqa: F401
from ppdet.modeling.losses.ssd_loss import SSDLoss  # noqa: F401
from ppdet.modeling.ssd_post_process import SSDPostProcess  # noqa: F401

__all__ = ["SSD"]


@ARCHITECTURES.register
class SSD(OneStageDetector):
    __inject__ = ["backbone", "ssd_head", "post_process"]
    HEAD = "ssd_head"

    def __init__(self, backbone, ssd_head, post_process=None):
        super().__init__(backbone, ssd_head, post_process)

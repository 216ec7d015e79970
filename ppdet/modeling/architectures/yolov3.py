"""YOLOv3 detector: backbone -> head -> (loss | decode + NMS)."""
from ppdet.core.registry import ARCHITECTURES
from ppdet.modeling.architectures.one_stage import OneStageDetector

__all__ = ["YOLOv3"]


@ARCHITECTURES.register
class YOLOv3(OneStageDetector):
    __inject__ = ["backbone", "yolo_head", "post_process"]
    HEAD = "yolo_head"

    def __init__(self, backbone, yolo_head, post_process=None):
        super().__init__(backbone, yolo_head, post_process)

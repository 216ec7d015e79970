"""Models: importing this package registers every backbone, head, loss and architecture."""
from ppdet.modeling import post_process  # noqa: F401
from ppdet.modeling.architectures import yolov3  # noqa: F401
from ppdet.modeling.architectures.ssd import SSD  # noqa: F401  (registers all SSD parts)
from ppdet.modeling.backbones import darknet, mobilenet_v1, mobilenet_v2, resnet  # noqa: F401
from ppdet.modeling.heads import yolo_head  # noqa: F401
from ppdet.modeling.losses import yolo_loss  # noqa: F401

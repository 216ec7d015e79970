"""What every one-stage detector of this toolkit does: backbone -> head -> loss when
training, decode + NMS otherwise. Subclasses name their head attribute (``HEAD``), which
is also the prefix of the head's keys in checkpoints (``yolo_head.*``, ``ssd_head.*``).

``distill``: None, or a callable ``(outs, inputs, losses) -> losses`` that adds a frozen
teacher's loss to the training losses (:mod:`ppdet.engine.distill`). It runs inside
``forward`` so that a data-parallel wrapper of the student carries it too; it is not a
sublayer, so the teacher stays out of the student's parameters and checkpoints."""
import paddle.nn as nn

__all__ = ["OneStageDetector"]


class OneStageDetector(nn.Layer):
    HEAD = "head"

    def __init__(self, backbone, head, post_process=None):
        super().__init__()
        self.backbone = backbone
        setattr(self, self.HEAD, head)
        self.post_process = post_process
        self.distill = None

    @property
    def head(self):
        return getattr(self, self.HEAD)

    def head_outputs(self, image):
        """Raw output maps; the graph pruners trace this (no post-processing)."""
        return self.head(self.backbone(image))

    def forward(self, inputs):
        outs = self.head_outputs(inputs["image"])
        if self.training:
            losses = self.head.get_loss(outs, inputs)
            return losses if self.distill is None else self.distill(outs, inputs, losses)
        return self.predict_from_outputs(outs, inputs["im_shape"], inputs["scale_factor"])

    def predict_from_outputs(self, outs, im_shape, scale_factor):
        bbox, bbox_num = self.post_process(outs, im_shape, scale_factor, self.head)
        return {"bbox": bbox, "bbox_num": bbox_num}

"""Data layer: dataset readers, transforms, batch loader and the synthetic shapes set.

Importing it registers ``VOCDataSet``/``COCODataSet`` in ``DATASETS`` and every transform in
``TRANSFORMS``. Paddle is imported only when a loader starts worker processes.
"""
from ppdet.data.coco import COCODataSet, DetDataset
from ppdet.data.loader import DetLoader, build_loader
from ppdet.data.shapes import CLASS_NAMES as SHAPES_CLASSES
from ppdet.data.shapes import ensure_shapes, make_shapes
from ppdet.data.transforms import Compose
from ppdet.data.voc import VOCDataSet

__all__ = ["DetDataset", "VOCDataSet", "COCODataSet", "Compose", "DetLoader", "build_loader",
           "make_shapes", "ensure_shapes", "SHAPES_CLASSES"]

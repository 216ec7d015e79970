"""Pascal VOC reader: XML annotations listed by an ImageSets id file or a PaddleDetection list."""
import xml.etree.ElementTree as ET

from ppdet.core.errors import DataError
from ppdet.core.registry import DATASETS
from ppdet.data.coco import DetDataset, image_hw, make_record

__all__ = ["VOCDataSet"]

IMAGE_EXTS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".bmp")


def _read_lines(path, what):
    try:
        return [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} {path}: {e}") from e


def parse_voc_xml(xml_file):
    """{'filename', 'h', 'w' (0 when absent), 'objects': [(name, difficult, [x1,y1,x2,y2])]}."""
    try:
        root = ET.parse(xml_file).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {xml_file}") from None
    except (ET.ParseError, OSError) as e:
        raise DataError(f"cannot parse annotation file {xml_file}: {e}") from e

    def size(k):
        text = root.findtext(f"size/{k}") or 0
        try:
            return int(float(text))
        except ValueError:
            raise DataError(f"{xml_file}: size/{k} is {text!r}, not a number") from None

    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        try:
            box = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise DataError(f"{xml_file}: object '{name}' has no valid bndbox "
                            f"(xmin, ymin, xmax, ymax)") from None
        if not name:
            raise DataError(f"{xml_file}: an object has no name")
        try:
            difficult = int(float(obj.findtext("difficult") or 0))
        except ValueError:
            raise DataError(f"{xml_file}: object '{name}' has difficult "
                            f"{obj.findtext('difficult')!r}, not 0 or 1") from None
        objects.append((name, difficult, box))
    return {"filename": (root.findtext("filename") or "").strip(), "h": size("height"),
            "w": size("width"), "objects": objects}


@DATASETS.register
class VOCDataSet(DetDataset):
    """VOC reader. ``anno_path`` lines hold either an image id (standard ImageSets file:
    ``Annotations/<id>.xml`` and ``<image_dir or JPEGImages>/<id>.<ext>``) or
    ``image_path xml_path`` (PaddleDetection list file, paths relative to ``dataset_dir``).

    Class names come from ``class_names``, else the ``label_list`` file (default
    ``label_list.txt`` when present), else every name in the XMLs, sorted. ``im_id`` is the
    record index; ``clsid2catid`` is class index + 1. ``data_fields`` is accepted for
    PaddleDetection configs; records always carry every field.
    """

    def __init__(self, dataset_dir, anno_path, image_dir="", label_list=None, class_names=None,
                 allow_empty=False, data_fields=None, sample_num=-1):
        super().__init__(dataset_dir, anno_path, image_dir, allow_empty, sample_num)
        entries = []  # (image path or None, xml path, parsed xml)
        for no, tokens in enumerate(_read_lines(self.anno_path, "image list"), 1):
            if len(tokens) == 1:
                xml = self.dataset_dir / "Annotations" / f"{tokens[0]}.xml"
                img = None
            elif len(tokens) == 2:
                img, xml = self.image_dir / tokens[0], self.dataset_dir / tokens[1]
            else:
                raise DataError(f"{self.anno_path}:{no}: expected 'id' or 'image_path "
                                 f"xml_path', got {' '.join(tokens)!r}")
            entries.append((img, xml, parse_voc_xml(xml)))
        self.class_names = self._class_names(class_names, label_list, entries)
        self.clsid2catid = {i: i + 1 for i in range(len(self.class_names))}
        cname2cid = self.cname2cid
        records = []
        for img, xml, ann in entries:
            img = img or self._find_image(xml, ann["filename"])
            if not img.is_file():
                raise FileNotFoundError(f"image {img} listed in {self.anno_path} not found")
            h, w = (ann["h"], ann["w"]) if ann["h"] > 0 and ann["w"] > 0 else image_hw(img)
            for name, _, _ in ann["objects"]:
                if name not in cname2cid:
                    raise DataError(f"{xml}: class '{name}' is not one of "
                                    f"{self.class_names}: add it to the dataset's class list")
            objs = ann["objects"]
            records.append(make_record(img, 0, h, w, [o[2] for o in objs],
                                       [cname2cid[o[0]] for o in objs], [o[1] for o in objs]))
        seen = {o[0] for _, _, ann in entries for o in ann["objects"]}
        self.unused_classes = [n for n in self.class_names if n not in seen]
        self._finish(records)
        for i, r in enumerate(self.records):
            r["im_id"] = i

    def _class_names(self, class_names, label_list, entries):
        if class_names:
            return list(class_names)
        path = self.dataset_dir / (label_list or "label_list.txt")
        if label_list or path.is_file():
            return [t[0] for t in _read_lines(path, "label list")]
        return sorted({o[0] for _, _, ann in entries for o in ann["objects"]})

    def _find_image(self, xml, filename):
        folder = self.image_dir if self.image_dir != self.dataset_dir else \
            self.dataset_dir / "JPEGImages"
        candidates = [folder / filename] if filename else []
        candidates += [folder / (xml.stem + ext) for ext in IMAGE_EXTS]
        for c in candidates:
            if c.is_file():
                return c
        raise FileNotFoundError(f"no image for {xml}: tried {candidates[0]} and other "
                                f"extensions {IMAGE_EXTS}")

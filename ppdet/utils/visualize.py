"""Draw detections on images."""
import colorsys

import cv2
import numpy as np

__all__ = ["draw_detections"]


def _colour(i):
    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def _label_origin(box, text_size, image_size):
    """Top-left corner of a label of ``text_size`` (w, h) for ``box``: above its top edge
    when there is room, else just inside it; shifted left or up so it stays in the image."""
    (x1, y1, _, _), (tw, th), (iw, ih) = box, text_size, image_size
    x = min(max(int(x1), 0), max(iw - tw, 0))
    y = int(y1) - th if int(y1) - th >= 0 else max(int(y1), 0)
    return x, min(y, max(ih - th, 0))


def draw_detections(image_bgr, bbox, class_names, threshold=0.5):
    """Boxes [K,6] (class, score, x1, y1, x2, y2) drawn with label and score; returns a copy.
    Boxes are clipped to the image and every label lies wholly inside it."""
    out = image_bgr.copy()
    ih, iw = out.shape[:2]
    thick = max(1, int(round(min(ih, iw) / 200)))
    scale = max(0.35, min(ih, iw) / 600)
    for cls, score, x1, y1, x2, y2 in np.asarray(bbox).reshape(-1, 6):
        if cls < 0 or score < threshold:
            continue
        c = _colour(int(cls))
        x1, x2 = np.clip([x1, x2], 0, iw - 1)
        y1, y2 = np.clip([y1, y2], 0, ih - 1)
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), c, thick)
        name = class_names[int(cls)] if int(cls) < len(class_names) else str(int(cls))
        text = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        w, h = tw + 4, th + base + 2
        x, y = _label_origin((x1, y1, x2, y2), (w, h), (iw, ih))
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), c, -1)
        cv2.putText(out, text, (x + 2, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return out

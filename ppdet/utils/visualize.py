"""Draw detections on images."""
import colorsys

import cv2
import numpy as np

__all__ = ["draw_detections"]


def _colour(i):
    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image_bgr, bbox, class_names, threshold=0.5):
    """Boxes [K,6] (class, score, x1, y1, x2, y2) drawn with label and score; returns a copy."""
    out = image_bgr.copy()
    thick = max(1, int(round(min(out.shape[:2]) / 200)))
    for cls, score, x1, y1, x2, y2 in np.asarray(bbox).reshape(-1, 6):
        if cls < 0 or score < threshold:
            continue
        c = _colour(int(cls))
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(out, p1, p2, c, thick)
        name = class_names[int(cls)] if int(cls) < len(class_names) else str(int(cls))
        text = f"{name} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.rectangle(out, (p1[0], max(p1[1] - th - 3, 0)), (p1[0] + tw + 2, p1[1]), c, -1)
        cv2.putText(out, text, (p1[0] + 1, max(p1[1] - 2, th)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return out

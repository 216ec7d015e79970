"""Generate the synthetic shapes detection set (VOC and COCO layouts) next to this script.

Example: python dataset/shapes/make_shapes.py --train 600 --val 120
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # ppdet is not installed

from ppdet.data import shapes  # noqa: E402
from ppdet.data.shapes import IMAGE_SIZE, ensure_shapes, make_shapes  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent),
                        help="output folder; its voc/ and coco/ are replaced")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=600, help="number of training images")
    parser.add_argument("--val", type=int, default=120, help="number of validation images")
    parser.add_argument("--if-missing", action="store_true",
                        help="do nothing when a complete set with these arguments is there")
    args = parser.parse_args(argv)
    start = time.time()
    what = f"{args.train} train + {args.val} val images ({IMAGE_SIZE}x{IMAGE_SIZE})"
    if args.if_missing and shapes._is_complete(Path(args.out),
                                               shapes._params(args.seed, args.train, args.val)):
        print(f"shapes set already there, nothing written: {what} in {args.out}/voc and "
              f"{args.out}/coco")
        return
    make = ensure_shapes if args.if_missing else make_shapes
    out = make(args.out, args.seed, args.train, args.val)
    print(f"wrote the shapes set: {what} in {out}/voc and {out}/coco "
          f"({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()

"""The child process that quantizes: ``python -m ppdet.slim.quant.worker FP32_DIR OUT_DIR
CALIB.npz --algo A --batch_size B [--skip NAME ...]``, started by ``pipeline.post_quant``
with ``legacy_ir.child_env()`` (PIR off before paddle is imported). The parent exported the
FP32 legacy program to FP32_DIR and wrote the calibration feeds to CALIB.npz; this writes
the quantized ``model.pdmodel|.pdiparams`` to OUT_DIR. Exit 2 with one ``error:`` line on
bad input, exit 1 with a traceback on a crash.
"""
import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("fp32_dir")
    parser.add_argument("out_dir")
    parser.add_argument("calib")
    parser.add_argument("--algo", default="hist")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[])
    args = parser.parse_args(argv)
    from ppdet.engine import legacy_ir
    if os.environ.get(legacy_ir.PIR_FLAG) != "0":
        print(f"error: start this with {legacy_ir.PIR_FLAG}=0 in its environment",
              file=sys.stderr)
        return 2
    import numpy as np

    from ppdet.core.errors import UserError
    with np.load(args.calib) as data:
        calib = {k: data[k] for k in data.files}
    try:
        n = legacy_ir.quantize(args.fp32_dir, args.out_dir, calib, args.algo,
                               args.batch_size, args.skip)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"calibrated on {n} batches of {args.batch_size} ({args.algo})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Convert weights users already have into this toolkit's .pdparams (the work is in
ppdet.engine.weights) and print the match table (loaded / skipped / missing).

    python tools/convert_weights.py SRC -c CONFIG --output OUT.pdparams

SRC: a static-era PaddleDetection / PaddleSlim weights folder or its .tar, a released URL
(read offline from ~/.cache/paddle/weights/), a PaddleDetection 2.x or PaddleClas 2.x
.pdparams, or this toolkit's own checkpoint. Every tensor of the model CONFIG builds must
come from SRC, unless --partial (then the rest keeps its initial values, as
pretrain_weights would).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppdet.utils.cli import (  # noqa: E402
    ArgsParser,
    UserError,
    check_writable_file,
    load_config_from_args,
    run_main,
)


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("src", help="weights to convert (folder, .tar, URL or .pdparams)")
    parser.add_argument("--output", required=True, help="where to write OUT.pdparams")
    parser.add_argument("--partial", action="store_true",
                        help="allow model tensors the weights lack or have in another shape")
    parser.add_argument("--quiet", action="store_true", help="print the totals only")
    args = parser.parse_args(argv)
    if not args.output.endswith(".pdparams"):     # checked before the source is read
        raise UserError(f"--output must end in .pdparams (got {args.output})")
    check_writable_file("--output", args.output)
    cfg = load_config_from_args(args)

    from ppdet.engine.checkpoint import convert_weights
    from ppdet.engine.weights import format_table
    model, match = convert_weights(args.src, cfg, args.output, allow_partial=args.partial)
    table = format_table(model, match)
    print(table.splitlines()[-1] if args.quiet else table)
    print(f"wrote {args.output}")
    return match


if __name__ == "__main__":
    main()

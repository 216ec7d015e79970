"""Merge sensitivity files written by separate processes (an example script).

    python merge.py demo.data.1 demo.data.2 -o demo.data
Same result as ``paddleslim.prune.merge_sensitive`` (later files win on equal keys), with
ratio keys normalised; sidecars must agree (same model, weights, eval set and metric). The
output is written under the lock sensitive.py takes, and records already in it are kept.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.utils.cli import ArgumentParser, check_writable_file, run_main  # noqa: E402


@run_main
def main(argv=None):
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", help="sensitivities files to merge")
    parser.add_argument("-o", "--output", required=True, help="merged file to write")
    parser.add_argument("--adopt", action="store_true",
                        help="merge into an existing output that has no sidecar")
    args = parser.parse_args(argv)
    check_writable_file("-o", args.output)
    from ppdet.slim.sensitivity.store import merge_with_sidecars
    merged = merge_with_sidecars(args.files, args.output, adopt=args.adopt)
    n = sum(len(v) for v in merged.values())
    print(f"merged {len(args.files)} files: {len(merged)} params, {n} measurements -> "
          f"{args.output}")


if __name__ == "__main__":
    main()

"""Build (or finish) the latency table of a config on this machine (CPU, oneDNN).

    python slim/prune/latency_table.py -c CFG -o weights=W [--threads 1] [--step 8] \
        [--max_counts N] [--passes N] [--output PATH] [--precision int8]

Every prunable group at every multiple of ``--step`` channels (and its full width), timed
with Paddle Inference at the config's deploy size, plus the whole exported model. Written
beside the weights (``latency_cpu-onednn_t<N>_<H>x<W>.json``) entry by entry: stop it any
time and run it again to go on; run it again with a larger ``--passes`` to add timings to
every entry (the fastest is kept: on a busy machine more passes steady the table).
``--precision int8`` times every program quantized (cheap calibration, in a child process)
and run with the INT8 predictor config, for ``prune.py --precision int8``
(``latency_cpu-onednn-int8_...json``).
See ppdet/slim/latency/table.py for the model it predicts with.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.slim.pipelines.requests import LatencyTableRequest, from_args  # noqa: E402
from ppdet.utils.cli import ArgsParser, load_config_from_args, run_main  # noqa: E402


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the predictor")
    parser.add_argument("--step", type=int, default=8, help="measure every multiple of N")
    parser.add_argument("--max_counts", type=int, default=None,
                        help="at most N counts per group (evenly spread), for big models")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--passes", type=int, default=None,
                        help="timings of each entry, in separate passes, the fastest kept "
                             "(default: 2)")
    parser.add_argument("--output", default=None, help="table file (default: beside weights)")
    parser.add_argument("--precision", default="fp32",
                        help="int8: time the quantized programs (the INT8 deployment)")
    args = parser.parse_args(argv)
    req = from_args(LatencyTableRequest, args)
    cfg = load_config_from_args(args)
    from ppdet.slim.pipelines.latency import build_latency_table
    build_latency_table(cfg, req)


if __name__ == "__main__":
    main()

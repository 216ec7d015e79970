"""Exported models measured in interleaved rounds, same run: a table of ms and of each
model's speed-up over the first (Paddle Inference, CPU, oneDNN, batch 1; the fastest of
each model's rounds, the statistic the latency tables keep).

    python bench/measure_exported.py DIR0 DIR1 [...] [--size 160] [--threads 1] [--rounds 6]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", help="exported model folders; the first is the "
                                                "reference")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    from ppdet.engine.latency import measure_latency
    from ppdet.slim.latency.timing import STAT
    best = [float("inf")] * len(args.dirs)
    for _ in range(args.rounds):              # in turn: each model sees the same load
        for i, d in enumerate(args.dirs):
            best[i] = min(best[i], measure_latency(d, [args.size, args.size],
                                                   threads=args.threads, stat=STAT,
                                                   warmup=5, repeats=args.repeats))
    print(f"| model | latency (ms), {args.size} px, {args.threads} thread(s) | speed-up |")
    print("|---|---|---|")
    for d, ms in zip(args.dirs, best):
        print(f"| {os.path.relpath(d, ROOT)} | {ms:.2f} | {best[0] / ms:.2f}x |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

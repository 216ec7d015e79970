"""Network slimming: prune channels by a global BN-scale threshold, then residual layers,
then fine-tune (an example script; the work is in ppdet.slim.pipelines.slimming).

    # 1. sparsity training, from a normally trained model
    python tools/train.py -c CFG -o pretrain_weights=W --sr --s 0.0001 --prune 1
    # 2. prune channels (and 2 residual blocks), fine-tune, write the before/after table
    python slim/prune/slim_prune.py -c CFG -o weights=output/NAME_sparse/model_final \\
        --global_percent 0.2 --layer_keep 0.7 --shortcuts 2 --finetune --report slim.md
    # the same, fine-tuned under the model before slimming as teacher
    python slim/prune/slim_prune.py -c CFG -o weights=W --global_percent 0.2 --finetune --distill

Removed channels' BN offsets are folded into the next layer, so the pruned model computes
what the sparsity-trained model computes with those scales set to zero. Checkpoints
(``channels``, ``layers``, then the fine-tuned ones) carry their channel plan and removed
blocks: eval/export/infer need no other flags.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.engine.distill import add_distill_args  # noqa: E402
from ppdet.slim.pipelines.requests import SlimRequest, from_args  # noqa: E402
from ppdet.utils.cli import ArgsParser, load_config_from_args, run_main  # noqa: E402


@run_main
def main(argv=None):
    parser = ArgsParser(description=__doc__)
    parser.add_argument("--global_percent", type=float, default=0.2,
                        help="share of all prunable BN scales under the threshold")
    parser.add_argument("--layer_keep", type=float, default=0.0,
                        help="keep at least this share of every layer's channels; without "
                             "it a threshold that would empty a layer is refused")
    parser.add_argument("--shortcuts", type=int, default=0,
                        help="residual blocks to remove (weakest mean |gamma| first)")
    parser.add_argument("--prune", type=int, default=1, choices=[0, 1, 2],
                        help="1: also prune layers tied by shortcuts (one union mask); 2: "
                             "also layers feeding 3x3 convs (DarkNet, ResNet: offsets folded "
                             "exactly inside the image, not on its 1-pixel border)")
    parser.add_argument("--dw_rule", default="max", choices=["max", "intersection"],
                        help="depthwise convs: keep the larger layer's channels (max), or "
                             "remove only channels both sides remove (intersection)")
    parser.add_argument("--finetune", action="store_true", help="fine-tune after pruning")
    parser.add_argument("--eval", action="store_true", help="evaluate while fine-tuning")
    parser.add_argument("--report", default=None, metavar="FILE.md",
                        help="write the before/after table (mAP, params, FLOPs, latency)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list blocked groups")
    add_distill_args(parser)
    args = parser.parse_args(argv)
    req = from_args(SlimRequest, args)             # every option, before anything slow
    cfg = load_config_from_args(args)
    if req.finetune:
        from ppdet.engine.optim import check_schedule
        check_schedule(cfg)         # before the slimming: fine-tuning could not run
    from ppdet.slim.pipelines.slimming import slim_and_finetune
    return slim_and_finetune(cfg, req)


if __name__ == "__main__":
    main()

"""`make demo`: the whole product on the embedded shapes set, as a user would run it.

Each step is the documented command line, printed before it runs. Outputs go to
output/demo/. Re-running skips the training when its final checkpoint is there.
"""
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
CFG = "configs/shapes/yolov3_mobilenet_v1_shapes.yml"
OUT = "output/demo"
VAL_IMAGE = "dataset/shapes/voc/JPEGImages/val_00000.jpg"
WEIGHTS = f"{OUT}/yolov3_mobilenet_v1_shapes/model_final"
PRUNED = f"{OUT}/yolov3_mobilenet_v1_shapes_pruned"
FINETUNE_EPOCHS = "8"     # a quarter of the 30 training epochs


def run(*args, background=False):
    cmd = [PY, *args]
    print("\n$ python " + " ".join(shlex.quote(a) for a in args), flush=True)
    if background:
        return subprocess.Popen(cmd, cwd=ROOT)
    code = subprocess.run(cmd, cwd=ROOT).returncode
    if code:            # the step printed its own one-line error: no traceback on top of it
        sys.exit(code)


def main():
    start = time.time()
    os.makedirs(os.path.join(ROOT, OUT), exist_ok=True)
    run("dataset/shapes/make_shapes.py", "--if-missing")
    if not os.path.isfile(os.path.join(ROOT, WEIGHTS + ".pdparams")):
        run("tools/train.py", "-c", CFG, "--eval", "-o", f"save_dir={OUT}")
    run("tools/eval.py", "-c", CFG, "-o", f"weights={WEIGHTS}", "--output_eval", OUT)
    run("tools/export_model.py", "-c", CFG, "-o", f"weights={WEIGHTS}",
        "--output_dir", f"{OUT}/inference")
    run("tools/infer.py", "-c", CFG, "-o", f"weights={WEIGHTS}", "--infer_img", VAL_IMAGE,
        "--output_dir", f"{OUT}/drawn")
    run("deploy/python/infer.py", "--model_dir", f"{OUT}/inference/yolov3_mobilenet_v1_shapes",
        "--image_file", VAL_IMAGE,
        "--output_dir", f"{OUT}/deployed")
    # sensitivity of every prunable conv, split by ratio over two processes, then merged
    procs = [run("slim/sensitive/sensitive.py", "-c", CFG, "-o", f"weights={WEIGHTS}",
                 "--pruned_ratios", ratios, "--sensitivities_file", f"{OUT}/sens.data.{i}",
                 background=True)
             for i, ratios in enumerate(["0.1 0.3 0.5 0.7", "0.2 0.4 0.6 0.8"])]
    if any(p.wait() for p in procs):
        sys.exit("sensitivity analysis failed")
    run("slim/sensitive/merge.py", f"{OUT}/sens.data.0", f"{OUT}/sens.data.1",
        "-o", f"{OUT}/sensitivities.data")
    run("slim/sensitive/analyze.py", f"{OUT}/sensitivities.data", "--target_flops", "0.5",
        "-c", CFG)
    # prune to -50% FLOPs from the sensitivities, fine-tune, export and verify, report
    run("slim/prune/prune.py", "-c", CFG, "-o", f"weights={WEIGHTS}", f"save_dir={OUT}",
        f"epoch={FINETUNE_EPOCHS}", "LearningRate.base_lr=0.0006",
        "--sensitivities_file", f"{OUT}/sensitivities.data", "--target_flops", "0.5",
        "--align", "8", "--eval")
    run("slim/prune/export_model.py", "-c", CFG, "-o", f"weights={PRUNED}/model_final",
        "--output_dir", f"{OUT}/inference_pruned")
    run("slim/prune/report.py", "-c", CFG, "--models", f"baseline={WEIGHTS}",
        f"pruned={PRUNED}/pruned", f"pruned+fine-tuned={PRUNED}/model_final",
        "--output", f"{OUT}/report.md")
    print(f"\ndemo finished in {(time.time() - start) / 60:.1f} min; outputs in {OUT}/")


if __name__ == "__main__":
    main()

"""Every bad input to every script: one line naming the value or file, exit 2, nothing lost.

Table-driven: each case runs a script's ``main(argv)`` in-process (a subprocess per case
would cost seconds of paddle import each) and asserts a non-zero exit, exactly one line on
stderr that starts with ``error:`` and names the offending value or file, no traceback,
and that every file of the shared fixture folder (configs, weights, sensitivities files and
sidecars, datasets) is byte-identical afterwards, with no new file beside them but locks.
"""
import json
import os
import pickle
import shutil

import pytest
import yaml
from helpers import assert_one_error_line, assert_unchanged, script, snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
SHAPES_VOC = os.path.join(ROOT, "dataset/shapes/voc")
CONV = "yolo_block.0.tip.conv.weights"
N_EVAL = 8


def _voc_copy(root, name, images, corrupt=(), xml_edit=None):
    """A small VOC set in ``root/name`` from shapes images; ``corrupt`` ids get junk bytes."""
    d = os.path.join(root, name)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    for i in images:
        shutil.copy(os.path.join(SHAPES_VOC, "Annotations", f"{i}.xml"),
                    os.path.join(d, "Annotations", f"{i}.xml"))
        target = os.path.join(d, "JPEGImages", f"{i}.jpg")
        if i in corrupt:
            with open(target, "wb") as f:
                f.write(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        else:
            shutil.copy(os.path.join(SHAPES_VOC, "JPEGImages", f"{i}.jpg"), target)
    if xml_edit:
        i, text = xml_edit
        with open(os.path.join(d, "Annotations", f"{i}.xml"), "w") as f:
            f.write(text)
    with open(os.path.join(d, "ImageSets/Main/val.txt"), "w") as f:
        f.write("\n".join(images) + "\n")
    shutil.copy(os.path.join(SHAPES_VOC, "label_list.txt"), os.path.join(d, "label_list.txt"))
    return d


def _coco_json(path, gt):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(gt, f) if not isinstance(gt, str) else f.write(gt)


class Ctx(dict):
    __getattr__ = dict.__getitem__


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, shapes_root):
    """Shared inputs, made once: random checkpoints of the shapes config, sensitivities
    files with and without sidecars, broken datasets and configs."""
    import paddle

    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_dataset, build_model
    from ppdet.engine.checkpoint import channel_plan, save_checkpoint
    from ppdet.slim.prune.pruner import FilterPruner
    from ppdet.slim.sensitivity.analysis import fingerprint
    from ppdet.slim.sensitivity.cache import eval_set_digest
    from ppdet.slim.sensitivity.store import FORMAT
    root = str(tmp_path_factory.mktemp("bad_inputs"))
    c = Ctx(root=root)
    cfg = load_config(SHAPES_CFG)
    paddle.seed(0)
    model = build_model(cfg)
    c["w"] = os.path.join(root, "w", "rand")
    save_checkpoint(model, c.w)
    c["w2"] = os.path.join(root, "w2", "rand")
    paddle.seed(1)
    save_checkpoint(build_model(cfg), c.w2)
    # a prune.py run folder, and a checkpoint of another run dropped into it
    run = os.path.join(root, "run")
    save_checkpoint(model, os.path.join(run, "pruned"), plan=channel_plan(model))
    other = build_model(cfg)
    FilterPruner(other).prune({CONV: 0.5})
    save_checkpoint(other, os.path.join(run, "3"), plan=channel_plan(other))
    c["foreign"] = os.path.join(run, "3")
    # sensitivities files: with a sidecar of this model (VOC 11point, N_EVAL images), one
    # with a sidecar of other weights, one without any, one corrupt sidecar, junk
    records = build_dataset(cfg, "eval").records[:N_EVAL]
    fp = fingerprint(cfg, c.w + ".pdparams", eval_set_digest(records), "l1_norm")
    sens = {CONV: {0.1: 0.05, 0.2: 0.1}}

    def sens_file(name, meta_fp=None, meta_text=None):
        path = os.path.join(root, name)
        with open(path, "wb") as f:
            pickle.dump(sens, f, protocol=2)
        if meta_fp is not None:
            meta_text = json.dumps({"format": FORMAT, "fingerprint": meta_fp, "baseline": 0.5})
        if meta_text is not None:
            with open(path + ".meta.json", "w") as f:
                f.write(meta_text)
        return path
    c["sens"] = sens_file("sens.data", fp)
    c["sens_other"] = sens_file("other.data", {**fp, "weights": "0" * 64})
    c["sens_plain"] = sens_file("plain.data")
    c["sens_badmeta"] = sens_file("badmeta.data", meta_text="{not json")
    c["sens_alien"] = os.path.join(root, "alien.data")     # PaddleSlim-style, another model
    with open(c.sens_alien, "wb") as f:
        pickle.dump({"conv2d_99.w_0": {0.1: 0.01, 0.5: 0.2}}, f, protocol=2)
    c["junk"] = os.path.join(root, "junk.data")
    with open(c.junk, "wb") as f:
        f.write(b"not a pickle")
    c["folder"] = os.path.join(root, "a_folder")
    os.makedirs(c.folder)
    c["file"] = os.path.join(root, "a_file.txt")
    with open(c.file, "w") as f:
        f.write("x")
    # datasets with defects
    ids = ["val_00000", "val_00001", "val_00002"]
    c["voc_badjpg"] = _voc_copy(root, "voc_badjpg", ids, corrupt={"val_00001"})
    c["bad_jpg"] = os.path.join(c.voc_badjpg, "JPEGImages", "val_00001.jpg")
    with open(os.path.join(SHAPES_VOC, "Annotations", "val_00001.xml")) as f:
        xml = f.read()
    c["voc_badxml"] = _voc_copy(root, "voc_badxml", ids, xml_edit=("val_00001", xml[:90]))
    c["voc_badclass"] = _voc_copy(root, "voc_badclass", ids, xml_edit=(
        "val_00001", xml.replace("<name>", "<name>hexagon", 1)))
    coco = os.path.join(root, "coco")
    os.makedirs(os.path.join(coco, "images"))
    shutil.copy(os.path.join(SHAPES_VOC, "JPEGImages", "val_00000.jpg"),
                os.path.join(coco, "images", "a.jpg"))
    image = {"id": 1, "file_name": "a.jpg", "height": 160, "width": 160}
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(["a", "b", "c", "d"])]
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0}
    _coco_json(os.path.join(coco, "no_cats.json"), {"images": [image], "annotations": [ann]})
    _coco_json(os.path.join(coco, "orphan.json"), {"images": [image], "categories": cats,
                                                   "annotations": [{**ann, "image_id": 999}]})
    no_bbox = {k: v for k, v in ann.items() if k != "bbox"}
    _coco_json(os.path.join(coco, "no_bbox.json"), {"images": [image], "categories": cats,
                                                    "annotations": [no_bbox]})
    _coco_json(os.path.join(coco, "broken.json"), '{"images": [')
    c["coco"] = coco
    # configs: the shipped one inherited, and its dataset swapped for the COCO layout
    c["cfg"] = os.path.join(root, "my.yml")
    with open(c.cfg, "w") as f:
        yaml.safe_dump({"_BASE_": [SHAPES_CFG], "weights": c.w}, f)
    c["coco_cfg"] = os.path.join(root, "my_coco.yml")
    with open(c.coco_cfg, "w") as f:
        f.write(f"_BASE_: ['{SHAPES_CFG}']\nweights: {c.w}\nmetric: COCO\n"
                f"EvalDataset: !COCODataSet\n  dataset_dir: {coco}\n  image_dir: images\n"
                f"  anno_path: no_cats.json\n")
    # a folder that looks like an export, for deploy/python/infer.py
    c["export"] = os.path.join(root, "export")
    os.makedirs(c.export)
    for name in ("model.pdmodel", "model.pdiparams", "infer_cfg.yml"):
        with open(os.path.join(c.export, name), "w") as f:
            f.write("placeholder")
    return c


S, P, A, M = ("slim/sensitive/sensitive.py", "slim/prune/prune.py",
              "slim/sensitive/analyze.py", "slim/sensitive/merge.py")
T, E, IN, X = "tools/train.py", "tools/eval.py", "tools/infer.py", "tools/export_model.py"
Q = "slim/quant/post_quant.py"
D, PX, SP, R = ("deploy/python/infer.py", "slim/prune/export_model.py",
                "slim/prune/slim_prune.py", "slim/prune/report.py")


def sens_args(c, *extra, sens="sens"):
    return ["-c", c.cfg, "-p", CONV, "-r", "0.3 0.5", "--eval_samples", str(N_EVAL),
            "-s", c[sens], *extra]


# (id, script, argv from the fixture, words the one error line must contain)
CASES = [
    # --- slim/sensitive/sensitive.py: options -------------------------------------------
    ("sens-batch-0", S, lambda c: sens_args(c, "--batch_size", "0"), ["--batch_size 0"]),
    ("sens-batch-neg", S, lambda c: sens_args(c, "--batch_size", "-4"), ["--batch_size -4"]),
    ("sens-batch-text", S, lambda c: sens_args(c, "--batch_size", "abc"), ["abc"]),
    ("sens-eval-samples-0", S, lambda c: sens_args(c, "--eval_samples", "0"),
     ["--eval_samples 0"]),
    ("sens-threads-0", S, lambda c: sens_args(c, "--cpu_threads", "0"), ["--cpu_threads 0"]),
    ("sens-shard-id-alone", S, lambda c: sens_args(c, "--shard_id", "1"),
     ["--shard_id needs --shards"]),
    ("sens-shard-id-range", S, lambda c: sens_args(c, "--shards", "2", "--shard_id", "2"),
     ["--shard_id 2"]),
    ("sens-shards-0", S, lambda c: sens_args(c, "--shards", "0"), ["--shards 0"]),
    # this suite runs on the CPU wheel: asking for the GPU is one line naming the fix
    ("sens-device-gpu", S, lambda c: sens_args(c, "--device", "gpu"),
     ["--device gpu", "--device cpu"]),
    ("sens-device-gpu-real", S, lambda c: sens_args(c, "--device", "gpu", "--mode", "real"),
     ["--device gpu", "--mode real"]),
    ("sens-dup-ratios", S, lambda c: sens_args(c) + ["-r", "0.3 0.30"], ["0.3", "same ratio"]),
    ("sens-ratio-0", S, lambda c: sens_args(c) + ["-r", "0 0.5"], ["0"]),
    ("sens-ratio-big", S, lambda c: sens_args(c) + ["-r", "1.5"], ["1.5"]),
    ("sens-criterion", S, lambda c: sens_args(c, "--criterion", "l3"), ["l3"]),
    ("sens-file-folder", S, lambda c: sens_args(c) + ["-s", c.folder], ["a_folder", "folder"]),
    ("sens-unknown-conv", S, lambda c: sens_args(c) + ["-p", "yolo_block.0.tip.conv.weight"],
     ["yolo_block.0.tip.conv.weight"]),
    # --- sensitive.py: config ---------------------------------------------------------
    ("sens-map-type-bogus", S, lambda c: sens_args(c, "-o", "map_type=13point"), ["13point"]),
    ("sens-metric-bogus", S, lambda c: sens_args(c, "-o", "metric=F1"), ["F1"]),
    ("sens-unknown-key", S, lambda c: sens_args(c, "-o", "EvalReader.batchsize=2"),
     ["batchsize", "batch_size"]),
    ("sens-bad-yaml", S, lambda c: sens_args(c, "-o", "epoch=[1"), ["epoch=[1"]),
    ("sens-weights-missing", S, lambda c: sens_args(c, "-o", "weights=/nowhere/w"),
     ["/nowhere/w"]),
    ("sens-num-classes", S, lambda c: sens_args(c, "-o", "num_classes=3"),
     ["num_classes is 3", "4 classes"]),
    ("sens-swapped-dataset-keeps-no-old-key", S, lambda c: sens_args(
        c, "-o", "EvalDataset=!COCODataSet {dataset_dir: x, anno_path: y, label_list: z}"),
     ["EvalDataset.label_list"]),
    # --- sensitive.py: the sensitivities file -------------------------------------------
    ("sens-other-map-type", S, lambda c: sens_args(c, "-o", "map_type=integral"),
     ["sens.data", "map_type", "11point", "integral"]),
    ("sens-other-metric", S, lambda c: sens_args(c, "-o", "metric=COCO"),
     ["sens.data", "metric", "VOC", "COCO"]),
    ("sens-other-weights", S, lambda c: sens_args(c, "-o", f"weights={c.w2}"),
     ["sens.data", "weights"]),
    ("sens-other-criterion", S, lambda c: sens_args(c, "--criterion", "geometry_median"),
     ["sens.data", "criterion"]),
    ("sens-other-eval-set", S, lambda c: sens_args(c, "--eval_samples", "5"),
     ["sens.data", "eval set"]),
    ("sens-no-sidecar", S, lambda c: sens_args(c, sens="sens_plain"), ["plain.data", "--adopt"]),
    ("sens-corrupt-sidecar", S, lambda c: sens_args(c, sens="sens_badmeta"),
     ["badmeta.data.meta.json"]),
    ("sens-not-a-pickle", S, lambda c: sens_args(c, sens="junk"), ["junk.data"]),
    # --- sensitive.py: data defects ---------------------------------------------------
    ("sens-corrupt-jpeg", S, lambda c: sens_args(c, "-o", f"EvalDataset.dataset_dir="
                                                 f"{c.voc_badjpg}", "-s", c.root + "/new.data"),
     ["val_00001.jpg"]),
    ("sens-truncated-xml", S, lambda c: sens_args(c, "-o", f"EvalDataset.dataset_dir="
                                                  f"{c.voc_badxml}"), ["val_00001.xml"]),
    ("sens-unknown-class", S, lambda c: sens_args(c, "-o", f"EvalDataset.dataset_dir="
                                                  f"{c.voc_badclass}"),
     ["val_00001.xml", "hexagon"]),
    ("coco-no-categories", S, lambda c: ["-c", c.coco_cfg, "-p", CONV, "-s", c.sens],
     ["no_cats.json", "categories"]),
    ("coco-unknown-image", S, lambda c: ["-c", c.coco_cfg, "-o", "EvalDataset.anno_path="
                                         "orphan.json", "-p", CONV], ["orphan.json", "999"]),
    ("coco-no-bbox", S, lambda c: ["-c", c.coco_cfg, "-o", "EvalDataset.anno_path=no_bbox.json",
                                   "-p", CONV], ["no_bbox.json", "bbox"]),
    ("coco-broken-json", S, lambda c: ["-c", c.coco_cfg, "-o", "EvalDataset.anno_path="
                                       "broken.json", "-p", CONV], ["broken.json"]),
    # --- slim/prune/prune.py ----------------------------------------------------------
    ("prune-target-ratio-neg", P, lambda c: ["-c", c.cfg, "-p", CONV, "--target_ratio", "-0.2"],
     ["--target_ratio -0.2"]),
    ("prune-align-0", P, lambda c: ["-c", c.cfg, "-p", CONV, "--pruned_ratios", "0.3",
                                    "--align", "0"], ["--align 0"]),
    ("prune-ratio-and-target", P, lambda c: ["-c", c.cfg, "-p", CONV, "--pruned_ratios", "0.3",
                                             "--target_ratio", "0.2"],
     ["--pruned_ratios", "--target_ratio"]),
    ("prune-loss-alone", P, lambda c: ["-c", c.cfg, "--loss", "0.1", "--target_flops", "0.3"],
     ["--loss", "--target_flops", "--sensitivities_file"]),
    ("prune-target-flops-big", P, lambda c: ["-c", c.cfg, "--sensitivities_file", c.sens,
                                             "--target_flops", "1.5"], ["--target_flops 1.5"]),
    ("prune-sens-missing", P, lambda c: ["-c", c.cfg, "--sensitivities_file", c.root + "/no.data",
                                         "--loss", "0.1"], ["no.data"]),
    ("prune-resume-and-prune", P, lambda c: ["-c", c.cfg, "-r", c.foreign, "-p", CONV],
     ["--resume_checkpoint", "--pruned_params"]),
    ("prune-resume-not-a-run", P, lambda c: ["-c", c.cfg, "-r", c.w], ["rand", "pruned.pdparams"]),
    ("prune-resume-other-run", P, lambda c: ["-c", c.cfg, "-r", c.foreign],
     ["another run", "run"]),
    ("prune-eval-no-finetune", P, lambda c: ["-c", c.cfg, "-p", CONV, "--pruned_ratios", "0.3",
                                             "--eval", "--no_finetune"],
     ["--eval", "--no_finetune"]),
    # --- slim/sensitive/analyze.py and merge.py --------------------------------------------
    ("analyze-loss-range", A, lambda c: [c.sens, "--loss", "1.5"], ["--loss 1.5"]),
    ("analyze-flops-no-config", A, lambda c: [c.sens, "--target_flops", "0.5"],
     ["--target_flops needs --config"]),
    ("analyze-junk", A, lambda c: [c.junk, "--loss", "0.1"], ["junk.data"]),
    ("analyze-flops-other-model", A, lambda c: [c.sens_alien, "--target_flops", "0.3", "-c",
                                                c.cfg], ["conv2d_99.w_0"]),
    ("analyze-plot-folder", A, lambda c: [c.sens, "--plot", c.folder], ["a_folder"]),
    ("analyze-missing", A, lambda c: [c.root + "/nothing.data"], ["nothing.data"]),
    ("merge-corrupt-sidecar", M, lambda c: [c.sens, c.sens_badmeta, "-o", c.root + "/m.data"],
     ["badmeta.data.meta.json"]),
    ("merge-other-weights", M, lambda c: [c.sens, c.sens_other, "-o", c.root + "/m.data"],
     ["other.data", "weights"]),
    ("merge-into-other-model", M, lambda c: [c.sens, "-o", c.sens_other],
     ["other.data", "weights"]),
    ("merge-into-plain", M, lambda c: [c.sens, "-o", c.sens_plain], ["plain.data", "--adopt"]),
    ("merge-missing", M, lambda c: [c.sens, c.root + "/gone.data", "-o", c.root + "/m.data"],
     ["gone.data"]),
    ("merge-output-folder", M, lambda c: [c.sens, "-o", c.folder], ["a_folder"]),
    # --- tools/ ---------------------------------------------------------------------------
    ("train-batch-0", T, lambda c: ["-c", c.cfg, "-o", "TrainReader.batch_size=0"],
     ["TrainReader.batch_size", "0"]),
    ("train-num-classes", T, lambda c: ["-c", c.cfg, "-o", "num_classes=5"],
     ["num_classes is 5", "TrainDataset"]),
    ("train-s-without-sr", T, lambda c: ["-c", c.cfg, "--s", "0.001"], ["--sr"]),
    ("train-resume-missing", T, lambda c: ["-c", c.cfg, "-r", c.root + "/nope"], ["nope"]),
    ("train-corrupt-jpeg", T, lambda c: [
        "-c", c.cfg, "-o", f"TrainDataset.dataset_dir={c.voc_badjpg}",
        "TrainDataset.anno_path=ImageSets/Main/val.txt", "TrainReader.batch_size=3",
        "TrainReader.shuffle=false", "epoch=1", f"save_dir={c.root}/never"],
     ["val_00001.jpg", "skip_bad_images"]),
    ("eval-corrupt-jpeg", E, lambda c: ["-c", c.cfg, "-o", f"EvalDataset.dataset_dir="
                                        f"{c.voc_badjpg}"], ["val_00001.jpg"]),
    ("eval-skip-refused", E, lambda c: ["-c", c.cfg, "-o", "EvalReader.skip_bad_images=true"],
     ["EvalReader.skip_bad_images"]),
    ("eval-output-is-file", E, lambda c: ["-c", c.cfg, "--output_eval", c.file], ["a_file.txt"]),
    ("eval-batch-neg", E, lambda c: ["-c", c.cfg, "-o", "EvalReader.batch_size=-1"],
     ["EvalReader.batch_size", "-1"]),
    ("infer-corrupt-image", IN, lambda c: ["-c", c.cfg, "--infer_img", c.bad_jpg,
                                           "--output_dir", c.root + "/drawn"], ["val_00001.jpg"]),
    ("infer-img-and-dir", IN, lambda c: ["-c", c.cfg, "--infer_img", c.bad_jpg, "--infer_dir",
                                         c.root], ["--infer_img", "--infer_dir"]),
    ("infer-threshold", IN, lambda c: ["-c", c.cfg, "--infer_img", c.bad_jpg,
                                       "--draw_threshold", "1.5"], ["--draw_threshold 1.5"]),
    ("infer-over-its-inputs", IN, lambda c: [
        "-c", c.cfg, "--infer_dir", os.path.dirname(c.bad_jpg), "--output_dir",
        os.path.dirname(c.bad_jpg)], ["JPEGImages", "overwrite"]),
    ("convert-missing-source", "tools/convert_weights.py", lambda c: [
        "-c", c.cfg, c.root + "/missing.tar", "--output", c.root + "/converted.pdparams"],
     ["missing.tar"]),
    ("export-output-is-file", X, lambda c: ["-c", c.cfg, "--output_dir", c.file],
     ["a_file.txt"]),
    ("export-weights-missing", X, lambda c: ["-c", c.cfg, "-o", "weights=/nowhere/w",
                                             "--output_dir", c.root + "/exp"], ["/nowhere/w"]),
    # --- deploy/ and the other slim/prune scripts ------------------------------------------
    ("deploy-corrupt-image", D, lambda c: ["--model_dir", c.export, "--image_file", c.bad_jpg],
     ["val_00001.jpg"]),
    ("latency-table-threads", "slim/prune/latency_table.py", lambda c: [
        "-c", c.cfg, "--threads", "0"], ["--threads 0"]),
    ("latency-table-passes", "slim/prune/latency_table.py", lambda c: [
        "-c", c.cfg, "--passes", "0"], ["--passes 0"]),
    ("latency-table-output-folder", "slim/prune/latency_table.py", lambda c: [
        "-c", c.cfg, "--output", c.folder], ["a_folder"]),
    ("deploy-over-its-input", D, lambda c: ["--model_dir", c.export, "--image_file",
                                            c.bad_jpg, "--output_dir",
                                            os.path.dirname(c.bad_jpg)], ["overwrite"]),
    ("deploy-missing-image", D, lambda c: ["--model_dir", c.export, "--image_file",
                                           c.root + "/none.jpg"], ["none.jpg"]),
    ("deploy-no-export", D, lambda c: ["--model_dir", c.folder, "--image_file", c.bad_jpg],
     ["a_folder"]),
    ("deploy-threshold", D, lambda c: ["--model_dir", c.export, "--image_file", c.bad_jpg,
                                       "--threshold", "2"], ["--threshold 2"]),
    ("deploy-threads", D, lambda c: ["--model_dir", c.export, "--image_file", c.bad_jpg,
                                     "--cpu_threads", "0"], ["--cpu_threads 0"]),
    ("prune-export-verify-neg", PX, lambda c: ["-c", c.cfg, "--verify_images", "-1"],
     ["--verify_images -1"]),
    ("slim-percent", SP, lambda c: ["-c", c.cfg, "--global_percent", "1.5"],
     ["--global_percent 1.5"]),
    ("slim-shortcuts", SP, lambda c: ["-c", c.cfg, "--shortcuts", "-1"], ["--shortcuts -1"]),
    ("report-label-twice", R, lambda c: ["-c", c.cfg, "--models", f"a={c.w}", f"a={c.w2}"],
     ["'a'"]),
    ("report-weights-missing", R, lambda c: ["-c", c.cfg, "--models", f"a={c.w}",
                                             "b=/nowhere/w"], ["/nowhere/w"]),
    ("report-int8-algo", R, lambda c: ["-c", c.cfg, "--models", f"a={c.w}", "--int8",
                                       "--algo", "percentile"], ["--algo percentile"]),
    ("quant-algo", Q, lambda c: ["-c", c.cfg, "-o", f"weights={c.w}", "--algo", "percentile"],
     ["percentile"]),
    ("quant-calib-below-a-batch", Q, lambda c: ["-c", c.cfg, "-o", f"weights={c.w}",
                                                "--calib_samples", "4"], ["--calib_samples 4"]),
    ("quant-max-loss-alone", Q, lambda c: ["-c", c.cfg, "-o", f"weights={c.w}", "--max_loss",
                                           "1"], ["--max_loss needs --sensitivities_file"]),
]


def test_the_table_is_large_and_covers_every_script():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
    scripts = {rel for _, rel, _, _ in CASES}
    for folder in ("tools", "slim/sensitive", "slim/prune", "slim/quant", "deploy/python"):
        for f in os.listdir(os.path.join(ROOT, folder)):
            if f.endswith(".py") and f != "demo.py":
                assert f"{folder}/{f}" in scripts, f"no bad-input case for {folder}/{f}"


@pytest.mark.parametrize("rel, argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(ctx, capsys, rel, argv, words):
    before = snapshot(ctx.root)
    args = argv(ctx)
    with pytest.raises(SystemExit) as e:
        script(rel).main(args)
    err = capsys.readouterr().err
    assert e.value.code not in (0, None), err
    assert_one_error_line(err, words)
    assert_unchanged(before, snapshot(ctx.root))

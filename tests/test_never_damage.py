"""Never damage what a user already has (issue 27): exports on a full or read-only disk,
exports killed at random instants, broken exported folders given to every loader, options
that cannot mean anything, and OSErrors of the machine.

Table-driven like tests/test_bad_inputs.py: each case runs a script's ``main(argv)``
in-process and asserts exit 2, exactly one ``error:`` line naming the file or value, no
traceback, and that every file under the fixture folder (a previous export included, and
what the small file systems hold) is byte-identical afterwards, with nothing new beside it.
The full-disk and read-only cases run on small tmpfs mounts; where the test cannot mount
one (not root, no CAP_SYS_ADMIN) they are skipped with that reason.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from helpers import assert_one_error_line, assert_unchanged, script, snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES_CFG = os.path.join(ROOT, "configs/shapes/yolov3_mobilenet_v1_shapes.yml")
IMAGE = os.path.join(ROOT, "dataset/shapes/voc/JPEGImages/val_00000.jpg")
SMALL = ["TrainDataset.sample_num=8", "TrainReader.batch_size=8", "TrainReader.worker_num=0"]
EXPORT = ("model.pdmodel", "model.pdiparams", "infer_cfg.yml")
T, X, PX, D = ("tools/train.py", "tools/export_model.py", "slim/prune/export_model.py",
               "deploy/python/infer.py")
E, IN, P, SP, M = ("tools/eval.py", "tools/infer.py", "slim/prune/prune.py",
                   "slim/prune/slim_prune.py", "slim/sensitive/merge.py")


class Ctx(dict):
    __getattr__ = dict.__getitem__


def _mount(path, size, read_only=False):
    """A tmpfs of ``size`` at ``path``; the reason as a string when it cannot be mounted."""
    os.makedirs(path, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run mount: {e}"
    if r.returncode != 0:
        return f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip()[:120]})"
    return None


def _fill(folder):
    """Fill the file system of ``folder`` to the last byte."""
    with open(os.path.join(folder, "ballast"), "wb", buffering=0) as f:
        for chunk in (65536, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass


@pytest.fixture(scope="module")
def mounts():
    """The tmpfs mounts a test made, unmounted at the end whatever happened."""
    made = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", m], capture_output=True)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, shapes_root, mounts):
    """Random checkpoints, a previous export (of other weights) where the cases export to,
    a good export and broken copies of it, and two small file systems: one full to the
    last byte and one read-only, each holding a previous export."""
    import paddle

    from ppdet.core.config import load_config
    from ppdet.engine.builder import build_model
    from ppdet.engine.checkpoint import save_checkpoint
    from ppdet.engine.export import export_model
    from ppdet.engine.trainer import Trainer
    from ppdet.slim.prune.pruner import FilterPruner
    root = str(tmp_path_factory.mktemp("never_damage"))
    c = Ctx(root=root, mounts=mounts)
    cfg = load_config(SHAPES_CFG)
    paddle.seed(0)
    model = build_model(cfg)
    c["w"] = os.path.join(root, "w", "rand")
    save_checkpoint(model, c.w)
    paddle.seed(1)
    other = build_model(cfg)
    c["w2"] = os.path.join(root, "w2", "rand")
    save_checkpoint(other, c.w2)
    c["cfg"] = os.path.join(root, "my.yml")
    with open(c.cfg, "w") as f:
        yaml.safe_dump({"_BASE_": [SHAPES_CFG], "weights": c.w}, f)
    names = ["circle", "rectangle", "triangle", "cross"]
    # exports land in OUT/my (the config's name): a previous export of other weights there
    c["out"] = os.path.join(root, "out")
    c["old"] = export_model(other, cfg, os.path.join(c.out, "my"), names)
    c["good"] = export_model(model, cfg, os.path.join(root, "good"), names)
    FilterPruner(other).prune({"yolo_block.0.tip.conv.weights": 0.5})
    pruned = export_model(other, cfg, os.path.join(root, "pruned_export"), names)

    def broken(name, edit):
        d = os.path.join(root, "broken", name)
        shutil.copytree(c.good, d)
        edit(d)
        return d

    def cut(fname, keep):
        def edit(d):
            path = os.path.join(d, fname)
            with open(path, "rb") as f:
                data = f.read()
            with open(path, "wb") as f:
                f.write(data[:keep(len(data))])
        return edit
    c["no_params"] = broken("no_params", lambda d: os.remove(os.path.join(d, EXPORT[1])))
    c["no_cfg"] = broken("no_cfg", lambda d: os.remove(os.path.join(d, EXPORT[2])))
    c["cut_program"] = broken("cut_program", cut(EXPORT[0], lambda n: n // 2))
    c["cut_params"] = broken("cut_params", cut(EXPORT[1], lambda n: n - 1000))
    c["empty_params"] = broken("empty_params", cut(EXPORT[1], lambda n: 0))
    c["cut_cfg"] = broken("cut_cfg", cut(EXPORT[2], lambda n: n - 30))

    def params_folder(d):
        os.remove(os.path.join(d, EXPORT[1]))
        os.makedirs(os.path.join(d, EXPORT[1]))
    c["params_folder"] = broken("params_folder", params_folder)
    c["other_params"] = broken("other_params", lambda d: shutil.copy(
        os.path.join(pruned, EXPORT[1]), os.path.join(d, EXPORT[1])))
    c["junk_program"] = broken("junk_program", lambda d: open(
        os.path.join(d, EXPORT[0]), "wb").write(b"\x08\x01 not a program at all"))
    # a folder where the export would go that holds a user's own file
    c["user"] = os.path.join(root, "user")
    os.makedirs(os.path.join(c.user, "my"))
    with open(os.path.join(c.user, "my", "notes.txt"), "w") as f:
        f.write("mine\n")
    # configs that are not YAML text
    c["bin_cfg"] = os.path.join(root, "weights.yml")
    shutil.copy(c.w + ".pdparams", c.bin_cfg)
    c["latin_cfg"] = os.path.join(root, "latin.yml")
    with open(c.latin_cfg, "wb") as f:
        f.write(b"# r\xe9glages\nepoch: 1\n")
    c["list_cfg"] = os.path.join(root, "list.yml")
    with open(c.list_cfg, "w") as f:
        f.write("- epoch: 1\n- snapshot_epoch: 1\n")
    c["cfg_folder"] = os.path.join(root, "a_folder.yml")
    os.makedirs(c.cfg_folder)
    # a checkpoint saved after 5 epochs, to resume with fewer
    run = os.path.join(root, "run")
    trainer = Trainer(load_config(c.cfg, SMALL), save_dir=run)
    trainer.save("5", 4)
    c["after5"] = os.path.join(run, "5")
    # sensitivities files for merge.py
    import pickle
    c["sens"] = os.path.join(root, "sens.data")
    with open(c.sens, "wb") as f:
        pickle.dump({"yolo_block.0.tip.conv.weights": {0.1: 0.01}}, f, protocol=2)
    # small file systems: one full to the last byte, one read-only, each with an export
    c["full"], c["ro"] = os.path.join(root, "full"), os.path.join(root, "ro")
    reason = _mount(c.full, "9m")
    if reason is None:
        c.mounts.append(c.full)
        shutil.copytree(c.old, os.path.join(c.full, "out", "my"))
        os.makedirs(os.path.join(c.full, "drawn"))
        _fill(c.full)
        reason = _mount(c.ro, "9m")
    if reason is None:
        c.mounts.append(c.ro)
        shutil.copytree(c.old, os.path.join(c.ro, "out", "my"))
        os.makedirs(os.path.join(c.ro, "drawn"))
        r = subprocess.run(["mount", "-o", "remount,ro", c.ro], capture_output=True, text=True)
        if r.returncode != 0:
            reason = f"cannot remount a tmpfs read-only ({r.stderr.strip()[:120]})"
    c["no_tmpfs"] = reason
    return c


def full(c, *parts):
    return os.path.join(c.full, *parts)


def ro(c, *parts):
    return os.path.join(c.ro, *parts)


def _failing_verify(monkeypatch):
    import ppdet.engine.export as export

    def verify_export(model, model_dir, images, **kw):
        assert os.path.basename(model_dir).startswith(".my.tmp-"), model_dir   # before swap
        raise AssertionError(f"{images[0]}: exported model kept 3 boxes, dygraph 4")
    monkeypatch.setattr(export, "verify_export", verify_export)


def deploy(c, folder):
    return ["--model_dir", c[folder], "--image_file", IMAGE, "--output_dir",
            os.path.join(c.root, "drawn")]


# (id, script, argv from the fixture, words the one error line must contain, setup)
CASES = [
    # 1. exports: a full disk, a read-only disk, a failed verification keep the old export
    ("export-full-disk", X, lambda c: ["-c", c.cfg, "--output_dir", full(c, "out")],
     ["out/my", "no space left"], "tmpfs"),
    ("prune-export-full-disk", PX, lambda c: ["-c", c.cfg, "--output_dir", full(c, "out")],
     ["out/my", "no space left"], "tmpfs"),
    ("export-read-only", X, lambda c: ["-c", c.cfg, "--output_dir", ro(c, "out")],
     ["out", "read-only"], "tmpfs"),
    ("prune-export-verify-fails", PX, lambda c: ["-c", c.cfg, "--output_dir", c.out,
                                                 "--verify_images", "1"],
     ["verification failed", "3 boxes", "out/my"], _failing_verify),
    ("export-over-a-user-folder", X, lambda c: ["-c", c.cfg, "--output_dir", c.user],
     ["notes.txt", "not part of an export"], None),
    # 2. every loader of an exported folder: the broken file named in one line
    ("deploy-no-params", D, lambda c: deploy(c, "no_params"), ["model.pdiparams"], None),
    ("deploy-no-infer-cfg", D, lambda c: deploy(c, "no_cfg"), ["infer_cfg.yml"], None),
    ("deploy-truncated-program", D, lambda c: deploy(c, "cut_program"),
     ["model.pdmodel", "truncated"], None),
    ("deploy-junk-program", D, lambda c: deploy(c, "junk_program"), ["model.pdmodel"], None),
    ("deploy-truncated-params", D, lambda c: deploy(c, "cut_params"),
     ["model.pdiparams", "truncated"], None),
    ("deploy-empty-params", D, lambda c: deploy(c, "empty_params"),
     ["model.pdiparams", "empty"], None),
    ("deploy-params-folder", D, lambda c: deploy(c, "params_folder"),
     ["model.pdiparams", "not a file"], None),
    ("deploy-params-of-another-export", D, lambda c: deploy(c, "other_params"),
     ["model.pdiparams", "another export"], None),
    ("deploy-truncated-infer-cfg", D, lambda c: deploy(c, "cut_cfg"),
     ["infer_cfg.yml", "truncated"], None),
    # 3. options checked for what they mean, before any slow step
    ("train-epoch-0", T, lambda c: ["-c", c.cfg, "-o", "epoch=0"], ["epoch is 0", "epoch=1"],
     None),
    ("train-epoch-neg", T, lambda c: ["-c", c.cfg, "-o", "epoch=-1"],
     ["epoch is -1", "epoch=1"], None),
    ("train-epoch-fraction", T, lambda c: ["-c", c.cfg, "-o", "epoch=2.5"],
     ["epoch is 2.5", "epoch=3"], None),
    ("train-snapshot-0", T, lambda c: ["-c", c.cfg, "-o", "snapshot_epoch=0"],
     ["snapshot_epoch is 0"], None),
    ("train-milestones-backwards", T, lambda c: [
        "-c", c.cfg, "-o", "LearningRate.schedulers=[{name: PiecewiseDecay, milestones: [8, 5]}]"],
     ["milestones [8, 5]", "not increasing", "[5, 8]"], None),
    ("train-milestone-0", T, lambda c: [
        "-c", c.cfg, "-o", "LearningRate.schedulers=[{name: PiecewiseDecay, milestones: [0, 5]}]"],
     ["milestones [0, 5]"], None),
    ("train-values-count", T, lambda c: [
        "-c", c.cfg, "-o", "LearningRate.schedulers=[{name: PiecewiseDecay, milestones: [5], "
        "values: [0.1, 0.01, 0.001]}]"], ["2 values"], None),
    ("train-warmup-factor", T, lambda c: [
        "-c", c.cfg, "-o", "LearningRate.schedulers=[{name: LinearWarmup, start_factor: 3}]"],
     ["start_factor is 3"], None),
    ("train-base-lr-0", T, lambda c: ["-c", c.cfg, "-o", "LearningRate.base_lr=0"],
     ["LearningRate.base_lr is 0"], None),
    ("train-resume-past-the-end", T, lambda c: ["-c", c.cfg, "-o", "epoch=3", *SMALL, "-r",
                                                c.after5],
     ["after 5 epochs", "epoch is 3", "epoch=6"], None),
    ("prune-finetune-epoch-0", P, lambda c: ["-c", c.cfg, "-o", "epoch=0", "-p",
                                             "yolo_block.0.tip.conv.weights",
                                             "--pruned_ratios", "0.3"], ["epoch is 0"], None),
    ("slim-finetune-epoch-neg", SP, lambda c: ["-c", c.cfg, "-o", "epoch=-1", "--finetune"],
     ["epoch is -1"], None),
    ("config-binary", T, lambda c: ["-c", c.bin_cfg], ["weights.yml", "binary"], None),
    ("config-not-utf8", E, lambda c: ["-c", c.latin_cfg], ["latin.yml", "UTF-8"], None),
    ("config-a-list", X, lambda c: ["-c", c.list_cfg], ["list.yml", "not a mapping"], None),
    ("config-a-folder", IN, lambda c: ["-c", c.cfg_folder, "--infer_img", IMAGE],
     ["a_folder.yml", "folder"], None),
    ("config-binary-base", T, lambda c: ["-c", _with_base(c, c.bin_cfg)],
     ["weights.yml", "binary"], None),
    # 4. OSError of writes anywhere: one line naming the path, nothing half-written
    ("train-full-disk", T, lambda c: ["-c", c.cfg, "-o", "epoch=1", *SMALL,
                                      f"save_dir={full(c, 'ckpt')}"],
     ["ckpt", "no space left"], "tmpfs"),
    ("infer-full-disk", IN, lambda c: ["-c", c.cfg, "--infer_img", IMAGE, "--output_dir",
                                       full(c, "drawn")],
     ["drawn/val_00000.jpg", "no space left"], "tmpfs"),
    ("deploy-full-disk", D, lambda c: ["--model_dir", c.good, "--image_file", IMAGE,
                                       "--output_dir", full(c, "drawn")],
     ["drawn/val_00000.jpg", "no space left"], "tmpfs"),
    ("merge-full-disk", M, lambda c: [c.sens, "-o", full(c, "merged.data")],
     ["merged.data", "no space left"], "tmpfs"),
    ("deploy-read-only", D, lambda c: ["--model_dir", c.good, "--image_file", IMAGE,
                                       "--output_dir", ro(c, "drawn")],
     ["drawn", "read-only"], "tmpfs"),
    # a uniform ratio that would leave a conv fewer than --align filters
    # (ppdet.slim.prune.ratios.check_filters_left)
    ("prune-target-strips-convs", P, lambda c: [
        "-c", c.cfg, "-o", f"save_dir={c.root}/never", "-p", "*", "--target_ratio", "0.9",
        "--align", "8", "--no_finetune"], ["--target_ratio 0.9", "--align 8", "conv1_weights"],
        None),
]


def _with_base(c, base):
    path = os.path.join(c.root, "with_base.yml")
    if not os.path.exists(path):
        with open(path, "w") as f:
            yaml.safe_dump({"_BASE_": [base]}, f)
    return path


def _ids(cases):
    return [c.values[0] if hasattr(c, "values") else c[0] for c in cases]


def _params(cases):
    out = []
    for c in cases:
        if hasattr(c, "values"):
            out.append(pytest.param(*c.values[1:], marks=c.marks))
        else:
            out.append(c[1:])
    return out


@pytest.mark.parametrize("rel, argv, words, setup", _params(CASES), ids=_ids(CASES))
def test_never_damage(ctx, capsys, monkeypatch, rel, argv, words, setup):
    if setup == "tmpfs" and ctx.no_tmpfs:
        pytest.skip(ctx.no_tmpfs)
    if callable(setup):
        setup(monkeypatch)
    args = argv(ctx)          # may create a config file: before the snapshot
    before = snapshot(ctx.root)
    with pytest.raises(SystemExit) as e:
        script(rel).main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert_one_error_line(err, words)
    assert_unchanged(before, snapshot(ctx.root))


def test_every_loader_checks_the_folder(ctx):
    """Predictor (deploy, verify_export), measure_latency (latency tables, report) and
    check_model_dir itself name the broken file before Paddle sees the folder."""
    from ppdet.core.errors import UserError
    from ppdet.engine.export import Predictor, check_model_dir, verify_export
    from ppdet.engine.latency import measure_latency
    assert check_model_dir(ctx.good).endswith("model.pdmodel")
    for fn in (lambda d: Predictor(d), lambda d: measure_latency(d, [160, 160], repeats=1),
               lambda d: verify_export(None, d, [IMAGE]), lambda d: check_model_dir(d)):
        for name, file in (("cut_params", "model.pdiparams"), ("cut_program", "model.pdmodel"),
                           ("no_cfg", "infer_cfg.yml")):
            with pytest.raises(UserError, match=file):
                fn(ctx[name])
    # a loader of the program and parameters only (fast sensitivity's predictors)
    check_model_dir(ctx.no_cfg, need=("program", "params"))


def test_os_error_of_the_machine_is_one_line(capsys):
    """run_main: no space, read-only, permission: one line naming the path; a bug's
    OSError (no path, unexpected errno) keeps its traceback."""
    import errno

    from ppdet.utils.cli import run_main
    for code, word in ((errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                       (errno.EACCES, "permission denied")):
        @run_main
        def main():
            raise OSError(code, os.strerror(code), "/data/out/report.md")
        with pytest.raises(SystemExit) as e:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1, err
        assert err[0].startswith("error:") and "/data/out/report.md" in err[0] and word in err[0]

    @run_main
    def bug():
        raise OSError(errno.EBADF, "Bad file descriptor")
    with pytest.raises(OSError):
        bug()


# --- atomic_dir: kills at random instants -------------------------------------------------

WRITER = r"""
import os, sys, time
sys.path.insert(0, {root!r})
import ppdet.utils.atomic as atomic
if {fallback!r}:
    atomic._exchange = lambda a, b: False
    rename = os.rename
    def slow_rename(a, b):           # widen the window between the two renames
        rename(a, b)
        time.sleep(0.02)
    os.rename = slow_rename
print("ready", flush=True)
sys.stdin.readline()
with atomic.atomic_dir({target!r}) as tmp:
    for i in range(40):
        with open(os.path.join(tmp, f"f{{i}}"), "wb") as f:
            f.write(b"new %d " % i * 2000)
        time.sleep(0.001)
print("done", flush=True)
"""


def _tree(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
def test_atomic_dir_killed_at_random_instants(tmp_path, fallback):
    from ppdet.utils.atomic import atomic_dir, recover_dir
    target = str(tmp_path / "export")
    with atomic_dir(target) as tmp:
        for i in range(3):
            (tmp_path / os.path.basename(tmp) / f"old{i}").write_bytes(b"old %d" % i)
    old = _tree(target)
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o777 & ~_umask())
    rng = random.Random(27)
    outcomes = set()
    for _ in range(8):
        p = subprocess.Popen([sys.executable, "-c", WRITER.format(
            root=ROOT, target=target, fallback=fallback)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        p.stdin.write("go\n")
        p.stdin.flush()
        time.sleep(rng.uniform(0.0, 0.12))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stdin.close()
        if not fallback:            # one step: the target is never missing, never mixed
            assert os.path.isdir(target)
        recover_dir(target)
        got = _tree(target)
        assert not [n for n in os.listdir(tmp_path) if n.startswith(".export.")]
        if got == old:
            outcomes.add("old")
        else:
            assert sorted(got) == sorted(f"f{i}" for i in range(40)) and \
                all(v == b"new %d " % int(k[1:]) * 2000 for k, v in got.items()), sorted(got)
            outcomes.add("new")
            with atomic_dir(target) as tmp:         # back to the old one for the next kill
                for name, data in old.items():
                    (tmp_path / os.path.basename(tmp) / name).write_bytes(data)
    assert outcomes                                  # (which ones depends on the instants)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_atomic_dir_failure_keeps_the_old_folder(tmp_path):
    from ppdet.core.errors import WriteError
    from ppdet.utils.atomic import atomic_dir
    target = tmp_path / "export"
    target.mkdir()
    (target / "a").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_dir(str(target)) as tmp:
            (tmp_path / os.path.basename(tmp) / "a").write_bytes(b"new")
            raise RuntimeError("killed")
    with pytest.raises(WriteError, match="export/a: no space left"):
        with atomic_dir(str(target)) as tmp:
            import errno
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(tmp, "a"))
    with pytest.raises(AssertionError):
        with atomic_dir(str(target), verify=lambda d: (_ for _ in ()).throw(
                AssertionError("differs"))) as tmp:
            (tmp_path / os.path.basename(tmp) / "a").write_bytes(b"new")
    from ppdet.core.errors import UserError

    def refuse(d):                  # a check naming a file of the folder being built
        raise UserError(f"{d}/a is truncated")
    with pytest.raises(UserError, match=r"export/a is truncated \(the previous folder is "
                       r"unchanged\)"):
        with atomic_dir(str(target), verify=refuse) as tmp:
            (tmp_path / os.path.basename(tmp) / "a").write_bytes(b"new")
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert (target / "a").read_bytes() == b"old"


def test_a_previous_folder_moved_aside_comes_back(tmp_path):
    """A kill between the two renames of the fallback swap: target missing, the previous
    folder beside it as .NAME.old-PID: the next export (or loader) puts it back."""
    from ppdet.utils.atomic import recover_dir
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = tmp_path / f".export.old-{dead.pid}"
    old.mkdir()
    (old / "a").write_bytes(b"old")
    half = tmp_path / f".export.tmp-{dead.pid}"
    half.mkdir()
    (half / "a").write_bytes(b"ne")
    recover_dir(str(tmp_path / "export"))
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert (tmp_path / "export" / "a").read_bytes() == b"old"


KILLED_EXPORT = r"""
import sys
sys.path.insert(0, {root!r})
from ppdet.core.config import load_config
from ppdet.engine.builder import build_model
from ppdet.engine.checkpoint import load_weights
from ppdet.engine.export import export_model
cfg = load_config({cfg!r})
model = build_model(cfg)
load_weights(model, {weights!r})
print("ready", flush=True)
sys.stdin.readline()
export_model(model, cfg, {target!r}, ["a", "b", "c", "d"])
print("done", flush=True)
"""


def test_export_killed_at_random_instants(ctx, tmp_path):
    """tools' export (export_model) killed with SIGKILL at random instants: the previous
    export stays byte-identical, or the new one is there complete; never a mix."""
    from ppdet.engine.export import check_model_dir
    from ppdet.utils.atomic import recover_dir
    target = str(tmp_path / "out" / "my")
    shutil.copytree(ctx.old, target)
    old = snapshot(target)

    def start(out):
        p = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT.format(
            root=ROOT, cfg=ctx.cfg, weights=ctx.w, target=out)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        return p
    procs = [start(str(tmp_path / "ref"))] + [start(target) for _ in range(3)]
    ref = procs[0]
    assert ref.stdout.readline().strip() == "ready"
    tic = time.time()
    ref.stdin.write("go\n")
    ref.stdin.flush()
    assert ref.stdout.readline().strip() == "done"
    seconds = time.time() - tic
    ref.wait()
    new_params = snapshot(str(tmp_path / "ref"))
    rng = random.Random(0)
    # early, mid-export, and around the swap (the last instants of the export)
    for p, (lo, hi) in zip(procs[1:], [(0.05, 0.5), (0.5, 0.95), (0.9, 1.2)]):
        assert p.stdout.readline().strip() == "ready"
        p.stdin.write("go\n")
        p.stdin.flush()
        time.sleep(rng.uniform(lo, hi) * seconds)
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert os.path.isdir(target)
        got = snapshot(target)
        if got != old:                   # the new export, whole
            check_model_dir(target)
            assert {os.path.basename(k): v for k, v in got.items()} == \
                {os.path.basename(k): v for k, v in new_params.items()}
        recover_dir(target)
        assert sorted(os.listdir(tmp_path / "out")) == ["my"]
        shutil.rmtree(target)
        shutil.copytree(ctx.old, target)

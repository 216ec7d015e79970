"""The README's walk-through, and the docs pages that continue it, run as written.

Every fenced block marked ``bash`` in README.md, in order, then in each ``docs/*.md`` page
(pages in file-name order, blocks in page order), is one shell script (blocks marked ``sh``
are shown only): the pages' blocks use the walk-through's names and files. After each
file's blocks the script checks that it is back in the repository root, since ``cd``
carries over from block to block. It runs in a copy of the working tree, so nothing lands
in the checkout's ``output/``. To keep it short the test changes two things and nothing
else:

- each command of a tool that reads a config gets ``-o`` overrides appended: one epoch on 16
  training images, 16 eval images (``SHORT`` below);
- the first training of ``$CFG`` starts from the session's trained tiny YOLOv3
  (``pretrain_weights=``), so the sensitivity analysis has a baseline mAP above 0.

A failing command fails the test with the command and the end of its output.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["epoch=1", "snapshot_epoch=1", "TrainDataset.sample_num=16", "TrainReader.batch_size=8",
         "EvalDataset.sample_num=16"]
# scripts that take -c CONFIG and any number of -o KEY=VALUE groups
WITH_CONFIG = ("tools/train.py", "tools/eval.py", "tools/infer.py", "tools/export_model.py",
               "slim/prune/prune.py", "slim/prune/export_model.py", "slim/prune/report.py",
               "slim/prune/slim_prune.py", "sensitive.py")


def readme_blocks(text):
    """The bodies of the ```bash blocks, in order."""
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def commands(block):
    """Logical lines of a block: continuations joined, comments dropped."""
    out, cur = [], ""
    for line in block.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).rstrip()
        if line.endswith("\\"):
            cur += line[:-1].rstrip() + " "
            continue
        cur += line
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    return out


def shorten(cmd, pretrain):
    """``cmd`` with the test's overrides appended (see the module docstring)."""
    words = cmd.split()
    if "python" not in words[:1] or not any(w.endswith(WITH_CONFIG) for w in words):
        return cmd
    extra = list(SHORT)
    if (re.search(r"tools/train\.py -c \$CFG\b", cmd) and "-r" not in words
            and "pretrain_weights=" not in cmd):
        extra.append(f"pretrain_weights={pretrain}")
    return f"{cmd} -o {' '.join(extra)}"


def pages():
    """README.md, then the docs pages in file-name order (relative paths)."""
    docs = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return ["README.md"] + [os.path.relpath(p, ROOT) for p in docs]


def walkthrough(pretrain):
    lines = ["set -e", "_top=$PWD"]
    for page in pages():
        with open(os.path.join(ROOT, page)) as f:
            blocks = readme_blocks(f.read())
        for i, block in enumerate(blocks):
            for cmd in commands(block):
                lines.append(f"echo \"### $SECONDS s, block {i + 1} of {page}: \"{_quote(cmd)}")
                lines.append(shorten(cmd, pretrain))
        if blocks:
            lines.append(f'[ "$PWD" = "$_top" ] || {{ echo "{page} ends outside the repository'
                         f' root: $PWD" >&2; exit 1; }}')
    return "\n".join(lines) + "\n"


def _quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _copy_tree(dst):
    """Tracked and untracked-but-not-ignored files of the checkout; the shapes set linked."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, rel))
    for sub in ("voc", "coco"):
        os.symlink(os.path.join(ROOT, "dataset", "shapes", sub),
                   os.path.join(dst, "dataset", "shapes", sub))


def test_commands_are_what_the_readme_says():
    script = walkthrough("W0")
    assert "tools/train.py -c $CFG --eval -o epoch=1" in script
    assert "pretrain_weights=W0" in script and script.count("pretrain_weights=W0") == 1
    assert "#" not in "".join(line for line in script.splitlines()
                              if not line.startswith("echo"))
    assert "python analyze.py demo.data --target_flops 0.3 -c ../../$CFG\n" in script
    # the pages' blocks run after the README's, in file-name order
    at = [script.index(s) for s in ("slim/prune/report.py -c $CFG", "save_dir=output/by_hand",
                                    "slim/prune/slim_prune.py -c $V2", "tools/train.py -c $SSD")]
    assert at == sorted(at)
    run = [line for line in script.splitlines() if not line.startswith("echo")]
    assert sum("tools/train.py -c $CFG --eval" in line for line in run) == 1  # trained once


def _slug(heading):
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_resolve():
    """Relative links in the README, the docs pages and bench/*.md name files and headings
    that exist; the README links every docs page."""
    files = pages() + ["bench/RESULTS.md", "bench/HISTORY.md"]
    headings = {}
    for rel in files:
        with open(os.path.join(ROOT, rel)) as f:
            text = re.sub(r"^```.*?^```", "", f.read(), flags=re.S | re.M)
        headings[rel] = {_slug(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}
    bad = []
    for rel in files:
        with open(os.path.join(ROOT, rel)) as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(rel), path)) if path else rel
            if not os.path.exists(os.path.join(ROOT, dest)):
                bad.append(f"{rel}: {target} (no file)")
            elif anchor and anchor not in headings.get(dest, set()):
                bad.append(f"{rel}: {target} (no such heading)")
    assert not bad, "\n".join(bad)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert all(f"({page})" in readme for page in pages()[1:])


@pytest.mark.long
def test_readme_walkthrough_runs(tmp_path, trained, shapes_root):
    work = tmp_path / "repo"
    _copy_tree(str(work))
    (tmp_path / "walkthrough.sh").write_text(walkthrough(os.path.abspath(trained)))
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get("PATH", ""))
    tic = time.time()
    r = subprocess.run(["bash", str(tmp_path / "walkthrough.sh")], cwd=work, env=env,
                       capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    ran = re.findall(r"^### \d+ s, block .*$", r.stdout, flags=re.M)
    assert r.returncode == 0, f"failed at {ran[-1] if ran else '?'}:\n{out[-4000:]}"
    print(f"README walk-through: {len(ran)} commands in {time.time() - tic:.0f} s")
    starts = [int(re.match(r"### (\d+) s", line).group(1)) for line in ran]
    took = [b - a for a, b in zip(starts, starts[1:] + [int(time.time() - tic)])]
    for seconds, line in sorted(zip(took, ran), reverse=True)[:8]:
        print(f"{seconds:4d} s {line.split(': ', 1)[1][:110]}")
    for path in ("output/yolov3_mobilenet_v1_shapes/model_final.pdparams",
                 "output/yolov3_mobilenet_v1_shapes_pruned/pruned.pdparams",
                 "output/yolov3_mobilenet_v1_shapes_pruned/model_final.pdparams",
                 "output_inference/yolov3_mobilenet_v1_shapes/model.pdmodel",
                 "output_inference/yolov3_mobilenet_v1_shapes_pruned/model.pdmodel",
                 "output/val_00000.jpg", "output/deploy/val_00000.jpg",
                 "slim/sensitive/demo.png", "output/report.md"):
        assert os.path.isfile(work / path), path


def _layout_paths():
    text = open(os.path.join(ROOT, "README.md")).read()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", table, flags=re.M)]


def test_layout_table_matches_the_tree():
    """Every path the README's Layout table names exists, and every top-level folder, every
    room of ppdet/ and every room of ppdet/slim/ has its row."""
    paths = _layout_paths()
    missing = [p for p in paths if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, f"the Layout table names what the tree lacks: {missing}"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    top = {p.split("/")[0] + "/" for p in tracked if "/" in p and not p.startswith(".")}
    rooms = {"/".join(p.split("/")[:2]) + "/" for p in tracked
             if p.startswith("ppdet/") and p.count("/") >= 2}
    slim = {"/".join(p.split("/")[:3]) + ("/" if p.count("/") >= 3 else "") for p in tracked
            if p.startswith("ppdet/slim/") and not p.endswith("__init__.py")}
    want = (top - {"ppdet/"}) | (rooms - {"ppdet/slim/"}) | slim
    absent = sorted(want - set(paths))
    assert not absent, f"rows missing from README's Layout table: {absent}"

"""Run under paddle.distributed.launch: train a few steps, print this rank's param checksum."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ppdet.core.config import load_config  # noqa: E402
from ppdet.engine.builder import build_model  # noqa: E402
from ppdet.engine.distill import TeacherSpec, distillation_hooks  # noqa: E402
from ppdet.engine.trainer import Trainer, set_seed  # noqa: E402

cfg = load_config(sys.argv[1], sys.argv[2:])
set_seed(0)
model = build_model(cfg)
# DDP_TEACHER=W: distil from W (the student's config), as --distill does
teacher = os.environ.get("DDP_TEACHER")
hooks = distillation_hooks(TeacherSpec(teacher) if teacher else None, cfg, model)
trainer = Trainer(cfg, model=model, hooks=hooks,
                  save_dir=os.environ.get("DDP_SAVE", "/tmp/ddp_check"))
trainer.train()
# trainable weights only: BN running statistics are per process (no SyncBN)
total = sum(float(abs(p).sum()) for p in trainer.model.parameters() if p.trainable)
print(f"rank {trainer.rank}/{trainer.world_size} checksum {total:.6f} "
      f"steps {trainer.steps_per_epoch}")

"""Run by tests/test_transformers_ddp.py under ``torchrun --nproc_per_node=2`` (CPU, gloo).

Each rank trains the tiny BERT of tests/test_transformers.py with a GreenCallback whose GPU sensor adds
``rank + 1`` joules per read (so the sum over ranks is visible) and whose node-level CPU/RAM sensors count on the
node leader only. Rank zero writes the green log entries and its record path into ``<out>/result-rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from transformers import Trainer, TrainingArguments  # noqa: E402

from green_callbacks.core.sensors.fake import StepEnergySensor  # noqa: E402
from green_callbacks.transformers import GreenCallback  # noqa: E402
from tests.test_transformers import BATCH, N_EVAL, N_TRAIN, synthetic, tiny_bert  # noqa: E402


def main() -> int:
    out = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    sensors = [StepEnergySensor("gpu", float(rank + 1)), StepEnergySensor("cpu", 2.0, scope="node"),
               StepEnergySensor("ram", 0.5, scope="node")]
    callback = GreenCallback(carbon_intensity=100.0, sensors=sensors)
    args = TrainingArguments(str(out / "hf"), num_train_epochs=2, per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=BATCH, logging_strategy="epoch", eval_strategy="epoch",
                             save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
                             ddp_backend="gloo", dataloader_num_workers=0)
    trainer = Trainer(model=tiny_bert(), args=args, train_dataset=synthetic(N_TRAIN),
                      eval_dataset=synthetic(N_EVAL, seed=1), callbacks=[callback])
    trainer.train()
    entries = [h for h in trainer.state.log_history if "green/epoch_energy_kwh" in h]
    result = {"rank": rank, "world_size": args.world_size, "entries": entries,
              "record_path": str(callback.record_path), "status": callback.session.status,
              "total_flos": trainer.state.total_flos,
              "non_embedding_parameters": trainer.model.num_parameters(exclude_embeddings=True)}
    (out / f"result-rank{rank}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    code = main()
    # Everything the test reads is written: end without the interpreter's teardown, where a torch 2.13 gloo rank
    # can abort on a loaded machine ("terminate called without an active exception", SIGABRT; a plain DDP script
    # without green_callbacks does it too).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

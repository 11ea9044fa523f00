"""HF transformers quickstart: a tiny BERT built from a config, synthetic data, measured by GreenCallback.

    python examples/transformers_quickstart.py [--epochs 2] [--output-dir green_runs]

No download: the model is built from ``BertConfig`` and the data is random tokens. Evaluation runs every epoch and
``metric_for_best_model="eval_loss"`` defines convergence. Prints the per-epoch table and the run summary from the
run record; the same ``green/...`` numbers are in ``trainer.state.log_history`` and in every ``report_to``
integration.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=2.0, help="may be fractional, e.g. 1.5")
    parser.add_argument("--output-dir", default="green_runs")
    parser.add_argument("--carbon-intensity", type=float, default=None, help="gCO2e/kWh (default: world average)")
    args = parser.parse_args(argv)

    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from green_callbacks.core.record import read_record
    from green_callbacks.report.summary import format_epoch_table, format_run_summary
    from green_callbacks.transformers import GreenCallback

    hf_logging.set_verbosity_error()

    class RandomTokens(torch.utils.data.Dataset):
        def __init__(self, n: int, seed: int) -> None:
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randint(1, 100, (n, 16), generator=g)
            self.y = (self.x[:, 0] > 50).long()  # learnable: the label is a property of the first token

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.x[i], "attention_mask": torch.ones_like(self.x[i]), "labels": self.y[i]}

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(config)

    green = GreenCallback(output_dir=args.output_dir, carbon_intensity=args.carbon_intensity)
    training = TrainingArguments(
        f"{args.output_dir}/hf", num_train_epochs=args.epochs, per_device_train_batch_size=16,
        per_device_eval_batch_size=32, learning_rate=1e-3, logging_strategy="epoch", eval_strategy="epoch",
        save_strategy="no", metric_for_best_model="eval_loss", report_to="none", use_cpu=True, disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=training, train_dataset=RandomTokens(256, 0),
                      eval_dataset=RandomTokens(64, 1), callbacks=[green])
    trainer.train()

    record = read_record(green.record_path)
    print(format_epoch_table(record))
    print(format_run_summary(record))
    print(f"HF's own estimate (6 x parameters x tokens): {green.last_metrics['green/hf_total_flos']:.3g} FLOPs; "
          f"counted: {green.last_metrics['green/total_train_flops']:.3g} FLOPs")
    print(f"run record: {green.record_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

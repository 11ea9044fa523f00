"""Cost of counting FLOPs on every training batch, as a ratio to training without counting.

A tiny BERT (the research note's BERT-tiny: hidden 128, 2 layers, 2 heads, intermediate 512, vocabulary 1000)
trains one epoch of 200 batches whose padded length takes 20 distinct values (dynamic padding), with AdamW on
the CPU. The counted epoch calls ``TorchFlopCounter.count_train_step`` before every batch: 20 batches are
counted on a meta copy (one per length), the other 180 are answered from the cache. Epochs with and without
counting alternate, ``--repeats`` times each; the medians are compared.

    python benchmarks/flops_cost.py [--repeats 3] [--batches 200] [--batch-size 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--lengths", type=int, default=20, help="distinct padded lengths (8, 16, ... 8·n)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch
    import transformers

    from green_callbacks.core.flops import TorchFlopCounter

    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512, vocab_size=1000,
        max_position_embeddings=8 * args.lengths, num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    rng = random.Random(0)
    lengths = [8 * (1 + i % args.lengths) for i in range(args.batches)]
    rng.shuffle(lengths)
    batches = []
    for seq in lengths:
        mask = torch.ones(args.batch_size, seq, dtype=torch.long)
        for row in range(args.batch_size):
            mask[row, rng.randint(1, seq):] = 0
        batches.append({
            "input_ids": torch.randint(0, config.vocab_size, (args.batch_size, seq)),
            "attention_mask": mask,
            "labels": torch.randint(0, 2, (args.batch_size,)),
        })

    def forward(m, b):
        return m(**b).loss

    def epoch(counter: TorchFlopCounter | None) -> tuple[float, float, int, float]:
        """Wall and process CPU seconds of one epoch, the FLOPs counted, and the wall seconds of all counter calls."""
        model.train()
        total, in_counter = 0, 0.0
        start, start_cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            if counter is not None:
                call_start = time.perf_counter()
                total += counter.count_train_step(model, forward, batch).flops
                in_counter += time.perf_counter() - call_start
            optimizer.zero_grad(set_to_none=True)
            forward(model, batch).backward()
            optimizer.step()
        return time.perf_counter() - start, time.process_time() - start_cpu, total, in_counter

    epoch(None)  # warm-up: allocator, kernels, lazy imports of the training path
    TorchFlopCounter().count_train_step(model, forward, batches[0])  # warm-up: first import of the counter
    plain, plain_cpu, counted, counted_cpu, counting, calls = [], [], [], [], [], []
    for _ in range(args.repeats):
        wall, cpu, _, _ = epoch(None)
        plain.append(wall)
        plain_cpu.append(cpu)
        counter = TorchFlopCounter()
        wall, cpu, flops, in_counter = epoch(counter)
        counted.append(wall)
        counted_cpu.append(cpu)
        counting.append(counter.stats.counting_time_s)
        calls.append(in_counter)
    stats = counter.stats
    med = statistics.median

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batches {args.batches}, "
          f"batch size {args.batch_size}, lengths {min(lengths)}..{max(lengths)} ({len(set(lengths))} distinct)")
    print(f"epoch without counting: wall {med(plain):.2f} s ({runs(plain)}); cpu {med(plain_cpu):.2f} s "
          f"({runs(plain_cpu)})")
    print(f"epoch with counting:    wall {med(counted):.2f} s ({runs(counted)}); cpu {med(counted_cpu):.2f} s "
          f"({runs(counted_cpu)})")
    wall_ratio, cpu_ratio = med(counted) / med(plain) - 1, med(counted_cpu) / med(plain_cpu) - 1
    print(f"overhead ratio, wall: {wall_ratio:+.1%}; cpu: {cpu_ratio:+.1%}")
    print(f"wall time inside count_train_step: {med(calls):.2f} s per epoch = {med(calls) / med(plain):.1%} "
          f"of the epoch without counting; {stats.counts} counts ({stats.meta_counts} meta, "
          f"{stats.real_step_counts} real-step), {stats.cache_hits} cache hits")
    hits_s = med(calls) - med(counting)
    print(f"per count {med(counting) / stats.counts * 1e3:.1f} ms; per cache hit (key + look-up) "
          f"{hits_s / max(stats.cache_hits, 1) * 1e6:.0f} us")
    print(f"training FLOPs counted per epoch: {flops:.4e}")


if __name__ == "__main__":
    main()

"""Cost of counting FLOPs on every training batch, as a ratio to training without counting.

A tiny BERT (the research note's BERT-tiny: hidden 128, 2 layers, 2 heads, intermediate 512, vocabulary 1000)
trains one epoch of 200 batches whose padded length takes 20 distinct values (dynamic padding), with AdamW on
the CPU. The counted epoch calls ``TorchFlopCounter.count_train_step`` before every batch: 20 batches are
counted on a meta copy (one per length), the other 180 are answered from the cache. Epochs with and without
counting alternate, ``--repeats`` times each; the medians are compared.

    python benchmarks/flops_cost.py [--repeats 3] [--batches 200] [--batch-size 32] [--threads 1]

``--scenario gpt2`` (#20): GPT-2-style models at three sizes (``transformers.GPT2Config``, built from the config, no
download) train one dynamic-padding epoch whose padded lengths take ``--lengths`` (default 208) distinct values.
Before: the meta-copy engine counts every new shape (``TorchFlopCounter.count_train_step`` before each batch). After:
``FlopTracker`` observes the first real step of a shape, fits a verified polynomial and predicts the rest. Both
totals must agree exactly. Reported per size: counts performed, seconds on the training thread, share of the epoch.
The time an observed step costs is the same batch's step with the counter minus without it, both on warm kernels
(best of 3); a cache hit or prediction costs the time of ``begin`` + ``end``.

``--large``: a ~1B-parameter GPT-2 built on the meta device; one meta count of a training step (batch 1, length
1024): its time and the process's peak RSS before and after (no real memory for weights or activations).

    python benchmarks/flops_cost.py --scenario gpt2 [--lengths 208] [--batch-size 2] [--epochs 2] [--sizes 128]
    python benchmarks/flops_cost.py --large
    python benchmarks/flops_cost.py --hit        # FlopTracker.begin + end on a cached signature, GPT-2 small
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--lengths", type=int, default=20, help="distinct padded lengths (8, 16, ... 8·n)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--scenario", choices=("bert", "gpt2"), default="bert")
    parser.add_argument("--large", action="store_true", help="peak RSS and time of one meta count of a ~1B model")
    parser.add_argument("--hit", action="store_true", help="cost of FlopTracker.begin + end on a cached signature")
    parser.add_argument("--epochs", type=int, default=1, help="gpt2: passes over the lengths (checks from the 2nd)")
    parser.add_argument("--sizes", default="128,256,512", help="gpt2: the n_embd of the sizes to run (128: 0.6M)")
    args = parser.parse_args()
    if args.large:
        return large()
    if args.hit:
        return hit()
    if args.scenario == "gpt2":
        return gpt2(args)

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


GPT2_SIZES = ((128, 2, 2), (256, 4, 4), (512, 6, 8))  # (n_embd, n_layer, n_head)


def gpt2(args: argparse.Namespace) -> None:
    import torch
    import transformers

    from green_callbacks.core.flops import FlopTracker, TorchFlopCounter

    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    n_lengths = args.lengths if args.lengths != 20 else 208
    batch_size = args.batch_size if args.batch_size != 32 else 2
    rng = random.Random(0)
    lengths = [8 + i for i in range(n_lengths)]  # every length once, shuffled: the worst case for a shape cache
    rng.shuffle(lengths)
    lengths = lengths * args.epochs  # later epochs see the lengths again: counted signatures get their checks
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"batch size {batch_size}, {len(lengths)} steps, lengths {min(lengths)}..{max(lengths)} "
          f"({len(set(lengths))} distinct)")
    wanted = {int(n) for n in args.sizes.split(",")}
    for n_embd, n_layer, n_head in (size for size in GPT2_SIZES if size[0] in wanted):
        torch.manual_seed(0)
        config = transformers.GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=n_head, vocab_size=1000,
                                         n_positions=max(lengths), bos_token_id=0, eos_token_id=0)
        config._attn_implementation = "eager"
        model = transformers.GPT2LMHeadModel(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        params = sum(p.numel() for p in model.parameters())
        before, tracker = TorchFlopCounter(), FlopTracker()

        def step(batch: dict, model: Any = model, optimizer: Any = optimizer, pause: Any = None) -> None:
            optimizer.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            if pause is not None:  # the adapters stop a watching counter before the optimizer (docs/flops.md)
                pause()
            optimizer.step()

        epoch_s = before_s = after_s = 0.0
        before_total = 0
        observed_batches = []
        for seq in lengths:
            ids = torch.randint(0, 1000, (batch_size, seq))
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
            start = time.perf_counter()
            before_total += before.count_train_step(model, lambda m, b: m(**b).loss, batch).flops
            before_s += time.perf_counter() - start
            start = time.perf_counter()
            tracker.begin("train", model, ((), batch))
            began = time.perf_counter()
            watched = tracker.watching  # a first count, or a later check of a counted signature (#25)
            step(batch, pause=tracker.pause)
            stepped = time.perf_counter()
            tracker.end()
            ended = time.perf_counter()
            epoch_s += stepped - began
            if watched:
                observed_batches.append(batch)  # its counter overhead is measured below, on warm kernels
            else:
                after_s += (began - start) + (ended - stepped)  # the cache hit or prediction alone
        # What watching a step costs: the same batch with and without the counter, both after a warm-up run (the
        # first step at a new shape is slower on CPU with or without counting), best of 3 each.
        for batch in observed_batches:
            step(batch)
            plain = min(_timed(step, batch) for _ in range(3))
            counted = min(_timed(_counted(step, model), batch) for _ in range(3))
            after_s += max(counted - plain, 0.0)
        epoch = tracker.take_epoch()
        info = tracker.info()
        assert epoch.train_flops == before_total, (epoch.train_flops, before_total)
        print(f"GPT-2 {params / 1e6:.1f}M (n_embd {n_embd}, n_layer {n_layer}): epoch {epoch_s:.1f} s; "
              f"before: {before.stats.counts} meta counts, {before_s:.2f} s = {before_s / epoch_s:.1%} of the epoch; "
              f"after: {info['counts']['observed']} observed counts, {info['counts']['checks']} checks, "
              f"{info['counts']['interpolated']} predicted, "
              f"{after_s:.3f} s = {after_s / epoch_s:.2%}; FLOPs equal ({before_total:.4e}), method {epoch.method}")


def _timed(fn: Any, batch: Any) -> float:
    start = time.perf_counter()
    fn(batch)
    return time.perf_counter() - start


def _counted(step: Any, model: Any = None) -> Any:
    """``step`` inside the engine's counter, entered and left as FlopTracker does for an observed step: given the
    model (the hooks for fused fast-path layers only if it has such a layer), stopped before the optimizer step."""
    from green_callbacks.core.flops import TorchFlopCounter

    engine = TorchFlopCounter()

    def run(batch: Any) -> None:
        handle = engine.start_observing(model)
        step(batch, pause=lambda: engine.stop_observing(handle, "train"))

    return run


def hit(calls: int = 20000) -> None:
    import torch
    import transformers

    from green_callbacks.core.flops import FlopTracker

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=1000, bos_token_id=0, eos_token_id=0)  # GPT-2 small's layers
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.randint(0, 1000, (2, 16))
    batch = ((), {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    tracker = FlopTracker()
    tracker.begin("train", model, batch)
    model(**batch[1]).loss.backward()
    tracker.end()
    spent, hits, checks = 0.0, 0, 0
    clock = time.perf_counter
    for _ in range(calls):
        start = clock()
        tracker.begin("train", model, batch)
        began = clock()
        if tracker.watching:  # a later check of the signature (#25): the real step runs under the counter, as in
            model(**batch[1]).loss.backward()  # training; its cost is the gpt2 scenario's, not a cache hit's
            checks += 1
            tracker.end()
            continue
        ending = clock()
        tracker.end()
        spent += (began - start) + (clock() - ending)
        hits += 1
    per_call = spent / hits
    print(f"GPT-2 small layers ({sum(1 for _ in model.parameters())} parameter tensors, "
          f"{sum(1 for _ in model.modules())} modules), HF batch of 3 tensors: begin + end on a cached signature "
          f"{per_call * 1e6:.1f} us (mean of {hits} hits; {checks} later checks ran a real step, not timed)")


def large() -> None:
    import resource

    import torch
    import transformers

    from green_callbacks.core.flops import TorchFlopCounter

    warnings.simplefilter("ignore")

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    config = transformers.GPT2Config(n_embd=2048, n_layer=18, n_head=16, n_positions=1024)
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(config)
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, config.vocab_size, (1, 1024))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    counter = TorchFlopCounter(fallback_to_real_step=False)
    rss0 = peak_mib()
    for seq in (1024, 1000, 512):
        ids = torch.randint(0, config.vocab_size, (1, seq))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        start = time.perf_counter()
        flops = counter.count_train_step(model, lambda m, b: m(**b).loss, batch).flops
        print(f"GPT-2 {params / 1e9:.2f}B params (fp32 weights would be {params * 4 / 2**30:.1f} GiB), length {seq}: "
              f"meta count {time.perf_counter() - start:.2f} s, {flops:.4e} FLOPs; peak RSS {rss0:.0f} MiB before, "
              f"{peak_mib():.0f} MiB after")


if __name__ == "__main__":
    main()

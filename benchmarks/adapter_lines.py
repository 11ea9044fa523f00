"""How each adapter's code lines divide: mapping, reading framework state, logic a fifth framework would rewrite.

    python benchmarks/adapter_lines.py            # the working tree
    python benchmarks/adapter_lines.py 80aa6e6    # an earlier commit (its classification must be in BEFORE)

Code lines: blank, comment and docstring lines left out (tokenize + ast). Each line belongs to the innermost function
around it (module-level lines to ``<module>``; a class statement to ``Class (class line)``). Each function is then
classified by hand, below, as a whole (``"M"``, ``"F"``, ``"L"``) or split line by line into ``(M, F, L)``:

- **M, mapping**: a hook or API method that calls the engine and passes framework values on; module plumbing
  (imports, constants, class statements); per-instance state; the registration of a core mechanism
  (``InstancePatches.around``, ``hook_forward``).
- **F, framework state**: code that reads or writes the framework's own objects: finding the trainer or the callback
  list, hyperparameters, monitors, the framework's call signatures, its loggers and printers, its checkpoint format,
  its data adapters, its event order.
- **L, logic a fifth framework would write again**: code that does not depend on the framework: hand-written method
  wrappers and their undoing, device resolution, saved-state files, batch signatures and FLOP caches, iterator
  peeking, torch forward-hook plumbing, console formatting, compiled-model detection, a FLOP switch-off.

A function missing from the table is an error (so a new one gets classified); hooks named ``on_*`` and
``__enter__``-style API methods default to M.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ("lightning", "keras", "transformers", "loop")

AFTER: dict[str, dict[str, str | tuple[int, int, int]]] = {
    "lightning": {
        "<module>": "M", "_import_lightning": "F", "GreenCallback._init_adapter": "F",
        "GreenCallback.setup": (5, 3, 0),  # begin_fit, FlopTracker / Lightning's sync_dist warning filter
        "GreenCallback.on_fit_start": (11, 6, 0),  # nan-tolerant loggers, start / Lightning's fields
        "GreenCallback._flops_begin": (4, 16, 0),  # FLOPs use(None), unavailable() / compiled replay, no trainer
        "GreenCallback._phase_begin": "M", "GreenCallback._phase_end": "M",
        "_log": "F", "_log_epoch": "F", "_log_phase": (0, 5, 3),  # loggers / printing the figures as a table
        "_phase_model": "F", "_stage": "F", "_stop_reason": "F", "_framework_monitor": "F", "_index_args": "F",
    },
    "keras": {
        "<module>": "M", "_import_keras": "F", "_find_fit_locals": "F", "_reads_logs": "F", "_backup_dir": "F",
        "_backup_epochs": "F", "_devices": "F", "_nothing": "M", "_next_batch": "F", "_hyperparameters": "F",
        "_batches": "F", "_tf_batches": "F", "_count_step": "F", "_new_tracker": "F", "_count_tf_step": "F",
        "GreenCallback._init_adapter": "M", "GreenCallback._train_begin": (21, 14, 0),
        "GreenCallback._compact": "L",  # a closure that shows the printer a view of the logs
        "GreenCallback._phase_begin": (12, 5, 0), "GreenCallback._compact_evaluate_line": (0, 5, 7),  # closure
        "GreenCallback._phase_end": "M", "GreenCallback._wrap_phase": "M", "GreenCallback._phase_step_begin": (2, 4, 0),
        "GreenCallback._phase_step_end": "M", "GreenCallback._phase_step_failed": (5, 2, 0),
        "GreenCallback._put_before_loggers": "F", "GreenCallback._warn_order": "F", "GreenCallback._wrap": "M",
        "GreenCallback._step_begin": (4, 9, 0), "GreenCallback._step_end": "M", "GreenCallback._step_failed": (4, 1, 0),
        "GreenCallback._note_jax": "M", "GreenCallback._unwrap": "M", "GreenCallback._add_noted_flops": "M",
    },
    "transformers": {
        "GreenCallback._wrap_model_card": "M", "GreenCallback._card_written": "M",
        "<module>": "M", "_find_trainer": "F", "_monitor_of": "F", "_devices": "F", "_compute_dtype": "F",
        "_hyperparameters": "F", "_step_loss": "F", "_generated_tokens": "F",
        "GreenCallback._init_adapter": "M", "GreenCallback.last_metrics": "M", "GreenCallback.trainer": "M",
        "GreenCallback.attach": "M", "GreenCallback._wrap_train": "M", "GreenCallback._train_failed": "M",
        "GreenCallback._train_returned": "M", "GreenCallback._ends_with_train": "F",  # HF ends a trial after train()
        "GreenCallback._bind": "F", "GreenCallback.state": "M", "GreenCallback._stored_state": "F",
        "GreenCallback._adopt_original": "F", "GreenCallback._train_begin": (15, 9, 0),
        "GreenCallback._compact_printers": (0, 7, 7), "GreenCallback._close_epoch": "M",  # printers / closure
        "GreenCallback._trainer_total_flos": "F", "GreenCallback._log": "F", "GreenCallback._wrap_phases": "M",
        "GreenCallback._phase_call": "M", "GreenCallback._phase_return": "M", "GreenCallback._phase_raised": "M",
        "GreenCallback._phase_open": (10, 8, 0), "GreenCallback._generated": (2, 3, 0),
        "GreenCallback._phase_close": "M", "GreenCallback._log_phase": "F",
        "GreenCallback._install_phase_hook": "M", "GreenCallback._phase_forward": (2, 1, 0),
        "GreenCallback._remove_phase_hook": "M", "GreenCallback._install_hook": "M", "GreenCallback._forward": "M",
        "GreenCallback._forwarded": "M", "GreenCallback._remove_hook": "M",
    },
    "loop": {
        "<module>": "M", "LogHook.__init__": "F", "LogHook.__call__": "F", "_parameters": "F", "_name": "F",
        "Epoch.__init__": "M", "Tracker.__init__": (12, 20, 0), "Tracker.start": (22, 3, 0),
        "_compiled": "L", "default_forward": "F", "_Step.__init__": "M", "_Step.__enter__": "M", "_Step.__exit__": "M",
    },
}

BEFORE = {  # 80aa6e6, the tree before the adapters only mapped
    "lightning": {**AFTER["lightning"], "GreenCallback.on_fit_start": (11, 6, 2),  # device type and ordinals inline
                  "GreenCallback._flops_begin": (0, 16, 4),  # its own switch-off of FLOPs under manual optimization
                  "GreenCallback._phase_begin": (9, 0, 2)},
    "keras": {
        **{k: v for k, v in AFTER["keras"].items() if not k.startswith(("GreenCallback._phase_step",
                                                                          "GreenCallback._step_"))},
        "<module>": (18, 0, 7),  # the FLOP method table, the state file's name
        "_Steps (class line)": "L", "_Steps.__init__": "L", "_Steps.add": "L", "_Steps.reset": "L",
        "_signature": "L", "_describe": "L", "_PeekingIterator (class line)": "L", "_PeekingIterator.__init__": "L",
        "_PeekingIterator.__iter__": "L", "_PeekingIterator.__next__": "L",
        "_find_fit_locals": (0, 3, 8),  # its callback list / the stack walk
        "_devices": (0, 10, 22),  # backend dispatch and model weights / torch, JAX and TF device resolution
        "_restored_state": (0, 4, 15), "GreenCallback._resume": "L", "GreenCallback._save_state": "L",
        "GreenCallback._train_begin": (17, 12, 0), "GreenCallback._phase_begin": (13, 5, 0),
        "GreenCallback._wrap": (6, 0, 19), "GreenCallback._wrap_phase": (5, 3, 22),
        "GreenCallback._note_batches": (3, 8, 0), "GreenCallback._unwrap": (1, 0, 5),
        "GreenCallback._add_noted_flops": (4, 0, 5), "GreenCallback._backend_step_flops": "L",
    },
    "transformers": {
        **AFTER["transformers"],
        "<module>": (25, 0, 1),  # the JSON types of saved arguments
        "_device_indices": "L", "_device_uuids": "L", "_not_traced": "L",
        "_find_trainer": (0, 2, 8),  # a Trainer / the stack walk
        "_phase_wrapper": (6, 0, 15), "GreenCallback._wrap_train": (3, 0, 22), "GreenCallback._wrap_phases": (2, 0, 10),
        "GreenCallback._count_generated_tokens": (2, 3, 14), "GreenCallback._install_hook": (4, 0, 17),
        "GreenCallback._install_phase_hook": (3, 0, 8), "GreenCallback._remove_phase_hook": (4, 0, 3),
        "GreenCallback.state": (2, 0, 2), "GreenCallback._train_begin": (16, 10, 2),
        "GreenCallback._phase_open": (10, 9, 4),
    },
    "loop": {**AFTER["loop"], "_device_indices": "L"},
}


def code_lines(src: str) -> tuple[ast.Module, set[int]]:
    tree = ast.parse(src)
    docs: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            docs.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type not in skip:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
    return tree, lines


def per_function(src: str) -> dict[str, int]:
    tree, lines = code_lines(src)
    spans: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                start = min([d.lineno for d in child.decorator_list] + [child.lineno])
                if isinstance(child, ast.ClassDef):
                    spans.append((start, child.body[0].lineno - 1, f"{prefix}{child.name} (class line)"))
                    visit(child, f"{prefix}{child.name}.")
                else:
                    spans.append((start, child.end_lineno or child.lineno, prefix + child.name))

    visit(tree, "")
    counts: dict[str, int] = {}
    for line in lines:
        inside = [(s, name) for s, e, name in spans if s <= line <= e]
        owner = max(inside)[1] if inside else "<module>"
        counts[owner] = counts.get(owner, 0) + 1
    return counts


def split(name: str, lines: int, table: dict[str, str | tuple[int, int, int]]) -> tuple[int, int, int]:
    found = table.get(name)
    if found is None:
        method = name.rsplit(".", 1)[-1]
        hooks = ("setup", "teardown", "state_dict", "load_state_dict")
        if method.startswith(("on_", "__")) or name.endswith("(class line)") or name.startswith("Tracker.") \
                or method in hooks:
            found = "M"
        else:
            raise SystemExit(f"{name}: not classified")
    if isinstance(found, str):
        return tuple(lines if found == c else 0 for c in "MFL")  # type: ignore[return-value]
    if sum(found) != lines:
        raise SystemExit(f"{name}: {found} does not sum to its {lines} code lines")
    return found


def source(adapter: str, rev: str | None) -> str:
    path = f"green_callbacks/{adapter}.py"
    if rev is None:
        return (ROOT / path).read_text(encoding="utf-8")
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def main(argv: list[str]) -> None:
    rev = argv[0] if argv else None
    tables = BEFORE if rev is not None else AFTER
    print("| adapter | code lines | mapping | framework state | would be rewritten |")
    print("| --- | --- | --- | --- | --- |")
    for adapter in ADAPTERS:
        total = [0, 0, 0]
        for name, lines in per_function(source(adapter, rev)).items():
            for i, n in enumerate(split(name, lines, tables[adapter])):
                total[i] += n
        all_lines = sum(total)
        m, f, rewritten = (f"{n} ({100 * n / all_lines:.0f} %)" for n in total)
        print(f"| {adapter}.py | {all_lines} | {m} | {f} | {rewritten} |")


if __name__ == "__main__":
    main(sys.argv[1:])

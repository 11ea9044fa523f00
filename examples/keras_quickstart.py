"""Keras 3 quickstart: a tiny Dense model on synthetic data, measured by GreenCallback.

    KERAS_BACKEND=torch python examples/keras_quickstart.py [--epochs 3] [--output-dir green_runs]

Prints the per-epoch table and the run summary from the run record.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # must happen before keras is first imported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output-dir", default="green_runs")
    parser.add_argument("--carbon-intensity", type=float, default=None, help="gCO2e/kWh (default: world average)")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from green_callbacks.core.record import read_record
    from green_callbacks.keras import GreenCallback
    from green_callbacks.report.summary import format_epoch_table, format_run_summary

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((1000, 32), dtype="float32")
    y = (x.sum(axis=1, keepdims=True) > 16).astype("float32")
    model = keras.Sequential([
        keras.Input((32,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])

    green = GreenCallback(output_dir=args.output_dir, carbon_intensity=args.carbon_intensity, monitor="val_loss")
    model.fit(x, y, validation_split=0.2, epochs=args.epochs, batch_size=64, verbose=2, callbacks=[green])

    record = read_record(green.record_path)
    print(format_epoch_table(record))
    print(format_run_summary(record))
    print(f"run record: {green.record_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

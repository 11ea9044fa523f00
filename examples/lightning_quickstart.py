"""GreenCallback in a real PyTorch Lightning run, on synthetic data, on the CPU.

    python examples/lightning_quickstart.py [--epochs 5] [--country FR] [--root-dir DIR]

The code is in ``green_callbacks/demo.py`` (so that ``green-callbacks demo`` runs the same thing from an installed
package): a LightningModule, two DataLoaders of synthetic data, and ``Trainer(callbacks=[GreenCallback(...)])``.
"""

from green_callbacks.demo import main

if __name__ == "__main__":
    raise SystemExit(main())

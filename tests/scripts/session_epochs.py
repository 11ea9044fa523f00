"""A measured 'training' driven directly through the Session: epochs of a fixed length, until killed.

Usage: python session_epochs.py OUTPUT_DIR EPOCH_SECONDS N_EPOCHS
Prints "epoch N done" after each completed epoch so the test knows when to send its signal.
"""

import sys
import time

from green_callbacks.core.config import GreenConfig
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import Session

out_dir, epoch_s, n_epochs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
session = Session(GreenConfig(output_dir=out_dir, carbon_intensity=100.0), framework="script",
                  sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
session.start()
print(session.record_path, flush=True)
for epoch in range(n_epochs):
    session.epoch_start(epoch)
    time.sleep(epoch_s)
    session.epoch_end({})
    print(f"epoch {epoch} done", flush=True)
session.finish("completed")

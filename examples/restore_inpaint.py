"""Zero-shot restoration (paper 001, Sec. 4.3): inpaint test digits with the EC-VAE trained by
examples/ecvae_calibration.py (run that first), with and without the energy term.

    python examples/restore_inpaint.py              # under a minute on one CPU core
"""
import subprocess
import sys
from pathlib import Path

from energyvae import load_run
from energyvae.viz import save_image_grid

run = Path("runs/examples/ecvae")
cfg, data, model = load_run(run)
inputs = Path("runs/examples/inpaint_inputs")
for i in range(4):
    save_image_grid(data.preprocess.to_unit(data.preprocess(data.test.x[i:i + 1])), inputs / f"{i}.png", pad=0, scale=1)
for method in ("ebm", "no-ebm"):
    subprocess.run([sys.executable, "-m", "energyvae", "restore", str(run), "--task", "inpaint",
                    "--input", str(inputs), "--out", f"runs/examples/inpaint_{method}", "--method", method,
                    "--steps", "50"], check=True)

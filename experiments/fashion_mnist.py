"""Sparsity on Fashion-MNIST: SPEC §5, the paper's Figures 5 and 6.

  python -m experiments.fashion_mnist --prior=sparse --gamma=0.8 --alpha=100   # spike-and-slab + MMD
  python -m experiments.fashion_mnist --prior=sparse --gamma=0.8 --alpha=0     # no divergence
  python -m experiments.fashion_mnist --prior=isotropic --alpha=0              # γ = 0 baseline
  python -m experiments.fashion_mnist --prior=sparse --sweep.alpha=0,10,100,1000 --sweep.gamma=0,0.8

Data: Debian's dataset-fashion-mnist files by default, --data_path=DIR for other IDX files,
--data_source=tfds for TFDS `fashion_mnist`.
"""

from experiments import main

if __name__ == "__main__":
  main.run("fashion_mnist")

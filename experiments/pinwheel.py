"""Clustering on pinwheel data with a 4-component mixture prior: SPEC §5, the paper's Figure 4.

  python -m experiments.pinwheel --prior=mixture --beta=0 --alpha=1   # α-β objective, inclusive KL (default)
  python -m experiments.pinwheel --prior=mixture --beta=1 --alpha=0   # β-VAE objective
  python -m experiments.pinwheel --prior=mixture --sweep.beta=0,1,2,4 --alpha=0   # clusters collapse
  python -m experiments.pinwheel --prior=mixture --sweep.alpha=0,1,2,4 --beta=0   # four clusters kept
"""

from experiments import main

if __name__ == "__main__":
  main.run("pinwheel")

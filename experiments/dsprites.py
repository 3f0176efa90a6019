"""Independence (disentanglement) on dSprites: SPEC §5, the paper's Figure 3 and Table 1.

  python -m experiments.dsprites --prior=isotropic                      # N(0, I), β = 1
  python -m experiments.dsprites --prior=anisotropic                    # fixed variances from PCA
  python -m experiments.dsprites --prior=anisotropic --learn_prior      # learned variances
  python -m experiments.dsprites --prior=student_t --df=9               # Student-t, ν = 9
  python -m experiments.dsprites --prior=anisotropic --sweep.beta=1,2,4,8 --sweep.seeds=3   # the β sweep

Data: the real dsprites .npz with --data_source=npz --data_path=FILE, TFDS with --data_source=tfds
--data_dir=DIR, otherwise rendered offline and cached. Re-running a command resumes its --workdir.
"""

from experiments import main

if __name__ == "__main__":
  main.run("dsprites")

"""experiments.reproduce: rows, budgets and the refusal of unknown rows (the runs themselves are the claims')."""

import pytest

from experiments import reproduce
from experiments.runner.errors import RunError


def test_unknown_row_is_refused_with_the_claim_rows(tmp_path):
  with pytest.raises(RunError, match=r"no row \['bogus'\].*'isotropic', 'anisotropic'"):
    reproduce.run_claim("independence", "cpu", str(tmp_path / "runs"), str(tmp_path / "out"), rows=("bogus",))
  assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("budget, source, steps", [("cpu", "coarse", 1000), ("paper", "auto", 0)])
def test_independence_budgets(budget, source, steps):
  claim = reproduce.CLAIMS["independence"]
  for row in claim.rows:
    c, members = reproduce.row_config(claim, row, budget)
    assert (c.data.source, c.optim.num_steps, c.objective.beta) == (source, steps, 1.0)
    assert list(members) == ["seed=0", "seed=1", "seed=2"]
    assert [m.seed for m in members.values()] == [0, 1, 2]
  learned = reproduce.row_config(claim, claim.rows[2], budget)[0]
  assert learned.prior.name == "anisotropic" and learned.prior.learnable

"""Entry points for the paper's experiments."""

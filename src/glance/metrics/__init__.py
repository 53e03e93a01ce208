"""Faithfulness and quality metrics (plain functions); import the submodules directly."""

"""Test datasets: the package's sample-data writer (kept in the package so the demo can use it too)."""

from rlds_loader.sample_data import write_sample_dataset as write_robot_dataset

__all__ = ["write_robot_dataset"]

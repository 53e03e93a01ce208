"""Datasets: the embedded Morpho-MNIST digits, causal shapes and any image folder + CSV."""

from glance.data.base import ArrayDataset, ImageDataset

__all__ = ["ArrayDataset", "ImageDataset"]

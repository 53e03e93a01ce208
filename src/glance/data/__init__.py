"""Datasets: the embedded Morpho-MNIST digits, causal shapes, pendulum, any image folder + CSV."""

from glance.data.base import ArrayDataset, ImageDataset
from glance.data.folder import ImageFolderDataset
from glance.data.idx import read_idx, write_idx
from glance.data.loading import list_splits, load_dataset, test_split
from glance.data.mnist import load_embedded_digits, load_morphomnist

__all__ = [
    "ArrayDataset",
    "ImageDataset",
    "ImageFolderDataset",
    "list_splits",
    "load_dataset",
    "load_embedded_digits",
    "load_morphomnist",
    "read_idx",
    "test_split",
    "write_idx",
]

"""Loaders for the data sets and text corpora provided by :mod:`reprokit.fetch`."""

from reprokit.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from reprokit.datasets.text_corpora import (
    SHAKESPEARE_NON_PLAYS,
    austen_novels,
    brown_documents,
    corpus_names,
    gcide_documents,
    load_corpus,
    shakespeare_plays,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "SHAKESPEARE_NON_PLAYS",
    "austen_novels",
    "brown_documents",
    "corpus_names",
    "gcide_documents",
    "load_corpus",
    "load_fashion_mnist",
    "read_idx",
    "shakespeare_plays",
]

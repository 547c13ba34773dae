"""Data modules: `TestData` (a small line-per-example file) and `TextFiles` (a streamed corpus) for pretraining,
`ClassificationDataModule` (labelled text) for finetuning."""

from litgpt.data.base import DataModule
from litgpt.data.classification import ClassificationDataModule
from litgpt.data.mlm import MLMCollator, MLMMasker, mask_tokens
from litgpt.data.test_data import TestData, TestMLMDataset
from litgpt.data.text_files import TextFiles

__all__ = ["ClassificationDataModule", "DataModule", "MLMCollator", "MLMMasker", "mask_tokens", "TestData",
           "TestMLMDataset", "TextFiles"]

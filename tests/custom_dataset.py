"""The README's custom dataset, as a user would write it."""

import torch

from litgpt.data.test_data import TestMLMDataset


class CustomMLMDataset(TestMLMDataset):
    def _load_examples(self):
        examples = []
        with open(self.data_dir / "your_data.txt", "r") as f:
            for line in f:
                tokens = self.tokenizer.encode(line.strip(), max_length=self.block_size)
                if len(tokens) < 2:
                    continue
                examples.append(torch.tensor(tokens, dtype=torch.long))
        return examples

"""`--data sequence_log.LoggedTextFiles`: TextFiles that also writes which training sequences each rank reads, for
the multi-node tests (`PYTHONPATH` holds tests/). One JSON line per micro-batch: its `[epoch, index]` pairs, in
`log_dir/rank{R}.jsonl`."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from litgpt.data.text_files import TextFiles


@dataclass
class LoggedTextFiles(TextFiles):
    log_dir: Optional[Path] = None

    def _make_train_loader(self):
        loader = super()._make_train_loader()
        collate, path = loader.collate_fn, Path(self.log_dir) / f"rank{self.rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)

        def logged(examples: List[Dict[str, Any]]) -> Dict[str, Any]:
            with open(path, "a") as fp:
                fp.write(json.dumps([[int(e["epoch"]), int(e["index"])] for e in examples]) + "\n")
            return collate(examples)

        loader.collate_fn = logged
        return loader

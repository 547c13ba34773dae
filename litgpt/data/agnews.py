"""AG News (Zhang et al., 2015): 120,000 train and 7,600 test news headlines with descriptions, in four classes.

`--use_agnews` reads it from `--data_dir` when the files are there (the original header-less `train.csv`/`test.csv`
with class index 1-4, or JSON/JSONL with ids 0-3 or the class names), and otherwise fetches the Hub's parquet copy
once into huggingface_hub's cache (with its progress bar). Either way the data must look like AG News: all four
classes present in the training split.
"""

from pathlib import Path
from typing import Any, Dict, List, Tuple

from litgpt.utils import UsageError, first_line

AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
HUB_REPO = "fancyzhx/ag_news"
HUB_FILES = {"train": "data/train-00000-of-00001.parquet", "test": "data/test-00000-of-00001.parquet"}


def fetch_agnews() -> Dict[str, Path]:
    """The local paths of the train and test parquet files, downloaded into the HuggingFace cache when missing.
    Offline (or with HF_HUB_OFFLINE set and nothing cached) it is one line that says how to place the files."""
    from huggingface_hub import hf_hub_download

    paths = {}
    try:
        for split, filename in HUB_FILES.items():
            paths[split] = Path(hf_hub_download(HUB_REPO, filename, repo_type="dataset"))
    except Exception as ex:  # offline, no cache, HTTP errors: huggingface_hub raises many kinds
        raise UsageError(
            f"--use_agnews: no AG News files in --data_dir and the HuggingFace Hub could not be reached "
            f"({ex.__class__.__name__}: {first_line(ex, 120)}); place the original train.csv and test.csv (class "
            f"index 1-4, title, description; no header) in --data_dir, or fetch {HUB_REPO} while online"
        ) from None
    return paths


def read_parquet_split(path: Path) -> Tuple[List[str], List[Any]]:
    """Texts and label ids (0-3) of one of the Hub's parquet files."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["text", "label"])
    except Exception as ex:  # pyarrow's errors: a truncated download, another dataset's columns
        reason = first_line(ex, 120)
        raise UsageError(f"{path}: not an AG News parquet file with 'text' and 'label' ({reason})") from None
    return table.column("text").to_pylist(), table.column("label").to_pylist()


def check_agnews_labels(labels: List[int], where: str) -> None:
    """AG News has four classes, and a sample of it has all of them: anything else is other data."""
    found = sorted(set(labels))
    if found != list(range(len(AGNEWS_LABELS))):
        raise UsageError(f"--use_agnews: {where} has labels {found[:8]}, not the four AG News classes (ids 1-4 in "
                         f"its CSV, 0-3 in JSON, or the names {', '.join(AGNEWS_LABELS)}); drop --use_agnews for "
                         "other data")

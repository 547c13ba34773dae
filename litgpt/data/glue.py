"""The GLUE benchmark's tasks as GLUE ships them: one folder per task (`CoLA/`, `SST-2/`, ... as its download script
lays them out) of tab-separated files read without quoting. `litgpt finetune --glue TASK` trains on `train.tsv` and
scores the dev set(s); GLUE's test labels are not public.

Everything that differs between the tasks lives in `GLUE_TASKS`: which columns hold the text(s) and the label, the
label names in id order (as HuggingFace's `glue` datasets number them), the dev files and the official metrics,
the first of which picks the best epoch.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from litgpt.data.labelled import Columns, Split, collect_split, read_table
from litgpt.data.readers import read_text
from litgpt.utils import UsageError


@dataclass(frozen=True)
class GlueTask:
    folder: str
    text_columns: Tuple[str, ...]
    label_column: str
    labels: Optional[List[str]]  # None: a regression score
    metrics: Tuple[str, ...]
    dev_files: Tuple[str, ...] = ("dev.tsv",)
    header: Optional[List[str]] = None  # the column names of a file without a header row

    @property
    def problem_type(self) -> str:
        return "regression" if self.labels is None else "single_label"

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


GLUE_TASKS: Dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", ("sentence",), "label", ["unacceptable", "acceptable"], ("mcc",),
                     header=["source", "label", "original_label", "sentence"]),
    "sst2": GlueTask("SST-2", ("sentence",), "label", ["negative", "positive"], ("accuracy",)),
    "mrpc": GlueTask("MRPC", ("#1 String", "#2 String"), "Quality", ["not_equivalent", "equivalent"],
                     ("f1", "accuracy")),
    "stsb": GlueTask("STS-B", ("sentence1", "sentence2"), "score", None, ("pearson", "spearman")),
    "qqp": GlueTask("QQP", ("question1", "question2"), "is_duplicate", ["not_duplicate", "duplicate"],
                    ("accuracy", "f1")),
    "mnli": GlueTask("MNLI", ("sentence1", "sentence2"), "gold_label", ["entailment", "neutral", "contradiction"],
                     ("accuracy",), dev_files=("dev_matched.tsv", "dev_mismatched.tsv")),
    "qnli": GlueTask("QNLI", ("question", "sentence"), "label", ["entailment", "not_entailment"], ("accuracy",)),
    "rte": GlueTask("RTE", ("sentence1", "sentence2"), "label", ["entailment", "not_entailment"], ("accuracy",)),
    "wnli": GlueTask("WNLI", ("sentence1", "sentence2"), "label", ["not_entailment", "entailment"], ("accuracy",)),
}


def glue_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise UsageError(f"--glue {name}: not a GLUE task; expected one of {', '.join(GLUE_TASKS)} or all")
    return GLUE_TASKS[key]


def task_folder(name: str, data_dir: Path) -> Path:
    """A task's folder: `data_dir` itself when it holds `train.tsv`, else `data_dir/<GLUE's folder name>`."""
    task = glue_task(name)
    for folder in (Path(data_dir), Path(data_dir) / task.folder):
        if (folder / "train.tsv").is_file():
            return folder
    raise UsageError(f"--glue {name}: no train.tsv in {data_dir} or {Path(data_dir) / task.folder}; expected GLUE's "
                     f"layout ({task.folder}/train.tsv, {task.folder}/{task.dev_files[0]})")


def tasks_present(data_dir: Path) -> List[str]:
    """The tasks of `--glue all`: those whose folder under `data_dir` holds a train.tsv."""
    return [name for name, task in GLUE_TASKS.items() if (Path(data_dir) / task.folder / "train.tsv").is_file()]


def read_glue(name: str, data_dir: Path) -> Tuple[Split, Split, Dict[str, Split]]:
    """(train, the first dev set, the other dev sets by file stem) of a GLUE task."""
    task, folder = glue_task(name), task_folder(name, data_dir)
    second = task.text_columns[1] if len(task.text_columns) > 1 else None
    columns = Columns(task.text_columns[0], second, task.label_column, task.problem_type)

    def read(file_name: str) -> Split:
        path = folder / file_name
        if not path.is_file():
            raise UsageError(f"--glue {name}: no {file_name} in {folder}; GLUE's {task.folder} has "
                             f"{', '.join(('train.tsv',) + task.dev_files)}")
        return collect_split(path, read_table(path, read_text(path), columns, header=task.header))

    devs = [read(f) for f in task.dev_files]
    return read("train.tsv"), devs[0], {Path(f).stem: split for f, split in zip(task.dev_files[1:], devs[1:])}

"""`litgpt download`: fetch a RoBERTa or BERT checkpoint from the HuggingFace Hub and convert it to a litgpt
checkpoint dir.

The files land in a hidden staging folder beside the target and are renamed onto `checkpoint_dir/ORG/NAME` only
once the conversion succeeded: a checkpoint dir is never half-written, and a failed download leaves nothing behind.
The Hub access itself (`fetch_from_hub`, which files to take) lives in `litgpt/hub.py`.
"""

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

from litgpt.config import name_to_config
from litgpt.hub import CONFIG_FILES, fetch_from_hub, hub_repo_id, select_files
from litgpt.tokenizer import TOKENIZER_FILES
from litgpt.utils import UsageError


def known_repo_ids() -> List[str]:
    """HuggingFace repo ids of the registry configs, e.g. `FacebookAI/roberta-base`."""
    return [hub_repo_id(name) for name, c in name_to_config.items() if c.get("hf_config")]


def download_from_hub(
    repo_id: str,
    checkpoint_dir: Path = Path("checkpoints"),
    access_token: Optional[str] = None,
    tokenizer_only: bool = False,
    source_dir: Optional[Path] = None,
) -> None:
    """Download a RoBERTa or BERT checkpoint from the HuggingFace Hub into `checkpoint_dir/REPO_ID` and convert it.

    Fetches config.json, the tokenizer files and the weights (`model.safetensors`; `pytorch_model.bin` only when
    the repo has no safetensors), then writes `lit_model.pth` + `model_config.yaml` beside them.
    `litgpt download list` (or no repo id) prints the known repo ids.

    Args:
        repo_id: A Hub repo id such as `FacebookAI/roberta-base`, or a registry name such as `roberta-base`.
        checkpoint_dir: Parent folder of the downloaded checkpoints.
        access_token: A HuggingFace token, for private or gated repos (default: `HF_TOKEN` or the stored login).
        tokenizer_only: Fetch only the tokenizer files, without weights or conversion.
        source_dir: Take the files from this local HuggingFace-format folder instead of the Hub (an offline mirror);
            the checkpoint still lands in `checkpoint_dir/REPO_ID` (REPO_ID defaults to the folder's name).
    """
    if repo_id in (None, "list") and source_dir is None:
        print("\n".join(known_repo_ids()))
        return
    repo_id = resolve_repo_id(repo_id if repo_id is not None else Path(source_dir).name)
    target = Path(checkpoint_dir) / repo_id

    if source_dir is not None:
        source_dir = Path(source_dir)
        if not source_dir.is_dir():
            raise UsageError(f"--source_dir {source_dir}: not a folder")
        folder = source_dir
    else:
        folder = fetch_from_hub(repo_id, access_token, tokenizer_only)
    files = select_files((p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()), tokenizer_only)
    if not tokenizer_only and not any(f in files for f in CONFIG_FILES):
        raise UsageError(f"{repo_id}: no config.json in {folder}; is it a HuggingFace model repo?")
    if not tokenizer_only and all(f in TOKENIZER_FILES + CONFIG_FILES for f in files):
        raise UsageError(f"{repo_id}: no weights (model.safetensors or pytorch_model.bin) in {folder}")
    if tokenizer_only and not files:
        raise UsageError(f"{repo_id}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {folder}")

    model_name = next((n for n in name_to_config if hub_repo_id(n) == repo_id), repo_id.split("/")[-1])
    with staging_dir(target) as staging:
        for name in files:
            link_or_copy(folder / name, staging / name)
        if not tokenizer_only:
            from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

            with contextlib.redirect_stdout(io.StringIO()):  # its message would name the staging folder
                convert_hf_checkpoint(staging, model_name=model_name)
        if tokenizer_only and target.is_dir():
            for name in files:  # keep the weights already there
                os.replace(staging / name, target / name)
        else:
            replace_dir(staging, target)
    what = "tokenizer files" if tokenizer_only else "converted to lit_model.pth + model_config.yaml"
    print(f"Saved {repo_id} to {target} ({what})")


def resolve_repo_id(repo_id: str) -> str:
    """A registry name becomes its Hub repo id; anything else must be a valid `ORG/NAME` (or `NAME`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id = str(repo_id)
    if repo_id in name_to_config and hub_repo_id(repo_id):
        return hub_repo_id(repo_id)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UsageError(
            f"{repo_id!r}: not a HuggingFace repo id; expected ORG/NAME such as FacebookAI/roberta-base"
            " (`litgpt download list` shows the known ones)"
        ) from None
    return repo_id


class staging_dir:
    """A fresh hidden folder beside `target`; on any failure it is removed, with the parents it had to create."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> Path:
        self.created = []
        parent = self.target.parent
        while not parent.exists():
            self.created.append(parent)
            parent = parent.parent
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".partial", dir=self.target.parent))
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if exc_type is not None:
            for folder in self.created:  # deepest first
                try:
                    folder.rmdir()
                except OSError:
                    break


def replace_dir(staging: Path, target: Path) -> None:
    """Renames `staging` onto `target`; an existing `target` is swapped out first and deleted only afterwards."""
    if not target.exists():
        os.rename(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rename(target, old / target.name)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-links from the HF cache when it is on the same disk (no second copy of the weights), else copies."""
    src = src.resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)  # 1_Pooling/config.json
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


if __name__ == "__main__":
    from litgpt.__main__ import run_command

    run_command(download_from_hub, None, prog="download")

"""`litgpt download`: fetch a RoBERTa checkpoint from the HuggingFace Hub and convert it to a litgpt checkpoint dir.

The files land in a hidden staging folder beside the target and are renamed onto `checkpoint_dir/ORG/NAME` only
once the conversion succeeded: a checkpoint dir is never half-written, and a failed download leaves nothing behind.
"""

import contextlib
import fnmatch
import importlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional

from litgpt.config import name_to_config
from litgpt.utils import UsageError

CONFIG_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
# (single file, sharded index, shard pattern), in order of preference: safetensors over pickles
WEIGHT_FORMATS = (
    ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"),
)
OFFLINE_HINT = "or convert a local HuggingFace dir with `litgpt convert_to_litgpt DIR`"


def known_repo_ids() -> List[str]:
    """HuggingFace repo ids of the registry configs, e.g. `FacebookAI/roberta-base`."""
    return [f"{c['hf_config']['org']}/{c['hf_config']['name']}" for c in name_to_config.values() if c.get("hf_config")]


def download_from_hub(
    repo_id: str,
    checkpoint_dir: Path = Path("checkpoints"),
    access_token: Optional[str] = None,
    tokenizer_only: bool = False,
    source_dir: Optional[Path] = None,
) -> None:
    """Download a RoBERTa checkpoint from the HuggingFace Hub into `checkpoint_dir/REPO_ID` and convert it.

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
    files = select_files((p.name for p in folder.iterdir() if p.is_file()), tokenizer_only)
    if not tokenizer_only and not any(f in files for f in CONFIG_FILES):
        raise UsageError(f"{repo_id}: no config.json in {folder}; is it a HuggingFace model repo?")
    if not tokenizer_only and all(f in TOKENIZER_FILES + CONFIG_FILES for f in files):
        raise UsageError(f"{repo_id}: no weights (model.safetensors or pytorch_model.bin) in {folder}")
    if tokenizer_only and not files:
        raise UsageError(f"{repo_id}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {folder}")

    model_name = next((n for n, c in name_to_config.items() if c.get("hf_config") and
                       f"{c['hf_config']['org']}/{c['hf_config']['name']}" == repo_id), repo_id.split("/")[-1])
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
    hf = name_to_config.get(repo_id, {}).get("hf_config")
    if hf:
        return f"{hf['org']}/{hf['name']}"
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UsageError(
            f"{repo_id!r}: not a HuggingFace repo id; expected ORG/NAME such as FacebookAI/roberta-base"
            " (`litgpt download list` shows the known ones)"
        ) from None
    return repo_id


def select_files(available: Iterable[str], tokenizer_only: bool = False) -> List[str]:
    """The files to fetch from a repo's (root-level) file names: config, tokenizer, and one weights format."""
    available = set(available)
    wanted = [f for f in TOKENIZER_FILES if f in available]
    if tokenizer_only:
        return wanted
    wanted = [f for f in CONFIG_FILES if f in available] + wanted
    for single, index, shards in WEIGHT_FORMATS:
        if single in available:
            return wanted + [single]
        if index in available:
            return wanted + [index] + sorted(f for f in available if fnmatch.fnmatch(f, shards))
    return wanted


def fetch_from_hub(repo_id: str, access_token: Optional[str], tokenizer_only: bool) -> Path:
    """Downloads the wanted files into the HuggingFace cache and returns the snapshot folder.

    With HF_HUB_OFFLINE set, a snapshot already in the cache is used as is. Every failure is one `UsageError`.
    """
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = constants.ENDPOINT
    offline = constants.HF_HUB_OFFLINE
    try:
        if offline:
            # no listing without network: take whatever of the candidate files the cached snapshot holds
            patterns = list(CONFIG_FILES + TOKENIZER_FILES) + [p for fmt in WEIGHT_FORMATS for p in fmt]
            return Path(snapshot_download(repo_id, allow_patterns=patterns, token=access_token))
        # `model_info` lists the files in one request; `list_repo_files` retries with backoff for a minute when offline
        info = HfApi(token=access_token).model_info(repo_id)
        remote = [s.rfilename for s in info.siblings or [] if "/" not in s.rfilename]
        files = select_files(remote, tokenizer_only)
        if not tokenizer_only and not any(f.startswith(("model", "pytorch_model")) for f in files):
            raise UsageError(f"{repo_id}: the repo has no model.safetensors or pytorch_model.bin weights")
        return Path(snapshot_download(repo_id, allow_patterns=files, token=access_token))
    except UsageError:
        raise
    except GatedRepoError:
        raise UsageError(
            f"{repo_id}: gated repo; accept its terms at {endpoint}/{repo_id} and pass --access_token (or set HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise UsageError(
            f"{repo_id}: repo not found on {endpoint} (or private); check the repo id (`litgpt download list`),"
            " or pass --access_token for a private repo"
        ) from None
    except RevisionNotFoundError:
        raise UsageError(f"{repo_id}: the repo has no main branch on {endpoint}") from None
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as ex:
        if offline:
            raise UsageError(
                f"{repo_id}: not in the local HuggingFace cache and HF_HUB_OFFLINE is set; unset it to download,"
                f" {OFFLINE_HINT}"
            ) from None
        raise UsageError(_connection_message(repo_id, endpoint, ex.__cause__ or ex)) from None
    except HfHubHTTPError as ex:
        status = getattr(getattr(ex, "response", None), "status_code", "error")
        if status == 401:
            raise UsageError(f"{repo_id}: {endpoint} refused access (HTTP 401); pass a valid --access_token") from None
        raise UsageError(f"{repo_id}: {endpoint} answered HTTP {status}; try again later, {OFFLINE_HINT}") from None
    except (ConnectionError, TimeoutError, *_http_errors()) as ex:
        raise UsageError(_connection_message(repo_id, endpoint, ex)) from None
    except OSError as ex:  # the local side: a full disk, an unwritable HF cache
        detail = f"{ex.strerror}: {ex.filename}" if ex.strerror else str(ex).splitlines()[0]
        raise UsageError(
            f"{repo_id}: download failed ({detail}); check HF_HOME / HF_HUB_CACHE and the free disk space"
        ) from None


def _connection_message(repo_id: str, endpoint: str, ex: BaseException) -> str:
    return (
        f"{repo_id}: could not reach {endpoint} ({ex.__class__.__name__}); check the network"
        f" (HF_ENDPOINT, proxy settings), {OFFLINE_HINT}"
    )


def _http_errors() -> tuple:
    errors = []
    for module in ("httpx2", "httpx"):  # huggingface_hub's HTTP client, by version
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


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
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


if __name__ == "__main__":
    from litgpt.__main__ import run_command

    run_command(download_from_hub, None, prog="download")

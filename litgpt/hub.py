"""The HuggingFace Hub: registry names to repo ids, where `litgpt download` puts a repo, which of its files to take,
and fetching them through huggingface_hub's cache with every failure as one clear line."""

import fnmatch
import importlib
import re
from pathlib import Path
from typing import Iterable, List, Optional

from litgpt.config import name_to_config
from litgpt.tokenizer import TOKENIZER_FILES
from litgpt.utils import UsageError

CONFIG_FILES = ("config.json",)
# a sentence-transformers repo's recipe for its vectors (pooling, normalization, length), read by `api.Embedder`
EMBEDDING_FILES = ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json")
# (single file, sharded index, shard pattern), in order of preference: safetensors over pickles
WEIGHT_FORMATS = (
    ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"),
)
OFFLINE_HINT = "or convert a local HuggingFace dir with `litgpt convert_to_litgpt DIR`"


def hub_repo_id(name: str) -> Optional[str]:
    """The Hub repo id for a registry name (`roberta-base` -> `FacebookAI/roberta-base`) or an `ORG/NAME` id."""
    hf = name_to_config.get(name, {}).get("hf_config")
    if hf:
        return f"{hf['org']}/{hf['name']}"
    return name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None


def local_hub_dir(name: str, checkpoints_dir: Path = Path("checkpoints")) -> Optional[Path]:
    """Where `litgpt download` put a registry model or Hub id (`checkpoints/ORG/NAME`), if it is there."""
    repo_id = hub_repo_id(name)
    candidates = [checkpoints_dir / repo_id, checkpoints_dir / name] if repo_id else [checkpoints_dir / name]
    for path in candidates:
        if (path / "lit_model.pth").is_file() or (path / "config.json").is_file():
            return path
    return None


def select_files(available: Iterable[str], tokenizer_only: bool = False) -> List[str]:
    """The files to fetch from a repo's file names: config (and a sentence-transformers recipe), tokenizer, and one
    weights format."""
    available = set(available)
    wanted = [f for f in TOKENIZER_FILES if f in available]
    if tokenizer_only:
        return wanted
    wanted = [f for f in CONFIG_FILES + EMBEDDING_FILES if f in available] + wanted
    for single, index, shards in WEIGHT_FORMATS:
        if single in available:
            return wanted + [single]
        if index in available:
            return wanted + [index] + sorted(f for f in available if fnmatch.fnmatch(f, shards))
    return wanted


def fetch_from_hub(repo_id: str, access_token: Optional[str] = None, tokenizer_only: bool = False) -> Path:
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
            patterns = [*CONFIG_FILES, *EMBEDDING_FILES, *TOKENIZER_FILES, *(p for fmt in WEIGHT_FORMATS for p in fmt)]
            return Path(snapshot_download(repo_id, allow_patterns=patterns, token=access_token))
        # `model_info` lists the files in one request; `list_repo_files` retries with backoff for a minute when offline
        info = HfApi(token=access_token).model_info(repo_id)
        remote = [s.rfilename for s in info.siblings or [] if "/" not in s.rfilename or s.rfilename in EMBEDDING_FILES]
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

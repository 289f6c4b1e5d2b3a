"""Sharing a run on the Hugging Face Hub: a pre-flight check of the token and repo rights before any data is
read, then one commit of exactly the run's final files to a private repo. The card itself: hf_medtl.hub.card."""
from __future__ import annotations

import logging
from pathlib import Path

from hf_medtl.errors import HfMedtlError

logger = logging.getLogger("hf_medtl")
UPLOAD_SKIP = {"training_args.bin"}  # Trainer internals; never part of the shared model


def _repo_id(training_args, output_dir) -> str:
    return training_args.hub_model_id or Path(output_dir).resolve().name


def preflight(training_args) -> str:
    """Check the token and the right to create/write ``hub_model_id`` before any data is read; return the
    full repo id. One line (HfMedtlError) for: offline, no token, a read-only token, a foreign namespace."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled
    from huggingface_hub.utils import validate_repo_id

    repo_id = _repo_id(training_args, training_args.output_dir)
    try:
        validate_repo_id(repo_id)
        who = HfApi(token=training_args.hub_token).whoami()
    except HFValidationError as e:
        raise HfMedtlError(f"hub_model_id '{repo_id}': not a valid repo id ({str(e).splitlines()[0]})") from None
    except LocalTokenNotFoundError:
        raise HfMedtlError("push_to_hub: no Hugging Face token; run `hf auth login` or set HF_TOKEN (or hub_token) "
                           "before training, or set push_to_hub false") from None
    except OfflineModeIsEnabled:
        raise HfMedtlError("push_to_hub: HF_HUB_OFFLINE=1 is set, so nothing can be uploaded; unset it or set "
                           "push_to_hub false (nothing was trained)") from None
    except (HfHubHTTPError, OSError) as e:
        raise HfMedtlError(f"push_to_hub: the Hub did not accept the token or could not be reached "
                           f"({str(e).splitlines()[0][:160]}); nothing was trained") from None
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HfMedtlError("push_to_hub: the token is read-only; create a token with write access (nothing was trained)")
    user = who.get("name")
    namespace = repo_id.split("/")[0] if "/" in repo_id else user
    allowed = {user} | {o.get("name") for o in who.get("orgs") or [] if o.get("roleInOrg", "write") != "read"}
    if namespace not in allowed:
        raise HfMedtlError(f"hub_model_id '{repo_id}': user '{user}' cannot create repos in '{namespace}' "
                           f"(namespaces with write access: {', '.join(sorted(a for a in allowed if a))})")
    return repo_id if "/" in repo_id else f"{user}/{repo_id}"


def upload_files(output_dir: str | Path) -> list[str]:
    """The files a push sends: the run's final outputs, and nothing else (no checkpoint-*/, .staging/,
    hidden or temporary files, training_args.bin; an ensemble's members/ runs, whose weights its own model holds
    and whose scores its card lists)."""
    root = Path(output_dir)
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if (p.is_file() and not any(part.startswith(".") or part.startswith("checkpoint-") for part in rel.parts)
                and not (rel.parts[0] == "members" and (root / "modeling_ensemble.py").is_file())
                and p.name not in UPLOAD_SKIP and not p.name.endswith(".tmp")):
            files.append(rel.as_posix())
    return files


def push(output_dir: Path, training_args) -> str:
    """Upload the finished run as one commit to a (private by default) repo; return its id. Main process only."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    repo_id = _repo_id(training_args, output_dir)
    private = training_args.hub_private_repo is not False  # None (unset) means private
    api = HfApi(token=training_args.hub_token)
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(Path(output_dir) / f))
                  for f in upload_files(output_dir)]
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        api.create_commit(repo.repo_id, operations, commit_message="hf_medtl fine-tuning run")
    except (OfflineModeIsEnabled, HfHubHTTPError, OSError) as e:
        raise HfMedtlError(f"push_to_hub to '{repo_id}' failed ({str(e).splitlines()[0]}); the run's outputs are "
                           f"complete in {output_dir}: upload them later with `hf upload {repo_id} {output_dir}`") from None
    logger.info(f"uploaded {len(operations)} files to {repo.repo_id} ({'private' if private else 'public'})")
    return repo.repo_id

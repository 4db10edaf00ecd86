"""Synthesis of (caption, modification, target text) for unlabeled images, into a resumable store.

    python -m mvft_helpers.synthesize --images DIR --backend simulated --world DIR --out store.jsonl

The store is JSONL, one record per image and prompt version:
    id, image_id, image, caption, modification, target, backend, model, prompt_version, prompts,
    time, status ("accepted" | "rejected"), reason (why rejected), raw (the unusable answer)
Records are appended in chunks with one write and an fsync each; a run killed at any point (kill
-9 included) restarts where it stopped: a truncated last line is cut off and its image redone, and
finished ids are skipped, so there are no duplicates and no lost records. Requests that fail for
good at the transport level (server down) are not stored, so a later run retries them.

An answer that breaks its JSON contract gets one repair turn; if that fails too, the record is
stored as rejected with the reason. Curation (notebook 02) writes a separate file beside the store
(`<store>.curation.jsonl`); the raw store is never modified. Training reads `curated_records`.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from .mllm import BackendError, ChatRequest, MLLMBackend
from .prompts import DEFAULTS, ContractError, Prompt, get_prompt, repair_message

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CURATION_ACTIONS = ("accept", "reject", "edit")
EDITABLE = ("caption", "modification", "target")


class StoreError(ValueError):
    pass


def append_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Append records as JSON lines with one write and an fsync (a kill leaves at most one
    unfinished last line, which `JsonlStore.recover` removes)."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    if not data:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return data.count(b"\n")


class JsonlStore:
    """An append-only JSONL file of records with unique `id`s that survives kill -9."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def recover(self) -> int:
        """Cut a truncated last line (a run killed mid-write); return the bytes removed."""
        if not self.path.exists():
            return 0
        size = self.path.stat().st_size
        with open(self.path, "rb+") as f:
            if size == 0:
                return 0
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return 0
            # Find the last newline; everything after it is an unfinished record.
            pos, chunk = size, 1 << 16
            keep = 0
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                block = f.read(pos - start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                pos = start
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    if not line.endswith("\n"):
                        break   # an unfinished last line; recover() removes it before writing
                    raise StoreError(f"{self.path}:{n} is not valid JSON; the store is damaged "
                                     "(was it edited by hand?). Fix or remove that line.") from None
        return out

    def done_ids(self) -> set[str]:
        return {r["id"] for r in self.records()}

    def append(self, records: Iterable[dict]) -> int:
        return append_jsonl(self.path, records)


class SyntheticStore(JsonlStore):
    """The synthesis store, with a curation file beside it (`<store>.curation.jsonl`)."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.curation_path = self.path.with_name(self.path.stem + ".curation.jsonl")

    def summary(self) -> dict:
        recs = self.records()
        status = Counter(r["status"] for r in recs)
        reasons = Counter(r["reason"] for r in recs if r["status"] == "rejected")
        return {"records": len(recs), "accepted": status.get("accepted", 0),
                "rejected": status.get("rejected", 0), "rejected_by_reason": dict(reasons)}

    def dataframe(self, curated: bool = False):
        import pandas as pd

        return pd.DataFrame(self.curated_records(accepted_only=False) if curated else self.records())

    # -- curation -----------------------------------------------------------------------------
    def curate(self, record_id: str, action: str, **edits) -> dict:
        """Accept, reject or edit one record; the decision goes to the curation file."""
        if action not in CURATION_ACTIONS:
            raise ValueError(f"unknown curation action {action!r}; allowed: {list(CURATION_ACTIONS)}")
        bad = set(edits) - set(EDITABLE)
        if bad:
            raise ValueError(f"only {list(EDITABLE)} can be edited, not {sorted(bad)}")
        if action == "edit" and not edits:
            raise ValueError("an edit needs at least one field, e.g. target='...'")
        entry = {"id": record_id, "action": action, "edits": edits,
                 "time": _dt.datetime.now().isoformat(timespec="seconds")}
        append_jsonl(self.curation_path, [entry])
        return entry

    def curation(self) -> list[dict]:
        if not self.curation_path.exists():
            return []
        with open(self.curation_path, encoding="utf-8") as f:
            return [json.loads(l) for l in f if l.strip() and l.endswith("\n")]

    def curated_records(self, accepted_only: bool = True) -> list[dict]:
        """Records with the curation applied (later decisions win; edits accumulate)."""
        recs = {r["id"]: dict(r) for r in self.records()}
        for c in self.curation():
            r = recs.get(c["id"])
            if r is None:
                continue
            if c["action"] == "reject":
                r.update(status="rejected", reason="curator")
            elif c["action"] == "accept":
                if not all(r.get(k) for k in EDITABLE):
                    continue   # nothing to train on: a rejected record with missing fields stays out
                r.update(status="accepted", reason=None)
            else:
                r.update(c["edits"])
                r["edited"] = True
        out = list(recs.values())
        return [r for r in out if r["status"] == "accepted"] if accepted_only else out


# ----------------------------------------------------------------------------- the pipeline

@dataclass
class PromptSet:
    caption: str = DEFAULTS["caption"]
    modification: str = DEFAULTS["modification"]
    target: str = DEFAULTS["target_text"]

    @property
    def version(self) -> str:
        return f"{self.caption}+{self.modification}+{self.target}"

    def prompts(self) -> tuple[Prompt, Prompt, Prompt]:
        return get_prompt(self.caption), get_prompt(self.modification), get_prompt(self.target)


def list_images(images: str | os.PathLike) -> list[Path]:
    d = Path(images)
    if not d.is_dir():
        raise FileNotFoundError(f"image folder {d} does not exist")
    paths = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {d}")
    return paths


def ask(backend: MLLMBackend, prompt: Prompt | Sequence[Prompt],
        requests: Sequence[ChatRequest]) -> list[tuple[dict | None, str, str | None]]:
    """Run requests (in one batch, so a concurrent backend overlaps them), parse each answer
    against its prompt's contract (`prompt`: one for all, or one per request), repair once.

    Returns (parsed fields or None, last raw answer, rejection reason or None) per request; a
    BackendError becomes (None, "", "backend: ...").
    """
    prompts = [prompt] * len(requests) if isinstance(prompt, Prompt) else list(prompt)
    answers = backend.generate(requests)
    results: list = [None] * len(requests)
    repairs = []
    for i, (req, ans, prompt) in enumerate(zip(requests, answers, prompts)):
        if isinstance(ans, BackendError):
            results[i] = (None, "", f"backend: {ans}")
            continue
        try:
            results[i] = (prompt.parse(ans), ans, None)
        except ContractError as e:
            repairs.append((i, req.followup(ans, repair_message(e.reason, prompt.fields))))
    if repairs:
        second = backend.generate([r for _, r in repairs])
        for (i, _), ans in zip(repairs, second):
            if isinstance(ans, BackendError):
                results[i] = (None, "", f"backend: {ans}")
                continue
            try:
                results[i] = (prompts[i].parse(ans), ans, None)
            except ContractError as e:
                results[i] = (None, ans, f"{e.reason} (after repair)")
    return results


def synthesize(images: Sequence[str | os.PathLike], backend: MLLMBackend, out: str | os.PathLike,
               prompts: PromptSet | None = None, chunk_size: int = 64, limit: int | None = None,
               image_root: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Describe every image (caption, modification, target text) into the store at `out`.

    Resumes: images whose record (for this prompt version) is already stored are skipped.
    Returns the store summary plus `failed` (transport failures, not stored, retried next run).
    """
    prompts = prompts or PromptSet()
    p_cap, p_mod, p_tgt = prompts.prompts()
    store = SyntheticStore(out)
    store.recover()
    done = store.done_ids()
    root = Path(image_root) if image_root else None
    todo = []
    for p in images:
        p = Path(p)
        image_id = (p.relative_to(root) if root else Path(p.name)).as_posix()
        rid = f"{image_id}|{prompts.version}"
        if rid not in done:
            todo.append((rid, image_id, p))
    if limit is not None:
        todo = todo[:limit]
    failed = 0
    meta = backend.describe()
    bar = tqdm(total=len(todo), desc=f"synthesis ({meta['backend']})", unit="img", disable=not progress)
    for c in range(0, len(todo), chunk_size):
        chunk = todo[c:c + chunk_size]
        # Captions and modifications need only the image: one batch, so they overlap.
        first = ask(backend, [p_cap] * len(chunk) + [p_mod] * len(chunk),
                    [ChatRequest(rid, p.render(), str(path), p.system)
                     for p in (p_cap, p_mod) for rid, _, path in chunk])
        caps, mods = first[:len(chunk)], first[len(chunk):]
        need = [i for i, m in enumerate(mods) if m[0] is not None]
        tgt_reqs = [ChatRequest(key=chunk[i][0], prompt=p_tgt.render(modification=mods[i][0]["modification"]),
                                image=str(chunk[i][2]), system=p_tgt.system) for i in need]
        tgts = dict(zip(need, ask(backend, p_tgt, tgt_reqs)))
        records = []
        for i, (rid, image_id, p) in enumerate(chunk):
            parts = {"caption": caps[i], "modification": mods[i], "target": tgts.get(i, (None, "", None))}
            reasons = [f"{k}: {r[2]}" for k, r in parts.items() if r[2]]
            if any(r[2] and r[2].startswith("backend:") for r in parts.values()):
                failed += 1
                continue
            if parts["modification"][0] is None:
                reasons = reasons or ["modification: missing"]
            rec = {"id": rid, "image_id": image_id, "image": str(p),
                   "caption": (parts["caption"][0] or {}).get("caption"),
                   "modification": (parts["modification"][0] or {}).get("modification"),
                   "target": (parts["target"][0] or {}).get("target"),
                   "backend": meta["backend"], "model": meta.get("model"),
                   "prompt_version": prompts.version,
                   "prompts": {"caption": p_cap.id, "modification": p_mod.id, "target": p_tgt.id},
                   "time": _dt.datetime.now().isoformat(timespec="seconds"),
                   "status": "rejected" if reasons else "accepted",
                   "reason": "; ".join(reasons) if reasons else None}
            if reasons:
                rec["raw"] = {k: r[1] for k, r in parts.items() if r[2]}
            records.append(rec)
        store.append(records)
        bar.update(len(chunk))
    bar.close()
    return {**store.summary(), "failed": failed}


def load_training_triplets(store_path: str | os.PathLike) -> list[dict]:
    """Accepted records with curation applied: what fine-tuning reads."""
    recs = SyntheticStore(store_path).curated_records(accepted_only=True)
    if not recs:
        raise ValueError(f"{store_path} holds no accepted record; run the synthesis (notebook 01) first")
    return recs

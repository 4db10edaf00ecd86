"""The MLLM prompts, versioned in one place, each with an output contract the parser enforces.

Tasks (the paper's names where it has them):
- `caption` (P_c): a detailed caption c of an image;
- `modification`: a plausible modification text m for an image;
- `target_text` (P_tt): the target text t describing the image after m;
- `query_target`: at inference, the target text t' for a composed query (reference image +
  modification text, or FashionIQ's two relative captions).

Every prompt asks for one JSON object with named string fields; `parse` extracts it (tolerating
code fences and prose around it) and raises `ContractError` with a short reason otherwise.
A prompt's id is "<task>/<version>"; stores key their records by it, so changing a prompt means
adding a version, never editing one in place.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass


class ContractError(ValueError):
    """An MLLM answer that does not meet the prompt's output contract; `reason` is a short tag."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Prompt:
    task: str
    version: str
    text: str                       # may hold {modification}
    fields: tuple[str, ...]         # the JSON fields the answer must carry (non-empty strings)
    notes: str = ""
    system: str = "You are a careful visual assistant. You answer with one JSON object and nothing else."

    @property
    def id(self) -> str:
        return f"{self.task}/{self.version}"

    @property
    def placeholders(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.text)

    def render(self, **values) -> str:
        text = self.text
        for name in self.placeholders:
            if name not in values:
                raise ValueError(f"prompt {self.id} needs the value {name!r}")
            text = text.replace("{" + name + "}", str(values[name]))
        return text

    def parse(self, answer: str) -> dict:
        return parse_json_answer(answer, self.fields)


_JSON_RULE = 'Answer with exactly one JSON object: {fields}.'
_FAITHFUL = ("Describe only what is visible: do not mention objects that are not in the image and do "
             "not leave any object out.")
_COMPLETE = "For every object give its size, colour, shape and position, then the background."


def _fields(*names: str) -> str:
    return "{" + ", ".join(f'"{n}": "..."' for n in names) + "}"


PROMPTS: dict[str, Prompt] = {}


def _register(p: Prompt) -> Prompt:
    if p.id in PROMPTS:
        raise ValueError(f"prompt {p.id} is defined twice; add a new version instead")
    PROMPTS[p.id] = p
    return p


# P_c: the detailed caption.
_register(Prompt("caption", "v1", "Describe this image. " + _JSON_RULE.format(fields=_fields("caption")),
                 ("caption",), notes="minimal: no instruction about completeness or faithfulness"))
_register(Prompt("caption", "v2", "Write a detailed caption of this image. " + _COMPLETE + " " + _FAITHFUL
                 + " " + _JSON_RULE.format(fields=_fields("caption")), ("caption",),
                 notes="asks for every attribute and for faithfulness"))

# A modification proposed for the image.
_register(Prompt("modification", "v1",
                 "Propose one edit to this image, written as a short instruction, that changes a colour, a "
                 "shape, a size, a position or the background, or adds or removes an object. Name the object "
                 "you change so that it cannot be confused with another. "
                 + _JSON_RULE.format(fields=_fields("modification")), ("modification",)))

# P_tt: the target text, given the image and a modification.
_register(Prompt("target_text", "v1",
                 'Describe the image after this edit: "{modification}". '
                 + _JSON_RULE.format(fields=_fields("target")), ("target",),
                 notes="minimal"))
_register(Prompt("target_text", "v2",
                 'Here is an edit instruction: "{modification}". Describe the image as it would look after '
                 "the edit. Apply the edit exactly and keep everything it does not mention unchanged. "
                 + _COMPLETE + " " + _FAITHFUL + " " + _JSON_RULE.format(fields=_fields("target")),
                 ("target",), notes="asks to keep the rest, every attribute, and faithfulness"))

# At inference: the target text for a composed query.
_register(Prompt("query_target", "v1",
                 'A user shows you this reference image and asks for an image that differs as follows: '
                 '"{modification}". Describe the image the user is looking for. Keep everything the request '
                 "does not mention as in the reference image. " + _COMPLETE + " " + _FAITHFUL + " "
                 + _JSON_RULE.format(fields=_fields("target")), ("target",)))

DEFAULTS = {"caption": "caption/v2", "modification": "modification/v1", "target_text": "target_text/v2",
            "query_target": "query_target/v1"}


def get_prompt(prompt_id: str) -> Prompt:
    if prompt_id not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt_id!r}; allowed values: {', '.join(sorted(PROMPTS))}")
    return PROMPTS[prompt_id]


def requested_fields(prompt_text: str) -> list[str]:
    """The JSON fields a prompt asks for (what an MLLM reads from the contract sentence)."""
    m = re.search(r"exactly one JSON object: (\{.*\})", prompt_text)
    return re.findall(r'"(\w+)":', m.group(1)) if m else []


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_json_answer(answer: str, fields) -> dict:
    """The JSON object in an MLLM answer, with every required field a non-empty string."""
    if not isinstance(answer, str) or not answer.strip():
        raise ContractError("empty answer")
    text = answer.strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ContractError("no JSON object", text[:80])
    try:
        obj = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise ContractError("invalid JSON", str(e)) from None
    if not isinstance(obj, dict):
        raise ContractError("not a JSON object")
    for f in fields:
        if f not in obj:
            raise ContractError("missing field", f)
        if not isinstance(obj[f], str) or not obj[f].strip():
            raise ContractError("empty field", f)
    return {f: obj[f].strip() for f in fields}


REPAIR = ("Your previous answer could not be used ({reason}). Answer again with exactly one JSON "
          "object and nothing else: {fields}.")


def repair_message(reason: str, fields) -> str:
    return REPAIR.format(reason=reason, fields=_fields(*fields))

"""The catalogue of built-in workflows: deterministic, offline, each with a JSON Schema input."""

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import jsonschema

from levqor_core import problems
from levqor_core.apijobs.problems import InvalidJobInput, UnknownWorkflow


@dataclass(frozen=True)
class Workflow:
    id: str
    name: str
    description: str
    input_schema: dict
    run: Callable[[dict], dict]
    example_input: dict

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "example_input": self.example_input,
        }

    def validation_errors(self, data) -> list[str]:
        validator = jsonschema.Draft202012Validator(self.input_schema)
        return [f"{'/'.join(map(str, e.path)) or '(input)'}: {e.message}" for e in validator.iter_errors(data)][:10]


_WORD = re.compile(r"[A-Za-z0-9']+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_INDEX = re.compile(r"[0-9]+")  # str.isdigit() also accepts "²", which int() refuses
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "she",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "will",
        "with",
        "you",
        "your",
    ]
)


def _count(data: dict, name: str, default: int) -> int:
    # JSON Schema's "integer" admits 2.0; the workflows need a Python int.
    return int(data.get(name, default))


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def echo(data: dict) -> dict:
    return data


def text_stats(data: dict) -> dict:
    text = data["text"]
    words = _words(text)
    content = [w for w in words if w not in _STOP]
    return {
        "characters": len(text),
        "words": len(words),
        "sentences": len(_sentences(text)),
        "unique_words": len(set(words)),
        "reading_time_seconds": round(len(words) / 238 * 60),  # average adult reading speed
        "top_words": [
            {"word": w, "count": c}
            for w, c in sorted(Counter(content).items(), key=lambda x: (-x[1], x[0]))[: _count(data, "top", 5)]
        ],
    }


def summarize(data: dict) -> dict:
    """Extractive summary: the sentences whose words are most frequent, in original order."""
    sentences = _sentences(data["text"])
    freq = Counter(w for w in _words(data["text"]) if w not in _STOP)
    scored = sorted(
        range(len(sentences)),
        key=lambda i: (-sum(freq[w] for w in _words(sentences[i])) / (len(_words(sentences[i])) or 1), i),
    )
    keep = sorted(scored[: _count(data, "max_sentences", 2)])
    return {
        "summary": " ".join(sentences[i] for i in keep),
        "sentences_kept": len(keep),
        "sentences_total": len(sentences),
    }


def json_transform(data: dict) -> dict:
    """Pick fields from a document by dotted path and rename them."""
    out = {}
    for target, path in data["mapping"].items():
        node = data["document"]
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and _INDEX.fullmatch(part) and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
                break
        out[target] = node
    return {"result": out}


def delay(data: dict) -> dict:
    """Waits, then reports: a long-running job to practise polling and cancelling with."""
    seconds = _count(data, "seconds", 0)
    time.sleep(seconds)
    return {"slept_seconds": seconds}


_TEXT = {"type": "string", "minLength": 1, "maxLength": 20000}


def _text_input(option: str, maximum: int) -> dict:
    """A text workflow's input schema: the text, and one optional count from 1 to `maximum`."""
    return {
        "type": "object",
        "required": ["text"],
        "properties": {"text": _TEXT, option: {"type": "integer", "minimum": 1, "maximum": maximum}},
        "additionalProperties": False,
    }


CATALOGUE: dict[str, Workflow] = {
    w.id: w
    for w in (
        Workflow(
            "echo",
            "Echo",
            "Returns its input unchanged. Use it to check an integration end to end.",
            {"type": "object", "maxProperties": 50},
            echo,
            {"message": "hello"},
        ),
        Workflow(
            "text-stats",
            "Text statistics",
            "Counts characters, words and sentences, estimates reading time and lists the top words.",
            _text_input("top", 50),
            text_stats,
            {"text": "Levqor runs workflows. Workflows run jobs.", "top": 3},
        ),
        Workflow(
            "summarize",
            "Extractive summary",
            "Keeps the most representative sentences of a text, in their original order.",
            _text_input("max_sentences", 20),
            summarize,
            {"text": "Levqor orchestrates jobs. Jobs run workflows. The weather is nice.", "max_sentences": 1},
        ),
        Workflow(
            "json-transform",
            "JSON transform",
            "Builds a new object by picking values from a document with dotted paths (e.g. user.name, items.0.id).",
            {
                "type": "object",
                "required": ["document", "mapping"],
                "properties": {
                    "document": {"type": ["object", "array"]},
                    "mapping": {
                        "type": "object",
                        "maxProperties": 100,
                        "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                },
                "additionalProperties": False,
            },
            json_transform,
            {
                "document": {"user": {"name": "Ada", "langs": ["en", "fr"]}},
                "mapping": {"name": "user.name", "first_lang": "user.langs.0"},
            },
        ),
        Workflow(
            "delay",
            "Delay",
            "Waits the given number of seconds (0–30), then succeeds. Handy for testing polling and cancellation.",
            {
                "type": "object",
                "required": ["seconds"],
                "properties": {"seconds": {"type": "integer", "minimum": 0, "maximum": 30}},
                "additionalProperties": False,
            },
            delay,
            {"seconds": 2},
        ),
    )
}


def get(workflow_id: str) -> Workflow | None:
    return CATALOGUE.get(workflow_id)


def listing() -> dict:
    """The catalogue as `GET /v1/workflows` (and its sandbox twin) shows it."""
    return {"data": [w.to_dict() for w in CATALOGUE.values()]}


def read(workflow_id: str) -> dict:
    """One workflow as `GET /v1/workflows/{workflow_id}` shows it, or NotFound (404)."""
    workflow = get(workflow_id)
    if workflow is None:
        raise problems.NotFound(f"No workflow {workflow_id!r}.")
    return workflow.to_dict()


def for_input(workflow_id: str, data: dict) -> Workflow:
    """The workflow a new job names, once its input matches the workflow's schema; a job of an
    unknown workflow or with a bad input is a 400."""
    workflow = get(workflow_id)
    if workflow is None:
        raise UnknownWorkflow(f"No workflow {workflow_id!r}; GET /v1/workflows lists them.")
    errors = workflow.validation_errors(data)
    if errors:
        raise InvalidJobInput(f"The input does not match the {workflow_id} workflow's schema.", errors=errors)
    return workflow

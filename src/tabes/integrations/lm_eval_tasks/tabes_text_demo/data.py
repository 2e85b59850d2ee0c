"""The documents of the ``tabes_text_demo`` task: the shipped test split, or any JSONL of the same format."""

from __future__ import annotations

import json
from pathlib import Path


def load_docs(data_file: str | None = None, **_: object):
    """A ``DatasetDict`` with one ``test`` split of ``{"question", "answer", "result"}`` records."""
    import datasets

    path = Path(data_file) if data_file else Path(__file__).with_name("test.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

"""A sentencepiece tokenizer trained on the catalog corpus of all locales, kept as bytes in the bundle."""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm

VOCAB_SIZE = 1500
MAX_TOKENS = 96
PAD_ID = 0


def catalog_document(record: dict) -> str:
    """The text the model reads from a catalog record: category, title, bullets, description."""
    return " | ".join([record["category"], record["title"], *record["bullet_points"], record["description"]])


def train_tokenizer(documents: Iterable[str], vocab_size: int = VOCAB_SIZE) -> bytes:
    """Train a unigram model in memory; returns the serialized model."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(documents), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        # Japanese needs near-full character coverage or its kanji all map to <unk>.
        character_coverage=0.9995, pad_id=PAD_ID, unk_id=1, bos_id=-1, eos_id=-1,
        hard_vocab_limit=False, num_threads=2, minloglevel=2,
    )
    return model.getvalue()


class Tokenizer:
    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, documents: list[str], max_tokens: int = MAX_TOKENS) -> np.ndarray:
        """Token ids int64 [len(documents), max_tokens], right-padded with PAD_ID, truncated."""
        ids = np.full((len(documents), max_tokens), PAD_ID, dtype=np.int64)
        for i, pieces in enumerate(self._sp.encode(documents)):
            pieces = pieces[:max_tokens]
            ids[i, :len(pieces)] = pieces
        return ids

"""The three classifiers of a classification run, all on the same sentence embedder.

* :class:`ZeroShot` (the run's base): cosine similarity of a text's embedding to each label
  name's embedding; no labelled example is used.
* :func:`train_logreg` (method ``logreg``): a logistic-regression head on the frozen embedder.
* :func:`train_setfit` (method ``setfit``): SetFit (Tunstall et al. 2022) with the ``setfit``
  library: the embedder is tuned contrastively on pairs of the labelled examples (same label ->
  cosine 1, different -> 0, CosineSimilarityLoss), then the same head is fitted on the tuned
  embeddings. The difference to ``logreg`` at the same size and seed is what tuning buys.

Both heads see L2-normalised embeddings, so they differ only in the embedder.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curatune.classify.config import HeadSettings, SetFitSettings
from curatune.errors import ModelError

#: Texts per forward pass when embedding (memory stays small on a CPU).
ENCODE_BATCH = 32


class TextEncoder:
    """L2-normalised embeddings of texts cut to ``max_length`` tokens."""

    def __init__(self, model: Any, max_length: int):
        self.model = model
        self.model.max_seq_length = max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=ENCODE_BATCH, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class ZeroShot:
    """Each text gets the label whose name (in ``template``) it is most similar to."""

    def __init__(self, encoder: TextEncoder, classes: list[str], label_names: dict[str, str], template: str):
        self.classes = list(classes)
        self.prompts = [template.format(label=label_names.get(c, c)) for c in self.classes]
        self.label_vectors = encoder.encode(self.prompts)

    def predict(self, embeddings: np.ndarray) -> list[str]:
        similarity = embeddings @ self.label_vectors.T
        return [self.classes[i] for i in similarity.argmax(axis=1)]


def make_head(settings: HeadSettings, seed: int):
    from sklearn.linear_model import (
        LogisticRegression,  # heavy import; only classification runs need it
    )

    return LogisticRegression(C=settings.C, max_iter=settings.max_iter, random_state=seed)


@dataclass
class CellOutcome:
    """What a trained cell predicts on the test split, and what training cost."""

    predictions: list[str]
    train_seconds: float
    predict_seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    head: Any = None
    body: Any = None


def train_logreg(train_vectors: np.ndarray, train_labels: Sequence[str], test_vectors: np.ndarray,
                 head: HeadSettings, seed: int) -> CellOutcome:
    start = time.perf_counter()
    classifier = make_head(head, seed).fit(train_vectors, list(train_labels))
    trained = time.perf_counter()
    predictions = [str(p) for p in classifier.predict(test_vectors)]
    return CellOutcome(predictions, trained - start, time.perf_counter() - trained,
                       {"head_iterations": int(np.max(classifier.n_iter_))}, head=classifier)


def train_setfit(body: Any, train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str],
                 settings: SetFitSettings, head: HeadSettings, seed: int, work_dir: Path) -> CellOutcome:
    """Contrastive tuning of ``body`` (a fresh SentenceTransformer; it is changed) and a head, with setfit."""
    # setfit and datasets load torch and transformers: only a classification sweep imports them.
    from datasets import Dataset
    try:
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError:
        raise ModelError("setfit cells need the setfit package: pip install 'curatune[classify]' "
                         "(or leave setfit out of classify.methods)") from None

    classes = sorted(set(train_labels))
    index = {c: i for i, c in enumerate(classes)}
    model = SetFitModel(model_body=body, model_head=make_head(head, seed), normalize_embeddings=True)
    args = TrainingArguments(
        output_dir=str(work_dir), batch_size=settings.batch_size, num_epochs=settings.epochs,
        num_iterations=settings.num_iterations, body_learning_rate=settings.learning_rate,
        max_length=settings.max_length, seed=seed, show_progress_bar=False, report_to="none",
        save_strategy="no", eval_strategy="no", logging_strategy="no",
    )
    train = Dataset.from_dict({"text": list(train_texts), "label": [index[label] for label in train_labels]})
    trainer = Trainer(model=model, args=args, train_dataset=train)
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)  # setfit's scratch folder (no checkpoints are saved)
    trained = time.perf_counter()
    body.max_seq_length = settings.max_length
    predicted = model.predict(list(test_texts), batch_size=ENCODE_BATCH, as_numpy=True)
    predictions = [classes[int(i)] for i in predicted]
    # setfit runs the contrastive phase on sentence-transformers' trainer (st_trainer).
    inner = trainer.st_trainer
    losses = [row["train_loss"] for row in inner.state.log_history if "train_loss" in row]
    info = {
        "pairs": len(inner.train_dataset),
        "steps": int(inner.state.global_step),
        "final_loss": float(losses[-1]) if losses else None,
        "trainable_parameters": int(sum(p.numel() for p in body.parameters() if p.requires_grad)),
    }
    return CellOutcome(predictions, trained - start, time.perf_counter() - trained, info, head=model.model_head,
                       body=body)

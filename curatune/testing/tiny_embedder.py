"""A tiny BERT sentence encoder (WordPiece tokenizer + random weights), built offline.

Tests distil static tables from it instead of the 22M-parameter MiniLM: the same code path
(transformers AutoModel/AutoTokenizer from a local folder, model2vec distillation) in a
second instead of minutes. Its vectors carry no meaning, only token identity.
"""
from __future__ import annotations

from pathlib import Path

_CORPUS = [
    "Extract the brand, colour and size from the product description as JSON.",
    "Is the Eiffel Tower in Paris? Yes. Can penguins fly? No. Do bees make honey?",
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the mat.",
    "A man is riding a bicycle down the road next to a red car and a blue bus.",
    "Summarize the following article in one sentence about weather, sports and music.",
    "0123456789 .,;:!?'\"()[]{}<>-_/\\+=*&%$#@",
]


def build_tiny_embedder(out_dir: str | Path, *, vocab_size: int = 300, hidden_size: int = 32, seed: int = 0) -> Path:
    """Write a tiny uncased BERT encoder + tokenizer to ``out_dir`` (safetensors) and return it."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out_dir = Path(out_dir)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_CORPUS * 10, trainer=trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=special, show_progress=False))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                  cls_token="[CLS]", mask_token="[MASK]", do_lower_case=True)
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden_size, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(out_dir, safe_serialization=True)
    return out_dir

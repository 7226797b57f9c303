"""Encoding texts with the text encoder a model name picks: OpenCLIP's, or a sentence-transformers model.

All embeddings are L2-normalised and computed in batches with a progress bar.
"""
import torch

from .clip_encoder import load_clip, resolve_clip_weights
from .sentence_encoder import load_sentence_transformer, resolve_sentence_transformer
from .weights import SENTENCE_TRANSFORMERS


def _encode_in_batches(encode_batch, texts, batch_size, desc):
    """[len(texts), D] L2-normalised ``encode_batch`` outputs, computed in batches with a progress bar."""
    from tqdm import tqdm

    chunks = []
    with tqdm(total=len(texts), desc=desc, unit="text") as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            chunks.append(torch.nn.functional.normalize(encode_batch(batch).float(), dim=-1).cpu())
            bar.update(len(batch))
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


@torch.no_grad()
def encode_texts(clip, tokenizer, texts, device="cpu", batch_size=256, desc="CLIP text"):
    """[len(texts), D] L2-normalised CLIP text embeddings, computed in batches with a progress bar."""
    return _encode_in_batches(lambda batch: clip.encode_text(tokenizer(batch).to(device)), texts, batch_size, desc)


@torch.no_grad()
def encode_sentences(encoder, texts, batch_size=256, desc="sentence-transformers text"):
    """[len(texts), D] L2-normalised embeddings by a ``SentenceTransformer``, as :func:`encode_texts` gives CLIP's."""
    return _encode_in_batches(lambda batch: encoder.encode(batch, convert_to_tensor=True, show_progress_bar=False),
                              texts, batch_size, desc)


def resolve_text_encoder(model, pretrained):
    """Check that the text encoder ``model`` names can be had here, building nothing; raises what loading it would."""
    if model.startswith(SENTENCE_TRANSFORMERS):
        return resolve_sentence_transformer(model)
    return resolve_clip_weights(model, pretrained)


def embed_texts(model, pretrained, texts, device="cpu", batch_size=256):
    """[len(texts), D] L2-normalised embeddings by the text encoder ``model`` names: a
    ``sentence-transformers:`` model, else OpenCLIP's ``model`` with weights ``pretrained``."""
    if model.startswith(SENTENCE_TRANSFORMERS):
        return encode_sentences(load_sentence_transformer(model, device=device), texts, batch_size=batch_size)
    clip, tokenizer = load_clip(model, pretrained, device=device)
    return encode_texts(clip, tokenizer, texts, device=device, batch_size=batch_size)

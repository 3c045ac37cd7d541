"""A Hugging Face folder's tokenizer.json as the run's tokenizer (bigjax.data.tokenizer.Tokenizer).

The post-processor in tokenizer.json wraps each text in the model's special tokens (BERT's
[CLS] ... [SEP]); Tokenizer.encode keeps them around the truncated text, so a row is what
`transformers`' AutoTokenizer gives with truncation to the same max_len. The folder's
tokenizer_config.json says how long a text the model was trained on (model_max_length).
"""
import os

import tokenizers

from bigjax.data.tokenizer import Tokenizer
from bigjax.errors import DataError
from bigjax.huggingface.architecture import Architecture, CONFIG_FILE, TOKENIZER_FILE


def read_tokenizer(folder: str, arch: Architecture) -> Tokenizer:
  """The folder's tokenizer; a DataError if it is missing, damaged, adds no special tokens, or
  does not have the word embeddings' vocabulary size."""
  path = os.path.join(folder, TOKENIZER_FILE)
  if not os.path.exists(path):
    has_vocab = any(os.path.exists(os.path.join(folder, n)) for n in ('vocab.txt', 'vocab.json'))
    hint = (': the folder has only a slow tokenizer\'s files; save a fast one with '
            'AutoTokenizer.from_pretrained(folder).save_pretrained(folder)') if has_vocab else ''
    raise DataError(f'{path}: no such file{hint}')
  try:
    tok = tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # tokenizers raises a bare Exception for bad JSON.
    raise DataError(f'{path}: cannot load the tokenizer ({e})') from None
  if tok.post_processor is None:
    raise DataError(f'{path}: has no post_processor, so it adds none of the special tokens '
                    f'({arch.model_type} models read [CLS]/<s> first); it is not the model\'s own tokenizer')
  tokenizer = Tokenizer(tok)
  if tokenizer.vocab_size != arch.vocab_size:
    raise DataError(f'{path}: {tokenizer.vocab_size} tokens, where {os.path.join(folder, CONFIG_FILE)} has '
                    f'vocab_size={arch.vocab_size} word embeddings: the tokenizer is another model\'s')
  return tokenizer

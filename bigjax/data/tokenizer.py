"""The run's tokenizer: BPE subwords or whole words, trained on the training split and saved
with the run.

Built on Hugging Face `tokenizers` (Rust, multithreaded): BPE over a Metaspace
pre-tokenizer, so decode(encode(text)) gives back the normalized text exactly; or a
word-level vocabulary (kind='word' splits on spaces, 'wordpunct' also splits off punctuation).
"""
import hashlib
import os
from typing import Iterable, Sequence

from etils import epath
import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from bigjax import files
from bigjax.errors import DataError

PAD, UNK, BOS, EOS, MASK = '<pad>', '<unk>', '<s>', '</s>', '<mask>'
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, MASK)  # PAD must be id 0: models treat 0 as padding.
PAD_ID = 0
FILENAME = 'tokenizer.json'


# Which end of a long text survives truncation. 'last' keeps a review's conclusion, which
# is where an LSTM's final state is read.
TRUNCATIONS = ('first', 'last')
# The order a model reads a text's tokens in. 'backward' (last token first) is ULMFiT's
# backward language model and classifier, which ensemble with the forward ones.
DIRECTIONS = ('forward', 'backward')


class Tokenizer:
  """Text <-> int32 ids (subwords or words, as trained)."""

  def __init__(self, tokenizer: tokenizers.Tokenizer):
    self._tok = tokenizer
    if tokenizer.token_to_id(PAD) != PAD_ID:
      raise DataError(f'tokenizer: {PAD!r} must have id {PAD_ID}')

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size()

  def encode(self, texts: Sequence[str], max_len: int, keep: str = 'first',
             direction: str = 'forward') -> list[np.ndarray]:
    """Token ids per text, truncated to its first (keep='first') or last `max_len` tokens in
    reading order, then in `direction`'s order ('backward': last token first)."""
    if keep not in TRUNCATIONS:
      raise ValueError(f'keep={keep!r}; use one of {TRUNCATIONS}')
    if direction not in DIRECTIONS:
      raise ValueError(f'direction={direction!r}; use one of {DIRECTIONS}')
    encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
    cut = (lambda ids: ids[:max_len]) if keep == 'first' else (lambda ids: ids[max(len(ids) - max_len, 0):])
    step = 1 if direction == 'forward' else -1
    return [np.asarray(cut(e.ids)[::step], np.int32) for e in encodings]

  def token_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  def tokens(self, ids: Iterable[int]) -> list[str]:
    """The vocabulary entries of ids, specials included (decode() drops them)."""
    return [self._tok.id_to_token(int(i)) for i in ids]

  def decode(self, ids: Iterable[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def fingerprint(self) -> str:
    """A hash of the whole tokenizer (vocabulary, merges, normalizer): what encoded text depends on."""
    return hashlib.sha256(self._tok.to_str().encode()).hexdigest()[:16]

  def save(self, directory: str) -> str:
    path = os.path.join(directory, FILENAME)
    # Written whole (a run killed mid-write leaves no half file), locally or in a bucket; the
    # text is what tokenizers' own save() writes.
    files.write_text(path, self._tok.to_str(pretty=True))
    return path

  @classmethod
  def load(cls, directory: str, remedy: str = 'delete it to retrain') -> 'Tokenizer':
    """The tokenizer saved in `directory`; a DataError naming the file, followed by `remedy`
    (what to do: the default suits a run that trains it again), if it is missing or damaged."""
    path = os.path.join(directory, FILENAME)
    try:
      return cls(tokenizers.Tokenizer.from_str(epath.Path(path).read_bytes().decode('utf-8')))
    except OSError as e:
      raise DataError(f'{path}: cannot load the tokenizer ({e.strerror or e}); {remedy}') from None
    except Exception as e:  # tokenizers raises a bare Exception for bad JSON.
      raise DataError(f'{path}: cannot load the tokenizer ({e}); {remedy}') from None


KINDS = ('bpe', 'word', 'wordpunct')


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, kind: str = 'bpe', lowercase: bool = True,
                    min_frequency: int = 2) -> Tokenizer:
  """Learns a vocabulary of at most `vocab_size` entries from `texts`.

  kind='bpe': subwords over whitespace-separated pieces (no unknown words, only unknown
  characters). kind='word': whole whitespace-separated words, the most frequent
  `vocab_size` with at least `min_frequency` occurrences; the rest map to <unk>. The
  PyTorch peers tokenize this way, so speed comparisons with them use it.
  kind='wordpunct': like 'word', but runs of letters/digits and runs of punctuation are
  separate tokens ("great!" -> "great", "!"), for raw text such as IMDB reviews.
  """
  if kind == 'bpe':
    tok = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False)
  elif kind in ('word', 'wordpunct'):
    tok = tokenizers.Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit() if kind == 'word' else pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix='##', cleanup=False)  # Joins words with single spaces.
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
  else:
    raise ValueError(f'unknown tokenizer kind {kind!r}; known: {KINDS}')
  steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
  tok.normalizer = normalizers.Sequence(steps)
  tok.train_from_iterator(texts, trainer=trainer)
  return Tokenizer(tok)

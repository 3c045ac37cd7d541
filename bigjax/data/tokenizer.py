"""The run's tokenizer: BPE subwords or whole words, trained on the training split and saved
with the run, or a pretrained model's (bigjax.huggingface), taken from its folder.

Built on Hugging Face `tokenizers` (Rust, multithreaded): BPE over a Metaspace
pre-tokenizer, so decode(encode(text)) gives back the normalized text exactly; or a
word-level vocabulary (kind='word' splits on spaces, 'wordpunct' also splits off punctuation).
A pretrained model's tokenizer.json has a post-processor that wraps each text in special tokens
(BERT's [CLS] ... [SEP], RoBERTa's <s> ... </s>): encode adds them around the kept tokens, so
a row is at most max_len ids, special ones included, as `transformers`' truncation gives.
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


# Which part of a long text survives truncation. 'last' keeps a review's conclusion, which
# is where an LSTM's final state is read; 'ends' keeps its first quarter and its last three
# quarters (Sun et al. 2019's head + tail, best for BERT on IMDB: the opening and the verdict).
TRUNCATIONS = ('first', 'last', 'ends')
# The order a model reads a text's tokens in. 'backward' (last token first) is ULMFiT's
# backward language model and classifier, which ensemble with the forward ones.
DIRECTIONS = ('forward', 'backward')


def truncate(ids: Sequence[int], room: int, keep: str) -> list[int]:
  """At most `room` of `ids`: the first ones, the last ones, or both ends (see TRUNCATIONS)."""
  ids = list(ids)
  if len(ids) <= room:
    return ids
  if keep == 'first':
    return ids[:room]
  if keep == 'last':
    return ids[len(ids) - room:]
  head = room // 4
  return ids[:head] + ids[len(ids) - (room - head):]


def special_ends(tokenizer: tokenizers.Tokenizer) -> tuple[list[int], list[int]]:
  """(the ids its post-processor puts before a single text, those after): ([], []) without one."""
  if tokenizer.post_processor is None:
    return [], []
  encoding = tokenizer.post_process(tokenizer.encode('a', add_special_tokens=False))
  text = [i for i, special in enumerate(encoding.special_tokens_mask) if not special]
  return encoding.ids[:text[0]], encoding.ids[text[-1] + 1:]


class Tokenizer:
  """Text <-> int32 ids (subwords or words, as trained, or a pretrained model's)."""

  def __init__(self, tokenizer: tokenizers.Tokenizer):
    # Truncation and padding are encode's business: a pretrained tokenizer.json may ask for its own.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    self._tok = tokenizer
    self._prefix, self._suffix = special_ends(tokenizer)
    if not self.pretrained and tokenizer.token_to_id(PAD) != PAD_ID:
      raise DataError(f'tokenizer: {PAD!r} must have id {PAD_ID}')

  @property
  def pretrained(self) -> bool:
    """Whether each text is wrapped in special tokens (a pretrained model's tokenizer)."""
    return self._tok.post_processor is not None

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size()

  @property
  def special_ends(self) -> tuple[list[int], list[int]]:
    return list(self._prefix), list(self._suffix)

  def encode(self, texts: Sequence[str], max_len: int, keep: str = 'first',
             direction: str = 'forward') -> list[np.ndarray]:
    """Token ids per text: at most `max_len`, special tokens included, the text's tokens cut as
    `keep` says (TRUNCATIONS) in reading order, then in `direction`'s order ('backward': last
    token first)."""
    if keep not in TRUNCATIONS:
      raise ValueError(f'keep={keep!r}; use one of {TRUNCATIONS}')
    if direction not in DIRECTIONS:
      raise ValueError(f'direction={direction!r}; use one of {DIRECTIONS}')
    room = max_len - len(self._prefix) - len(self._suffix)
    if room < 1:
      raise ValueError(f'max_len={max_len} leaves no room for text between the special tokens '
                       f'{self.tokens(self._prefix + self._suffix)}')
    encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
    step = 1 if direction == 'forward' else -1
    return [np.asarray((self._prefix + truncate(e.ids, room, keep) + self._suffix)[::step], np.int32)
            for e in encodings]

  def special_ids(self) -> list[int]:
    """The ids of the special tokens (padding, [CLS], <unk>...): never a text's own words."""
    return sorted(i for i, token in self._tok.get_added_tokens_decoder().items() if token.special)

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


def tokenizer_file_path(path: str) -> str:
  """data.tokenizer_file's tokenizer.json (the file, or the one in a folder); a DataError if there is none."""
  if epath.Path(path).is_dir():
    path = os.path.join(path, FILENAME)
  if not epath.Path(path).is_file():
    raise DataError(f'data.tokenizer_file={path}: no such file (a tokenizer.json, or a folder holding one)')
  return path


def from_file(path: str) -> Tokenizer:
  """A public tokenizer (data.tokenizer_file), used as it is: its post-processor's special tokens
  are added as a pretrained model's are, and its id 0 must be its padding token."""
  path = tokenizer_file_path(path)
  try:
    tokenizer = Tokenizer(tokenizers.Tokenizer.from_str(epath.Path(path).read_bytes().decode('utf-8')))
  except Exception as e:  # tokenizers raises a bare Exception for bad JSON.
    raise DataError(f'{path}: cannot load the tokenizer ({e})') from None
  padding = tokenizer.tokens([PAD_ID])[0] or ''
  if padding.strip('[]<>').lower() not in ('pad', 'padding'):
    raise DataError(f'{path}: id {PAD_ID} is {padding!r}; bigjax pads rows with id {PAD_ID}, so it must be the '
                    'padding token ([PAD] or <pad>)')
  return tokenizer


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

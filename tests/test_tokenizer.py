"""Subword tokenizer: round trip, vocabulary size, save/load, truncation."""
import numpy as np
import pytest

from bigjax.data import tokenizer as tok_lib

TEXTS = ["it 's a charming and often affecting journey .",
         'unflinchingly bleak and desperate',
         'the movie is a disaster from start to finish , really bad .',
         'a gorgeous , witty , seductive movie .'] * 20


def test_unseen_characters_become_unk_not_padding():
  tok = tok_lib.train_tokenizer(TEXTS, vocab_size=200)
  assert tok.vocab_size <= 200
  ids = tok.encode(['Unseen WORDS: zebra quokka!'], max_len=1000)[0]
  assert ids.dtype == np.int32 and (ids > 0).all()  # 0 is reserved for padding.
  unk = tok_lib.SPECIAL_TOKENS.index(tok_lib.UNK)
  assert (ids == unk).sum() >= 3  # ':', 'z', 'q', '!' were never seen in training.
  assert tok.decode(ids).startswith('unseen words')  # Lowercased, then rebuilt from subwords.


def test_exact_round_trip_of_normalized_text():
  tok = tok_lib.train_tokenizer(TEXTS, vocab_size=300)
  for text in TEXTS[:4]:
    assert tok.decode(tok.encode([text], 1000)[0]) == text


def test_save_load_encodes_identically(tmp_path):
  tok = tok_lib.train_tokenizer(TEXTS, vocab_size=150)
  tok.save(str(tmp_path))
  again = tok_lib.Tokenizer.load(str(tmp_path))
  for a, b in zip(tok.encode(TEXTS[:4], 50), again.encode(TEXTS[:4], 50)):
    np.testing.assert_array_equal(a, b)


def test_truncation_keeps_the_first_or_the_last_tokens():
  tok = tok_lib.train_tokenizer(TEXTS, vocab_size=150)
  full = tok.encode([TEXTS[2]], 1000)[0]
  np.testing.assert_array_equal(tok.encode([TEXTS[2]], 4)[0], full[:4])
  np.testing.assert_array_equal(tok.encode([TEXTS[2]], 4, keep='last')[0], full[-4:])
  np.testing.assert_array_equal(tok.encode([TEXTS[2]], 1000, keep='last')[0], full)  # Short texts stay whole.


def test_word_level_tokenizer_matches_a_split_on_spaces():
  tok = tok_lib.train_tokenizer(TEXTS, vocab_size=1000, kind='word', min_frequency=1)
  words = sorted({w for t in TEXTS for w in t.split()})
  assert tok.vocab_size == len(words) + len(tok_lib.SPECIAL_TOKENS)
  for text in TEXTS[:4]:
    ids = tok.encode([text], 1000)[0]
    assert len(ids) == len(text.split())
    assert tok.decode(ids) == text
  unk = tok_lib.SPECIAL_TOKENS.index(tok_lib.UNK)
  assert list(tok.encode(['a zebra'], 10)[0])[1] == unk


def test_backward_rows_are_the_forward_rows_truncated_in_reading_order_then_reversed():
  tok = tok_lib.train_tokenizer(TEXTS, vocab_size=150)
  full = tok.encode([TEXTS[2]], 1000)[0]
  np.testing.assert_array_equal(tok.encode([TEXTS[2]], 1000, direction='backward')[0], full[::-1])
  np.testing.assert_array_equal(tok.encode([TEXTS[2]], 4, direction='backward')[0], full[:4][::-1])
  np.testing.assert_array_equal(tok.encode([TEXTS[2]], 4, keep='last', direction='backward')[0], full[-4:][::-1])
  with pytest.raises(ValueError, match='direction'):
    tok.encode([TEXTS[2]], 4, direction='sideways')

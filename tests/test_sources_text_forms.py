"""Tests for bigjax.data.sources.text_forms: data.text_form, Penn Treebank tokens joined back
into plain text."""

import pytest

from bigjax.data import sources
from bigjax.data.sources import load_text_dataset
from bigjax.errors import DataError
from sources_helpers import _error, _lines, _shared, _write


def test_ptb_to_plain_undoes_the_treebank_tokens_that_change_tokens():
  ptb = ("they wo n't sit still , it 's moore 's -lrb- k-19 -RRB- writer\\/director "
         "`` great '' \\*\\*\\* ca n't i 'm we 've they 're you 'll he 'd")
  assert sources.ptb_to_plain(ptb) == (
      'they won\'t sit still , it\'s moore\'s ( k-19 ) writer/director " great " *** '
      "can't i'm we've they're you'll he'd")
  plain = "it's so laddish , and i'd care (more) than \"they\" can't"  # Plain text is left as it is.
  assert sources.ptb_to_plain(plain) == plain


def test_text_form_ptb_gives_every_split_the_plain_text(tmp_path):
  for split in ('train', 'dev', 'test'):
    _write(tmp_path / f'{split}.txt', ''.join(f"{i % 2} it does n't work -lrb- {split} {i} -rrb-\n"
                                              for i in range(6)))
  as_written = load_text_dataset(path=str(tmp_path))
  plain = load_text_dataset(path=str(tmp_path), text_form='ptb')
  for split in ('train', 'dev', 'test'):
    assert as_written.splits[split].texts[0] == f"it does n't work -lrb- {split} 0 -rrb-"
    assert plain.splits[split].texts == [f"it doesn't work ( {split} {i} )" for i in range(6)]
    assert plain.splits[split].labels.tolist() == as_written.splits[split].labels.tolist()
  test = sources.load_labelled_examples(str(tmp_path / 'test.txt'), label_names=['0', '1'], text_form='ptb')
  assert test.texts == plain.splits['test'].texts


def test_text_form_ptb_makes_sst2_negations_tokenize_as_plain_text():
  """What the option is for: the tokens of SST-2's `do n't` are those of plain `don't`."""
  from bigjax.data import tokenizer as tokenizer_lib
  sst2 = load_text_dataset(path=str(_shared('sst2')), text_form='ptb')
  train = sst2.splits['train'].texts
  assert not any(" n't" in t or '-lrb-' in t for t in train)
  assert sum(t.count("n't") for t in train) == 535  # The file's every `n't`, rejoined, none lost.
  plain_text = ["the film doesn't work, and i can't say it's (at all) good"]
  tokenizer = tokenizer_lib.train_tokenizer(plain_text, 100, kind='wordpunct', min_frequency=1)
  tokens = lambda text: tokenizer.tokens(tokenizer.encode([text], 64)[0])
  treebank = "the film does n't work , and i ca n't say it 's -lrb- at all -rrb- good"
  assert tokens(treebank) != tokens(plain_text[0])  # `does n ' t`, not `doesn ' t`.
  assert tokens(sources.ptb_to_plain(treebank)) == tokens(plain_text[0])
  assert '[UNK]' not in tokens(plain_text[0]) and '<unk>' not in tokens(plain_text[0])


def test_error_bad_text_form_value(tmp_path):
  path = _write(tmp_path / 'a.txt', _lines(10))
  message = _error(path=str(path), text_form='penn')
  assert "data.text_form='penn' is unknown" in message and "'plain', 'ptb'" in message
  with pytest.raises(DataError, match='text_form'):
    sources.load_labelled_examples(str(path), label_names=['0', '1'], text_form='penn')

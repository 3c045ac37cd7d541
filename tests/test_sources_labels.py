"""Tests for bigjax.data.sources.labels: string labels numbered, and a class needs training
examples unless data.num_classes declares it."""

import json

import pytest

from bigjax.data.sources import load_text_dataset
from sources_helpers import _error, _lines, _write


# ----------------------------------------------------------------------------
# String labels.


def test_csv_string_labels(tmp_path):
  _write(tmp_path / 'train.csv',
         'id,text,label\n'
         '1,"hello, world",pos\n'
         '2,"two\nlines",neg\n'
         '3,plain,pos\n')
  _write(tmp_path / 'dev.csv', 'text,label,id\nok,neg,4\n')
  _write(tmp_path / 'test.csv', 'label,text\npos,fine\n')
  ds = load_text_dataset(path=str(tmp_path))
  assert ds.splits['train'].texts == ['hello, world', 'two\nlines', 'plain']
  assert ds.splits['train'].labels.tolist() == [1, 0, 1]  # neg=0, pos=1
  assert ds.splits['dev'].labels.tolist() == [0]
  assert ds.splits['test'].labels.tolist() == [1]
  assert ds.num_classes == 2
  assert '0=neg, 1=pos' in ds.description


def test_jsonl_folder_string_and_int_labels(tmp_path):
  rows = [{'review': f'r{i}', 'stars': ['bad', 'good', 'ok'][i % 3]}
          for i in range(12)]
  _write(tmp_path / 'train.jsonl', '\n'.join(json.dumps(r) for r in rows))
  _write(tmp_path / 'dev.jsonl', '{"review": "d", "stars": "ok"}\n\n')
  _write(tmp_path / 'test.jsonl', '{"review": "t", "stars": "bad"}\n')
  ds = load_text_dataset(path=str(tmp_path), text_column='review',
                         label_column='stars')
  assert ds.num_classes == 3
  assert ds.splits['train'].labels.tolist() == [i % 3 for i in range(12)]
  assert ds.splits['dev'].labels.tolist() == [2]
  assert '0=bad, 1=good, 2=ok' in ds.description

  single = _write(tmp_path / 'one' / 'all.jsonl', ''.join(
      json.dumps({'text': f'x{i}', 'label': i % 2}) + '\n'
      for i in range(30)))
  ds = load_text_dataset(path=str(single))
  assert ds.num_classes == 2
  assert sum(len(s.texts) for s in ds.splits.values()) == 30


def test_error_string_label_not_in_train(tmp_path):
  _write(tmp_path / 'train.csv', 'text,label\na,pos\nb,neg\n')
  _write(tmp_path / 'test.csv', 'text,label\nc,neutral\n')
  message = _error(path=str(tmp_path))
  assert 'test.csv:2:' in message and "'neutral'" in message
  assert "['neg', 'pos']" in message


# ----------------------------------------------------------------------------
# Labels: a class needs training examples, unless data.num_classes declares it.


def test_num_classes_given_larger_than_data(tmp_path):
  _write(tmp_path / 'all.txt', _lines(30, k=2))
  ds = load_text_dataset(path=str(tmp_path / 'all.txt'), num_classes=4)
  assert ds.num_classes == 4


def test_error_label_out_of_range(tmp_path):
  _write(tmp_path / 'train.txt', _lines(10))
  _write(tmp_path / 'test.txt', '0 a\n1 b\n3 c\n')
  message = _error(path=str(tmp_path), num_classes=2)
  assert 'test.txt:3:' in message and '[0, 2)' in message
  assert 'num_classes' in message
  _write(tmp_path / 'test.txt', '-1 negative\n')
  message = _error(path=str(tmp_path))
  assert 'test.txt:1:' in message and 'label -1' in message


def test_error_single_class(tmp_path):
  message = _error(path=str(_write(tmp_path / 'a.txt', '0 a\n' * 20)))
  assert '1 class' in message and 'label_column' in message


@pytest.mark.parametrize('split', ['dev', 'test'])
def test_error_label_not_in_train(tmp_path, split):
  _write(tmp_path / 'train.txt', _lines(20))
  _write(tmp_path / 'dev.txt', '0 a\n1 b\n')
  _write(tmp_path / 'test.txt', '0 a\n1 b\n')
  _write(tmp_path / f'{split}.txt', '0 a\n7 seven\n1 b\n')
  message = _error(path=str(tmp_path))
  assert f'{split}.txt:2: label 7 does not occur in train' in message
  assert 'train.txt' in message and 'labels are 0, 1;' in message
  assert '--config.data.num_classes=8' in message
  # Declared classes may lack training examples; the range still holds.
  ds = load_text_dataset(path=str(tmp_path), num_classes=8)
  assert ds.num_classes == 8 and 7 in ds.splits[split].labels.tolist()
  message = _error(path=str(tmp_path), num_classes=5)
  assert f'{split}.txt:2:' in message and 'out of range [0, 5)' in message


def test_error_label_not_in_train_jsonl(tmp_path):
  _write(tmp_path / 'train.jsonl', ''.join(
      json.dumps({'text': f't{i}', 'label': i % 2}) + '\n' for i in range(10)))
  _write(tmp_path / 'dev.jsonl', '{"text": "d", "label": 2}\n')
  message = _error(path=str(tmp_path))
  assert 'dev.jsonl:1: label 2 does not occur in train' in message


def test_error_class_missing_in_train(tmp_path):
  # K is inferred as max label + 1 = 4, but no training example has label 2.
  _write(tmp_path / 'train.txt', '0 a\n1 b\n3 c\n1 d\n3 e\n0 f\n')
  _write(tmp_path / 'dev.txt', '0 a\n')
  _write(tmp_path / 'test.txt', '1 b\n')
  message = _error(path=str(tmp_path))
  assert 'train.txt:3: label 3 makes 4 classes' in message
  assert 'only 3 of them (labels 0, 1, 3)' in message
  assert '--config.data.num_classes=4' in message
  ds = load_text_dataset(path=str(tmp_path), num_classes=4)
  assert ds.num_classes == 4
  assert ds.splits['train'].labels.tolist() == [0, 1, 3, 1, 3, 0]


@pytest.mark.parametrize('label', ['1000000', '99999999999', '9' * 30,
                                   '9' * 5000])
def test_error_implausible_label(tmp_path, label):
  # Refused before anything is sized by K, and before int64/int32 overflow.
  path = _write(tmp_path / 'train.txt', f'0 a\n1 b\n{label} c\n' + _lines(20))
  message = _error(path=str(path))
  assert 'train.txt:3:' in message
  assert 'implausibl' in message or 'not a plausible class id' in message
  assert len(message) < 400  # a 5000-digit label is shown cut


def test_error_implausible_label_in_tables(tmp_path):
  rows = ''.join(f'row {i},{i % 2}\n' for i in range(10))
  path = _write(tmp_path / 'a.csv', f'text,label\n{rows}huge,{"9" * 40}\n')
  assert 'a.csv:12:' in _error(path=str(path))
  lines = [json.dumps({'text': f'r{i}', 'label': i % 2}) for i in range(10)]
  for label in ('1' + '0' * 30, '1e30', '9' * 5000):
    path = _write(tmp_path / 'a.jsonl', '\n'.join(
        lines + [f'{{"text": "huge", "label": {label}}}']))
    assert 'a.jsonl:11:' in _error(path=str(path))

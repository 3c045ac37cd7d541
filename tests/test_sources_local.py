"""Tests for bigjax.data.sources.local: .txt/.tsv/.csv/.jsonl files and folders, their DataErrors."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bigjax.data.sources import load_text_dataset
from sources_helpers import _IMDB_FILES, _LONG, _all_texts, _error, _imdb_tar, _lines, _shared, _write

_MIB = 1 << 20


# ----------------------------------------------------------------------------
# Real shared data.


def test_sst2_folder_exact_counts():
  ds = load_text_dataset(path=str(_shared('sst2')))
  assert set(ds.splits) == {'train', 'dev', 'test'}
  sizes = {s: len(v.texts) for s, v in ds.splits.items()}
  assert sizes == {'train': 6920, 'dev': 872, 'test': 1821}
  assert ds.num_classes == 2
  for split, counts in (('train', [3310, 3610]), ('dev', [428, 444]),
                        ('test', [912, 909])):
    labels = ds.splits[split].labels
    assert labels.dtype == np.int32 and labels.shape == (sizes[split],)
    assert np.bincount(labels).tolist() == counts
  first = ds.splits['train']
  assert first.texts[0].startswith('a stirring , funny')  # label cut off
  # The non-breaking spaces stay inside the text (split is on the label's
  # ASCII space only).
  nbsp = [t for t in first.texts if '\xa0' in t]
  assert len(nbsp) == 3 and all('\xa01\\/2' in t for t in nbsp)
  assert all(t == t.strip() for t in first.texts)
  assert 'sst2' in ds.description and '\n' not in ds.description


def test_mr_as_utf8_names_file_line_and_fix():
  message = _error(path=str(_shared('mr/all.txt')))
  assert 'all.txt:32:' in message  # first non-UTF-8 byte is on line 32
  assert 'e9' in message and 'utf-8' in message
  assert '--config.data.encoding=latin-1' in message


# ----------------------------------------------------------------------------
# Synthetic local formats.


def test_multiclass_folder(tmp_path):
  _write(tmp_path / 'train.txt', _lines(50, k=5))
  _write(tmp_path / 'dev.txt', '4 last class\n\n0 first class\n')
  _write(tmp_path / 'test.txt', '2 middle\r\n3 fourth\r\n')
  ds = load_text_dataset(path=str(tmp_path))
  assert ds.num_classes == 5
  assert ds.splits['train'].labels.tolist() == [i % 5 for i in range(50)]
  assert ds.splits['train'].texts[7] == 'sentence number 7'
  assert ds.splits['dev'].texts == ['last class', 'first class']
  assert ds.splits['dev'].labels.tolist() == [4, 0]
  assert ds.splits['test'].texts == ['middle', 'fourth']  # \r stripped
  assert ds.splits['test'].labels.tolist() == [2, 3]


def test_tsv_file(tmp_path):
  path = _write(tmp_path / 'data.tsv',
                'sentence\tlabel\n'
                'it \'s "great\t1\n'  # stray quote, as in GLUE
                + ''.join(f'text {i}\t{i % 3}\n' for i in range(20)))
  ds = load_text_dataset(path=str(path), text_column='sentence')
  assert ds.num_classes == 3
  texts = _all_texts(ds)
  assert texts['it \'s "great'] == 1
  assert sum(texts.values()) == 21


def test_csv_integer_string_labels(tmp_path):
  path = _write(tmp_path / 'all.csv', '\ufefftext,label\n' + ''.join(
      f'row {i},{i % 4}\n' for i in range(40)))
  ds = load_text_dataset(path=str(path))  # BOM before the header is ignored
  assert ds.num_classes == 4
  assert sum(len(s.texts) for s in ds.splits.values()) == 40


# ----------------------------------------------------------------------------
# Errors: what, where, what to do.


def test_error_nothing_given():
  message = _error()
  assert 'data.path' in message and 'data.name' in message


def test_error_missing_path(tmp_path):
  message = _error(path=str(tmp_path / 'nope.txt'))
  assert 'nope.txt' in message and 'does not exist' in message
  assert 'supported' in message


def test_error_empty_file(tmp_path):
  message = _error(path=str(_write(tmp_path / 'e.txt', b'')))
  assert 'e.txt' in message and 'empty file' in message


def test_error_empty_split(tmp_path):
  _write(tmp_path / 'train.txt', _lines(10))
  _write(tmp_path / 'dev.txt', '\n  \n\n')
  message = _error(path=str(tmp_path))
  assert 'dev.txt' in message and 'no examples' in message


def test_error_header_only_csv(tmp_path):
  message = _error(path=str(_write(tmp_path / 'a.csv', 'text,label\n')))
  assert 'a.csv' in message and 'no examples' in message


def test_error_non_integer_label(tmp_path):
  path = _write(tmp_path / 'all.txt', '1 fine\n0 also fine\npos not fine\n')
  message = _error(path=str(path))
  assert 'all.txt:3:' in message and "'pos'" in message
  assert 'LABEL text' in message


def test_error_label_without_text(tmp_path):
  message = _error(path=str(_write(tmp_path / 'a.txt', '1 ok\n0\n')))
  assert 'a.txt:2:' in message and 'no text' in message


def test_error_line_over_the_limit(tmp_path):
  # The limit only guards memory; its message names the key that sets it.
  long_line = '1 ' + 'x' * (_MIB + _MIB // 10) + '\n'
  path = _write(tmp_path / 'big.txt', '0 short\n' + long_line + '0 ok\n')
  message = _error(path=str(path), max_line_mb=1)
  assert 'big.txt:2:' in message and 'longer than data.max_line_mb=1 MiB' in message
  assert '--config.data.max_line_mb=2' in message
  archive = _imdb_tar(tmp_path / 'aclImdb_v1.tar.gz', {
      **_IMDB_FILES, 'aclImdb/train/pos/3_9.txt': long_line})
  message = _error(path=str(archive), max_line_mb=1)
  assert 'train/pos/3_9.txt:1:' in message and 'data.max_line_mb=1' in message
  assert 'max_line_mb=0 must be >= 1' in _error(path=str(path), max_line_mb=0)


def test_error_undecodable_bytes(tmp_path):
  path = _write(tmp_path / 'bad.tsv',
                b'text\tlabel\nok\t1\ncaf\xe9\t0\n' + b'fine\t1\n' * 20)
  message = _error(path=str(path))
  assert 'bad.tsv:3:' in message and 'e9' in message
  assert 'data.encoding' in message and 'latin-1' in message
  assert 'caf\xe9' in str(_all_texts(load_text_dataset(
      path=str(path), encoding='latin-1')))


def test_error_unknown_encoding(tmp_path):
  path = _write(tmp_path / 'a.txt', _lines(10))
  assert 'klingon' in _error(path=str(path), encoding='klingon')


def test_error_missing_column(tmp_path):
  path = _write(tmp_path / 'a.tsv', 'sentence\tlabel\nhi\t1\n')
  message = _error(path=str(path))
  assert 'a.tsv' in message and "'text'" in message
  assert "'sentence', 'label'" in message and 'data.text_column' in message
  path = _write(tmp_path / 'b.csv', 'text,y\nhi,1\n')
  message = _error(path=str(path))
  assert 'b.csv' in message and "'label'" in message and "'y'" in message


def test_error_csv_row_width(tmp_path):
  path = _write(tmp_path / 'a.csv', 'text,label\nhi,1\nto,o,many\n')
  message = _error(path=str(path))
  assert 'a.csv:3:' in message and '3 fields' in message


def test_error_bad_json_line(tmp_path):
  path = _write(tmp_path / 'a.jsonl',
                '{"text": "ok", "label": 1}\n{"text": "broken", \n')
  message = _error(path=str(path))
  assert 'a.jsonl:2:' in message and 'bad JSON' in message
  path = _write(tmp_path / 'b.jsonl', '{"txt": "ok", "label": 1}\n')
  message = _error(path=str(path))
  assert 'b.jsonl:1:' in message and "'txt'" in message
  path = _write(tmp_path / 'c.jsonl', '{"text": "ok", "label": null}\n')
  assert 'c.jsonl:1:' in _error(path=str(path))


def test_error_unknown_format(tmp_path):
  message = _error(path=str(_write(tmp_path / 'd.parquet', b'PAR1')))
  assert 'd.parquet' in message and 'supported' in message
  assert '.jsonl' in message and 'aclImdb' in message
  (tmp_path / 'empty_dir').mkdir()
  message = _error(path=str(tmp_path / 'empty_dir'))
  assert 'empty_dir' in message and 'supported' in message


def test_error_mixed_split_formats(tmp_path):
  _write(tmp_path / 'train.txt', _lines(10))
  _write(tmp_path / 'dev.csv', 'text,label\na,1\n')
  assert 'dev.csv' in _error(path=str(tmp_path))


# ----------------------------------------------------------------------------
# Long documents are ordinary input.


def _long_files(folder: Path, ext: str) -> Path:
  """A train file in `ext` whose third example is one ~1.1 MB line."""
  texts = ['short one', 'short two', _LONG] + [f'text {i}' for i in range(9)]
  if ext == '.txt':
    body = ''.join(f'{i % 2} {t}\n' for i, t in enumerate(texts))
  elif ext == '.jsonl':
    body = ''.join(json.dumps({'text': t, 'label': i % 2}) + '\n'
                   for i, t in enumerate(texts))
  else:
    sep = '\t' if ext == '.tsv' else ','
    body = f'text{sep}label\n' + ''.join(
        f'{t}{sep}{i % 2}\n' for i, t in enumerate(texts))
  return _write(folder / f'all{ext}', body)


@pytest.mark.parametrize('ext', ['.txt', '.csv', '.tsv', '.jsonl'])
def test_one_megabyte_line_loads(tmp_path, ext):
  limit = csv.field_size_limit()
  ds = load_text_dataset(path=str(_long_files(tmp_path, ext)))
  assert _all_texts(ds)[_LONG] == 1
  assert sum(len(s.texts) for s in ds.splits.values()) == 12
  # csv's field size limit is process-wide: raised only while parsing.
  assert csv.field_size_limit() == limit


def test_csv_field_size_limit_restored_after_an_error(tmp_path):
  limit = csv.field_size_limit()
  path = _write(tmp_path / 'a.csv', 'text,label\n"' + 'x' * 200_000 + ',1\n')
  assert 'a.csv' in _error(path=str(path))  # an unclosed quote
  assert csv.field_size_limit() == limit


def test_one_megabyte_line_trains(tmp_path):
  # The whole path: tokenizer training, truncation to max_len, batching.
  from bigjax import training  # pylint: disable=g-import-not-at-top
  from bigjax.data import from_config  # pylint: disable=g-import-not-at-top
  from test_train import tiny_config, write_corpus  # pylint: disable=g-import-not-at-top
  data = Path(write_corpus(str(tmp_path / 'data'), sizes=(60, 20, 20)))
  with open(data / 'train.txt', 'a', encoding='utf-8') as f:
    f.write(f'1 {_LONG}\n')
  config = tiny_config(data, **{'train.steps': 2, 'checkpoint.every_steps': 2,
                                'train.log_every_steps': 1})
  assert from_config.load_data(config.data, config.seed).splits['train'].texts[-1] == _LONG
  results = training.run_training(config, str(tmp_path / 'run'))
  assert 'test' in json.dumps(results)


# ----------------------------------------------------------------------------
# data.on_bad_lines: examples that are a label with no text.


_NO_TEXT = {
    '.txt': ('0 good\n1\n1 fine\n0   \n1 great\n', 2),
    '.tsv': ('text\tlabel\ngood\t0\n\t1\nfine\t1\n  \t0\ngreat\t1\n', 3),
    '.csv': ('text,label\ngood,0\n,1\nfine,1\n"  ",0\ngreat,1\n', 3),
    '.jsonl': ('{"text": "good", "label": 0}\n{"text": "", "label": 1}\n'
               '{"text": "fine", "label": 1}\n{"text": " ", "label": 0}\n'
               '{"text": "great", "label": 1}\n', 2),
}


@pytest.mark.parametrize('ext', sorted(_NO_TEXT))
def test_on_bad_lines(tmp_path, ext):
  body, line = _NO_TEXT[ext]
  _write(tmp_path / f'train{ext}', body)
  sep = '\t' if ext == '.tsv' else ','
  good = {'.txt': '0 a\n1 b\n',
          '.jsonl': '{"text": "a", "label": 0}\n'}.get(ext, f'text{sep}label\na{sep}0\n')
  _write(tmp_path / f'dev{ext}', good)
  _write(tmp_path / f'test{ext}', good)
  message = _error(path=str(tmp_path))  # on_bad_lines='error' by default
  assert f'train{ext}:{line}: label 1 has no text' in message
  assert '--config.data.on_bad_lines=skip' in message
  ds = load_text_dataset(path=str(tmp_path), on_bad_lines='skip')
  assert ds.splits['train'].texts == ['good', 'fine', 'great']
  assert ds.splits['train'].labels.tolist() == [0, 1, 1]
  unit = 'rows' if ext in ('.tsv', '.csv') else 'lines'
  assert (f'skipped 2 {unit} with no text in train{ext} '
          '(data.on_bad_lines=skip)') in ds.description
  assert ds.description.count('skipped') == 1  # dev and test had none


def test_on_bad_lines_skip_single_file_and_nothing_left(tmp_path):
  path = _write(tmp_path / 'all.txt', _lines(30) + '1\n0 \n1\n')
  ds = load_text_dataset(path=str(path), on_bad_lines='skip')
  assert sum(len(s.texts) for s in ds.splits.values()) == 30
  assert ('skipped 3 lines with no text in all.txt (data.on_bad_lines=skip)'
          in ds.description)
  assert 'skipped' not in load_text_dataset(
      path=str(_write(tmp_path / 'ok.txt', _lines(30))),
      on_bad_lines='skip').description
  _write(tmp_path / 'f' / 'train.txt', _lines(20))
  _write(tmp_path / 'f' / 'dev.txt', '1\n0\n')
  message = _error(path=str(tmp_path / 'f'), on_bad_lines='skip')
  assert 'dev.txt: no examples' in message and '2 lines with no text' in message


def test_error_bad_on_bad_lines_value(tmp_path):
  path = _write(tmp_path / 'a.txt', _lines(10))
  message = _error(path=str(path), on_bad_lines='warn')
  assert "data.on_bad_lines='warn' is unknown" in message
  assert "'error', 'skip'" in message

#!/usr/bin/env python3
"""Peer baseline: fastText supervised on IMDB, from the archive to a test accuracy, timed.

A standalone script for a Python that has fasttext-wheel and numpy (it imports nothing of
bigjax), the IMDB counterpart of ../shared/peers/fasttext_sst2.py:

  python benchmarks/fasttext_imdb.py --archive=../shared/data/imdb/aclImdb_v1.tar.gz \
      --epochs=5,10 --lr=0.1,0.25,0.5,1.0          # the grid; the best dev pair is reported
  python benchmarks/fasttext_imdb.py --epochs=10 --lr=0.5   # one run: launch to result

It reads the archive in plain Python and splits it as bigjax does (reviews sorted by
member name, `<br />` removed; dev = 2,500 train reviews chosen by
numpy.random.default_rng(0).permutation, train = the other 22,500; test = the 25,000 test
reviews), and tokenizes as bigjax's wordpunct tokenizer does (lowercase; runs of word
characters, and runs of other non-space characters). Accuracy comes from model.test()
(precision@1 with one label per line is accuracy). The last line printed is one JSON
object with the times of each phase; wall_s runs from the start of main() (the interpreter
start and `import fasttext`, ~0.2 s, are not in it).
"""
import argparse
import json
import os
import re
import shutil
import tarfile
import tempfile
import time

import numpy as np

MEMBER = re.compile(r'aclImdb/(train|test)/(neg|pos)/[^/]+\.txt$')
TOKEN = re.compile(r'\w+|[^\w\s]+')


def read_archive(path: str):
  """{'train': [(name, label, text)], 'test': [...]}, each sorted by member name."""
  found = {'train': [], 'test': []}
  with tarfile.open(path, mode='r:gz') as tar:
    for member in tar:
      match = MEMBER.search(member.name)
      if member.isfile() and match:
        text = tar.extractfile(member).read().decode('utf-8').replace('<br />', ' ')
        found[match.group(1)].append((member.name, int(match.group(2) == 'pos'), text))
  return {split: sorted(rows) for split, rows in found.items()}


def carve_dev(train: list, fraction: float = 0.1, seed: int = 0):
  """bigjax's carve (bigjax/data/sources/splits.py): the first round(fraction * n) of a seeded permutation."""
  perm = np.random.default_rng(seed).permutation(len(train))
  count = max(1, int(round(fraction * len(train))))
  return [train[i] for i in np.sort(perm[count:])], [train[i] for i in np.sort(perm[:count])]


def write_fasttext(rows: list, path: str) -> int:
  tokens = 0
  with open(path, 'w', encoding='utf-8') as f:
    for _, label, text in rows:
      words = TOKEN.findall(text.lower())
      tokens += len(words)
      f.write(f'__label__{label} {" ".join(words)}\n')
  return tokens


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--archive', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared',
                                                   'data', 'imdb', 'aclImdb_v1.tar.gz'))
  p.add_argument('--dim', type=int, default=100)
  p.add_argument('--epochs', default='10', help='comma-separated grid')
  p.add_argument('--lr', default='0.5', help='comma-separated grid')
  p.add_argument('--word_ngrams', type=int, default=2)
  p.add_argument('--bucket', type=int, default=2000000)
  p.add_argument('--seed', type=int, default=1)
  p.add_argument('--threads', type=int, default=2)
  p.add_argument('--json_out', default='')
  args = p.parse_args()
  import fasttext  # pylint: disable=g-import-not-at-top (the helpers above are tested without it)
  start = time.perf_counter()
  splits = read_archive(args.archive)
  train, dev = carve_dev(splits['train'])
  read_s = time.perf_counter() - start

  tmp = tempfile.mkdtemp(prefix='ft_imdb_')
  paths = {name: os.path.join(tmp, f'{name}.txt') for name in ('train', 'dev', 'test')}
  tokens = {name: write_fasttext(rows, paths[name]) for name, rows in
            (('train', train), ('dev', dev), ('test', splits['test']))}
  tokenize_s = time.perf_counter() - start - read_s

  runs = []
  for epoch in [int(e) for e in args.epochs.split(',')]:
    for lr in [float(x) for x in args.lr.split(',')]:
      t0 = time.perf_counter()
      model = fasttext.train_supervised(input=paths['train'], dim=args.dim, epoch=epoch, lr=lr,
                                        wordNgrams=args.word_ngrams, bucket=args.bucket, minCount=1, loss='softmax',
                                        thread=args.threads, seed=args.seed, verbose=0)
      train_s = time.perf_counter() - t0
      t0 = time.perf_counter()
      record = {'epoch': epoch, 'lr': lr, 'dev_acc': round(model.test(paths['dev'])[1], 4),
                'test_acc': round(model.test(paths['test'])[1], 4), 'train_s': round(train_s, 2),
                'eval_s': round(time.perf_counter() - t0, 2)}
      runs.append(record)
      del model  # Frees the (bucket + vocabulary) x dim matrix before the next run.
      print(json.dumps(record), flush=True)
  shutil.rmtree(tmp)
  best = max(runs, key=lambda r: r['dev_acc'])  # The first of equals.
  result = {'peer': 'fasttext_imdb', 'threads': args.threads, 'seed': args.seed,
            'config': {k: v for k, v in vars(args).items() if k not in ('archive', 'json_out')},
            'examples': {'train': len(train), 'dev': len(dev), 'test': len(splits['test'])}, 'tokens': tokens,
            'best_epoch': best['epoch'], 'best_lr': best['lr'], 'dev_acc': best['dev_acc'],
            'test_acc': best['test_acc'], 'read_s': round(read_s, 2), 'tokenize_s': round(tokenize_s, 2),
            'train_s': best['train_s'], 'wall_s': round(time.perf_counter() - start, 2), 'grid': runs}
  line = json.dumps(result)
  if args.json_out:
    with open(args.json_out, 'w', encoding='utf-8') as f:
      f.write(line + '\n')
  print(line)


if __name__ == '__main__':
  main()

"""Starting a run from another run's parameters (finetuning, ULMFiT, distillation students).

`merge_params` copies every leaf of a fresh initialization from a source tree, where path,
shape and dtype agree; leaves matched by a drop pattern keep their fresh values (the output
layer when the class count differs). Anything else that differs is an error naming it:
silently keeping a random leaf would train a different model than the one asked for.
"""
import re
from typing import Sequence

import jax
import numpy as np

from bigjax.errors import ConfigError


def leaf_paths(tree) -> dict:
  """{'module/name': leaf} for a nested dict of parameters."""
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def merge_params(fresh, source, *, drop: Sequence[str] = (), source_name: str = 'the source run',
                 flag: str = 'init.checkpoint'):
  """(params, record): `fresh` with every leaf not dropped copied from `source`.

  drop: regular expressions searched in each leaf's path ('head/kernel').
  record: {'copied': [...], 'dropped': [...], 'unused': [...]} (unused: source leaves this
  model has no place for, e.g. a language model's output layer).
  flag: the config key that named the source, for the error messages.
  """
  patterns = [re.compile(p) for p in drop]
  fresh_leaves, source_leaves = leaf_paths(fresh), leaf_paths(source)
  copied, dropped, problems = [], [], []
  for path, leaf in fresh_leaves.items():
    if any(p.search(path) for p in patterns):
      dropped.append(path)
    elif path not in source_leaves:
      problems.append(f'{path} is not in {source_name}')
    elif np.shape(source_leaves[path]) != np.shape(leaf) or np.dtype(source_leaves[path].dtype) != np.dtype(
        leaf.dtype):
      theirs = source_leaves[path]
      problems.append(f'{path} is {np.dtype(leaf.dtype).name}{list(np.shape(leaf))} here, '
                      f'{np.dtype(theirs.dtype).name}{list(np.shape(theirs))} in {source_name}')
    else:
      copied.append(path)
  if problems:
    shown = '; '.join(problems[:6]) + (f'; and {len(problems) - 6} more' if len(problems) > 6 else '')
    raise ConfigError(f'{flag}: {len(problems)} parameter(s) cannot be copied: {shown}. Keep them as '
                      'initialized with init.drop=REGEX,... (e.g. --config.init.drop=^head/ for a new output layer)')
  if not copied:
    raise ConfigError(f'{flag}: nothing to copy from {source_name} (every leaf is dropped by init.drop)')
  unused = sorted(set(source_leaves) - set(fresh_leaves))
  flat, treedef = jax.tree_util.tree_flatten_with_path(fresh)
  keys = list(fresh_leaves)
  merged = [np.asarray(source_leaves[key]) if key in copied else leaf for key, (_, leaf) in zip(keys, flat)]
  params = jax.tree_util.tree_unflatten(treedef, merged)
  return params, {'copied': copied, 'dropped': dropped, 'unused': unused}


EMBEDDING_TABLE = ('embedding', 'embedding')  # params[module][name] of every bigjax model's token table.


def with_word_vectors(params, vectors: np.ndarray, found: np.ndarray, init_table):
  """params with the token table's rows that have a pretrained vector replaced.

  init_table(table, vectors, found) -> table (bigjax.pretrain.embeddings.init_embedding_table).
  """
  module, name = EMBEDDING_TABLE
  params = dict(params)
  params[module] = dict(params[module])
  params[module][name] = jax.numpy.asarray(init_table(params[module][name], vectors, found))
  return params

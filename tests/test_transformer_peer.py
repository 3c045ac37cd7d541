"""The Transformer speed race (benchmarks.transformer_speed) at a toy size: both sides run and do the same work."""
import json
import sys

import pytest


def test_transformer_race_reports_both_sides_doing_the_same_work(tmp_path):
  pytest.importorskip('torch', reason='torch is not installed here (pip install -e ".[peers]")')
  pytest.importorskip('transformers', reason='transformers is not installed here (pip install -e ".[peers]")')
  from benchmarks import transformer_speed  # pylint: disable=import-outside-toplevel
  setup = transformer_speed.SIZES['tiny']
  results = transformer_speed.race(setup, peer_python=sys.executable, rounds=1, steps=2, warmup_steps=1, threads=1,
                                   bf16=False, peers=['torch_same_allocator'], ceiling_n=128, ceiling_s=0.05)
  transformer_speed.write(results, transformer_speed.markdown(results), str(tmp_path / 'race.json'),
                          str(tmp_path / 'race.md'))
  saved = json.loads((tmp_path / 'race.json').read_text())
  bigjax, torch = saved['runs']['bigjax_float32'][0], saved['runs']['torch_same_allocator'][0]
  assert bigjax['tokens_per_s'] > 0 and torch['tokens_per_s'] > 0
  # BertForSequenceClassification's parameters are bigjax's, tensor for tensor (the MLM head is not built).
  assert bigjax['parameters'] == torch['parameters'] == saved['same_work']['parameters'] == 4450
  tokens = setup.batch_size * setup.seq_len  # Every row full, on both sides.
  assert bigjax['tokens_per_step'] == torch['tokens_per_step'] == tokens
  assert saved['configuration']['torch_attention'] == 'sdpa'  # transformers' default, as the race claims.
  assert saved['ratios']['bigjax_float32_vs_torch_same_allocator'] > 0
  assert 0 < saved['fraction_of_ceiling']['bigjax_float32'] < 1
  summary = (tmp_path / 'race.md').read_text()
  assert 'bigjax_float32' in summary and 'torch_same_allocator' in summary and 'Headline' in summary

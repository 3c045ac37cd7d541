"""The finetuning peer (benchmarks.torch_peer_finetune) and its speed race (benchmarks.finetune_speed), smoke-sized.

The SST-2 peer runs on the real all-MiniLM-L6-v2 folder (../shared/models) for two steps; the race
runs on a one-layer BERT folder written here, so that both sides compile and step in seconds.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import finetune_race
from benchmarks import step_race
from bigjax import experiment

MINILM = os.path.join(os.path.dirname(step_race.ROOT), 'shared', 'models', 'all-MiniLM-L6-v2')


def needs_peer_packages():
  pytest.importorskip('torch', reason='torch is not installed here (pip install -e ".[peers]")')
  pytest.importorskip('transformers', reason='transformers is not installed here (pip install -e ".[peers]")')


def bigjax_parameters(model_dir: str) -> int:
  """Parameters of bigjax's `transformer` with the folder's architecture, from shapes alone (nothing compiled)."""
  arch = finetune_race.architecture(model_dir)
  config = finetune_race.bigjax_config(arch, finetune_race.setup_for(arch, '1x8'), 'float32', 1, 5e-5)
  module = experiment.build_model(config.model, arch['vocab_size'], step_race.NUM_CLASSES)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.ones((1, 8), jnp.int32), jnp.full((1,), 8, jnp.int32))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))


def test_the_peers_text_reader_imports_no_jax():
  # The peer reads SST-2 through bigjax.data.sources (data.text_form='ptb'), and must stay a torch-only process.
  code = 'import sys; from bigjax.data import sources; print("jax" in sys.modules)'
  done = subprocess.run([sys.executable, '-c', code], cwd=step_race.ROOT, capture_output=True, text=True, check=True)
  assert done.stdout.strip() == 'False'


def test_sst2_peer_finetunes_minilm_and_reports_its_recipe(shared_data, tmp_path):
  needs_peer_packages()
  if not os.path.isfile(os.path.join(MINILM, 'model.safetensors')):
    pytest.skip(f'the pretrained model folder {MINILM} is absent (../shared/models beside the project root)')
  out = tmp_path / 'peer.json'
  done = subprocess.run(
      [sys.executable, '-m', 'benchmarks.torch_peer_finetune', f'--model_dir={MINILM}',
       f'--data_dir={shared_data / "sst2"}', '--limit=8', '--eval_limit=8', '--max_len=16', '--batch_size=4',
       '--epochs=1', '--threads=1', f'--json_out={out}'],
      cwd=step_race.ROOT, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(done.stdout.strip().splitlines()[-1])  # The last line printed is the report.
  assert report == json.loads(out.read_text())
  for key in ('test_accuracy', 'dev_accuracy'):
    assert 0 <= report[key] <= 1
  assert report['best_epoch'] == 1 and report['train_seconds'] > 0 and report['tokens_per_second'] > 0
  assert report['examples'] == {'train': 8, 'dev': 8, 'test': 8}
  assert report['train_tokens'] <= report['padded_tokens'] <= 8 * 16  # [CLS] ... [SEP], cut to 16 tokens.
  recipe = report['recipe']
  assert recipe['total_steps'] == 2 and recipe['text_form'] == 'ptb' and recipe['batching'] == 'random'
  assert (recipe['learning_rate'], recipe['weight_decay'], recipe['clip_norm']) == (5e-5, 0.01, 1.0)
  assert report['attention'] == 'sdpa' and report['model_class'] == 'BertForSequenceClassification'
  # MiniLM's 22,713,216 and a new [384, 2] classifier; bigjax's model of the same architecture has as many.
  assert report['parameters'] == 22_713_216 + 384 * 2 + 2 == bigjax_parameters(MINILM)


def write_tiny_bert(folder: str) -> None:
  """A one-layer BERT folder as MiniLM's is laid out: a BertModel's weights (no classifier) and its config."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  config = transformers.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=32)
  torch.manual_seed(0)
  transformers.BertModel(config).save_pretrained(folder)


# Slow tier: the race's plumbing (benchmarks/step_race.py) is what test_transformer_peer.py's race
# runs in the default tier; this adds the folder's architecture on both sides (~25 s).
@pytest.mark.slow
def test_finetune_race_reports_both_sides_doing_the_same_work(tmp_path):
  needs_peer_packages()
  model_dir = str(tmp_path / 'tiny_bert')
  write_tiny_bert(model_dir)
  results = finetune_race.race(model_dir, ['2x8'], peer_python=sys.executable, rounds=1, steps=1,
                                warmup_steps=1, threads=1, bf16=False, peers=['torch_same_allocator'],
                                ceiling_n=128, ceiling_s=0.05)
  step_race.write(results, finetune_race.markdown(results), str(tmp_path / 'race.json'), str(tmp_path / 'race.md'))
  saved = json.loads((tmp_path / 'race.json').read_text())
  assert list(saved['shapes']) == ['2x8']
  parameters = bigjax_parameters(model_dir)
  for shape, tokens in (('2x8', 16),):
    s = saved['shapes'][shape]
    bigjax, torch = s['runs']['bigjax_float32'][0], s['runs']['torch_same_allocator'][0]
    assert bigjax['tokens_per_s'] > 0 and torch['tokens_per_s'] > 0
    assert s['parameters'] == {'bigjax_float32': parameters, 'torch_same_allocator': parameters}
    assert bigjax['tokens_per_step'] == torch['tokens_per_step'] == tokens  # Every row full, on both sides.
    assert s['ratios']['bigjax_float32_vs_torch_same_allocator'] > 0
    assert 0 < s['fraction_of_ceiling']['bigjax_float32'] < 1
  c = saved['configuration']
  assert (c['hidden'], c['layers'], c['heads'], c['intermediate'], c['max_positions']) == (16, 1, 2, 32, 32)
  assert c['torch_attention'] == 'sdpa' and c['no_decay'] == 'bias|norm'
  summary = (tmp_path / 'race.md').read_text()
  assert 'Headline' in summary and 'Parameters (must agree)' in summary

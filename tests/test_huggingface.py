"""Hugging Face folders in and out (bigjax.huggingface), against `transformers` itself.

Parity runs side by side with PyTorch `transformers` (the test extra installs its CPU build): the
shared MiniLM's hidden states and token ids, tiny random BERT, RoBERTa and DistilBERT
classifiers that transformers builds and saves here, and a finetuned MiniLM exported back.
Tests that need torch, or ../shared, skip saying so where it is absent.
"""
import json
import os
import shutil
import tarfile

import jax
import numpy as np
import pytest

from bigjax import huggingface
from bigjax import transfer
from bigjax.config import schema
from bigjax.data import sources
from bigjax.data.tokenizer import truncate
from bigjax.errors import DataError
from bigjax.huggingface import weights
from bigjax.models import registry
from experiments.configs import minilm_sst2
from tests.entry_points import run_cases

torch = pytest.importorskip('torch', reason='torch is not installed (the test extra installs its CPU build)')
transformers = pytest.importorskip('transformers', reason='transformers is not installed (the test extra has it)')

MINILM = minilm_sst2.MINILM
SHARED_DATA = os.path.dirname(os.path.dirname(MINILM.rstrip('/')))
needs_minilm = pytest.mark.skipif(not os.path.isdir(MINILM), reason=f'{MINILM} is absent (../shared/models)')
IMDB_ARCHIVE = os.path.join(SHARED_DATA, 'data', 'imdb', 'aclImdb_v1.tar.gz')


def _sst2_texts(count: int, split: str = 'test') -> list[str]:
  split = sources.load_text_dataset(path=os.path.join(SHARED_DATA, 'data', 'sst2'), text_form='ptb').splits[split]
  return list(split.texts[:count])


def _imdb_texts(count: int) -> list[str]:
  """The first `count` reviews in the archive (a streaming read stops there)."""
  texts = []
  with tarfile.open(IMDB_ARCHIVE, mode='r:gz') as tar:
    for member in tar:
      if member.isfile() and member.name.endswith('.txt') and ('/pos/' in member.name or '/neg/' in member.name):
        texts.append(tar.extractfile(member).read().decode('utf-8').replace('<br />', ' '))
        if len(texts) == count:
          break
  return texts


def _padded(rows, width: int = 0):
  lengths = np.asarray([len(r) for r in rows], np.int32)
  ids = np.zeros((len(rows), max(width, lengths.max())), np.int32)
  for i, row in enumerate(rows):
    ids[i, :len(row)] = row
  return ids, lengths


def _bigjax_model(folder: str, num_classes: int = 2, max_len: int = 128):
  """(model, params) of the folder as experiments.train builds them (configure, then the registry)."""
  config = schema.get_config()
  config.model.name, config.init.pretrained, config.data.max_len = 'transformer', folder, max_len
  config = huggingface.configure(config)
  arch = huggingface.read_architecture(folder)
  model = registry.from_section(config.model.to_dict(), vocab_size=arch.vocab_size, num_classes=num_classes)
  imported, record = huggingface.read_params(folder, arch, huggingface.unused_patterns(arch, ''))
  fresh = model.init(jax.random.PRNGKey(0), np.ones((1, 4), np.int32), np.full((1,), 4, np.int32))['params']
  drop = [f'^{module}/' for module in record['fresh']]
  return model, transfer.merge_params(fresh, imported, drop=drop)[0]


@pytest.fixture(scope='module')
def parity_texts():
  if not os.path.isdir(os.path.join(SHARED_DATA, 'data', 'sst2')) or not os.path.exists(IMDB_ARCHIVE):
    pytest.skip(f'{SHARED_DATA}/data is absent (../shared/data)')
  return _sst2_texts(64) + _imdb_texts(48)


@needs_minilm
def test_minilm_hidden_states_equal_transformers_over_sst2_and_imdb_texts(parity_texts):
  """112 texts (64 SST-2 sentences, 48 IMDB reviews cut to 128 tokens), one padded batch on each
  side: every real position's last hidden state within 1e-4 of transformers' BertModel."""
  model, params = _bigjax_model(MINILM)
  tokenizer = huggingface.read_tokenizer(MINILM, huggingface.read_architecture(MINILM))
  ids, lengths = _padded(tokenizer.encode(parity_texts, 128))
  ours = np.asarray(jax.jit(lambda p, i, n: model.apply({'params': p}, i, n, method='token_states'))(
      params, ids, lengths))
  reference = transformers.AutoModel.from_pretrained(MINILM).eval()
  mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int64)
  with torch.no_grad():
    theirs = reference(input_ids=torch.from_numpy(ids.astype(np.int64)),
                       attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  real = mask.astype(bool)
  assert len(parity_texts) >= 100 and lengths.max() == 128 and lengths.min() < 20  # Padded, truncated rows.
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)


@needs_minilm
@pytest.mark.parametrize('max_len', [16, 128])
def test_minilm_token_ids_equal_autotokenizers(parity_texts, max_len):
  """Special tokens and truncation included: AutoTokenizer(texts, truncation=True, max_length)."""
  ours = huggingface.read_tokenizer(MINILM, huggingface.read_architecture(MINILM)).encode(parity_texts, max_len)
  theirs = transformers.AutoTokenizer.from_pretrained(MINILM)(parity_texts, truncation=True, max_length=max_len)
  assert [row.tolist() for row in ours] == theirs['input_ids']


def _tiny_config(model_type: str, vocab_size: int, **extra):
  # RoBERTa's table has pad_token_id + 1 rows more than the positions a text can have (as roberta-base's 514).
  common = dict(vocab_size=vocab_size, max_position_embeddings=42 if model_type == 'roberta' else 40, num_labels=3)
  if model_type == 'distilbert':
    return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=48, **common, **extra)
  cls = transformers.BertConfig if model_type == 'bert' else transformers.RobertaConfig
  return cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             type_vocab_size=2 if model_type == 'bert' else 1, layer_norm_eps=1e-5 if model_type == 'roberta' else
             1e-12, pad_token_id=1 if model_type == 'roberta' else 0, **common, **extra)


def _roberta_tokenizer(folder: str, texts):
  """A byte-level BPE tokenizer of RoBERTa's kind, trained here, saved as transformers saves one."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(texts, vocab_size=400, special_tokens=['<s>', '<pad>', '</s>', '<unk>', '<mask>'])
  fast = transformers.RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token='<s>', eos_token='</s>',  # pylint: disable=protected-access
                                           unk_token='<unk>', pad_token='<pad>', mask_token='<mask>', sep_token='</s>',
                                           cls_token='<s>')
  fast.save_pretrained(folder)
  return fast


def _tiny_folder(tmp_path, model_type: str, texts) -> str:
  """A randomly initialized sequence classifier of `model_type`, saved by transformers with a tokenizer."""
  folder = str(tmp_path / model_type)
  if model_type == 'roberta':
    tokenizer = _roberta_tokenizer(folder, texts)
  else:
    tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM)
    tokenizer.save_pretrained(folder)
  torch.manual_seed(0)
  model = transformers.AutoModelForSequenceClassification.from_config(_tiny_config(model_type, len(tokenizer)))
  with torch.no_grad():  # Biases and LayerNorms away from their 0 / 1 start, so a swapped one shows.
    for name, value in model.named_parameters():
      if 'LayerNorm' in name or 'layer_norm' in name or name.endswith('bias'):
        value.add_(0.1 * torch.randn_like(value))
  model.save_pretrained(folder)
  return folder


@needs_minilm
@pytest.mark.parametrize('model_type', ['bert', 'roberta', 'distilbert'])
def test_tiny_random_classifiers_give_transformers_logits(tmp_path, parity_texts, model_type):
  folder = _tiny_folder(tmp_path, model_type, parity_texts)
  model, params = _bigjax_model(folder, num_classes=3, max_len=40)
  tokenizer = huggingface.read_tokenizer(folder, huggingface.read_architecture(folder))
  ids, lengths = _padded(tokenizer.encode(parity_texts[:40], 40))
  ours = np.asarray(model.apply({'params': params}, ids, lengths))
  reference = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
  mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int64)
  with torch.no_grad():
    theirs = reference(input_ids=torch.from_numpy(ids.astype(np.int64)),
                       attention_mask=torch.from_numpy(mask)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
  # The ids themselves are AutoTokenizer's.
  expected = transformers.AutoTokenizer.from_pretrained(folder)(parity_texts[:40], truncation=True, max_length=40)
  assert [row.tolist() for row in tokenizer.encode(parity_texts[:40], 40)] == expected['input_ids']


@needs_minilm
@pytest.mark.parametrize('model_type', ['bert', 'roberta', 'distilbert'])
def test_imported_parameters_are_written_back_unchanged(tmp_path, parity_texts, model_type):
  """to_tensors inverts read_params, key for key: the export's key table is the import's."""
  folder = _tiny_folder(tmp_path, model_type, parity_texts)
  arch = huggingface.read_architecture(folder)
  params, _ = huggingface.read_params(folder, arch, huggingface.unused_patterns(arch, ''))
  written = weights.to_tensors(params, arch)
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  stored = {k: v for k, v in load_file(os.path.join(folder, weights.WEIGHTS_FILE)).items()
            if not k.endswith('position_ids')}
  assert sorted(written) == sorted(stored)
  offset = arch.position_offset
  for key, value in stored.items():
    if offset and key.endswith('position_embeddings.weight'):  # Rows no token reads are written as zeros.
      np.testing.assert_array_equal(written[key][offset:], value[offset:])
    else:
      np.testing.assert_array_equal(written[key], value, err_msg=key)


def test_ends_truncation_keeps_the_first_quarter_and_the_last_three_quarters():
  ids = list(range(100))
  assert truncate(ids, 8, 'ends') == [0, 1, 94, 95, 96, 97, 98, 99]
  assert truncate(ids, 8, 'first') == list(range(8)) and truncate(ids, 8, 'last') == list(range(92, 100))
  assert truncate(ids[:5], 8, 'ends') == ids[:5]


# Bad input: each one error naming the file and what is wrong.


@pytest.fixture
def minilm_copy(tmp_path):
  """The shared MiniLM's small files, and its weights linked (never written to)."""
  if not os.path.isdir(MINILM):
    pytest.skip(f'{MINILM} is absent (../shared/models)')
  folder = tmp_path / 'minilm'
  folder.mkdir()
  for name in os.listdir(MINILM):
    source = os.path.join(MINILM, name)
    if os.path.isfile(source):
      if name == weights.WEIGHTS_FILE:
        os.symlink(source, folder / name)
      else:
        shutil.copyfile(source, folder / name)
  return folder


def _edit_json(path, **changes):
  value = json.loads(path.read_text())
  value.update(changes)
  path.write_text(json.dumps(value))


def test_an_unsupported_model_type_is_named(minilm_copy):
  _edit_json(minilm_copy / 'config.json', model_type='gpt2')
  with pytest.raises(DataError, match=r"config.json: model_type='gpt2' is not supported"):
    huggingface.read_architecture(str(minilm_copy))


def test_a_truncated_safetensors_file_is_named(minilm_copy):
  target = minilm_copy / weights.WEIGHTS_FILE
  data = open(os.path.realpath(target), 'rb').read(1 << 20)
  target.unlink()
  target.write_bytes(data)
  arch = huggingface.read_architecture(str(minilm_copy))
  with pytest.raises(DataError, match=r'model.safetensors: cannot read it as safetensors .*damaged or incomplete'):
    huggingface.read_params(str(minilm_copy), arch, huggingface.unused_patterns(arch, ''))


def test_a_tokenizer_of_another_vocabulary_size_is_named(minilm_copy):
  _edit_json(minilm_copy / 'config.json', vocab_size=30000)
  with pytest.raises(DataError, match=r'tokenizer.json: 30522 tokens, where .*config.json has vocab_size=30000'):
    huggingface.read_tokenizer(str(minilm_copy), huggingface.read_architecture(str(minilm_copy)))


def test_missing_leftover_and_misshapen_tensors_are_named(minilm_copy):
  folder = str(minilm_copy)
  _edit_json(minilm_copy / 'config.json', num_hidden_layers=7)
  arch = huggingface.read_architecture(folder)
  with pytest.raises(DataError, match=r'16 tensor\(s\) of a bert model with 7 layers are missing: '
                                      r'encoder.layer.6.attention.self.query.weight'):
    huggingface.read_params(folder, arch)
  _edit_json(minilm_copy / 'config.json', num_hidden_layers=5)
  arch = huggingface.read_architecture(folder)
  with pytest.raises(DataError, match=r'tensor\(s\) that a bert model of config.json does not have: '
                                      r'encoder.layer.5.'):
    huggingface.read_params(folder, arch, huggingface.unused_patterns(arch, ''))
  _edit_json(minilm_copy / 'config.json', num_hidden_layers=6, intermediate_size=1024)
  arch = huggingface.read_architecture(folder)
  with pytest.raises(DataError, match=r'encoder.layer.0.intermediate.dense.weight has shape \[1536, 384\]; '
                                      r'config.json makes it \[1024, 384\]'):
    huggingface.read_params(folder, arch, huggingface.unused_patterns(arch, ''))


def test_bad_folders_stop_the_train_command_before_any_data_with_one_line(minilm_copy, tmp_path):
  """Through experiments.train: exit status 2, one `error:` line, no run folder left behind, the
  user's folder as it was."""
  (minilm_copy / 'tokenizer.json').unlink()
  before = sorted(os.listdir(minilm_copy))
  common = ['--config=experiments/configs/minilm_sst2.py:tiny', f'--config.init.pretrained={minilm_copy}']
  outcomes = run_cases({
      'no_tokenizer': ('experiments.train', common + [f'--workdir={tmp_path}/a']),
      'not_a_folder': ('experiments.train', common[:1] + [f'--config.init.pretrained={tmp_path}/nothing',
                                                          f'--workdir={tmp_path}/b']),
      'too_long': ('experiments.train', common + ['--config.data.max_len=600', f'--workdir={tmp_path}/c']),
      'no_pooler': ('experiments.train', common + ['--config.model.transformer.pooler=False', f'--workdir={tmp_path}/d']),
  }, str(tmp_path))
  for name, outcome in outcomes.items():
    assert outcome['rc'] == 2, (name, outcome['output'][-2000:])
  errors = {name: [line for line in o['output'].splitlines() if line.startswith('error:')]
            for name, o in outcomes.items()}
  assert 'tokenizer.json: no such file: the folder has only a slow tokenizer' in errors['no_tokenizer'][0]
  assert 'nothing: no such folder' in errors['not_a_folder'][0]
  assert 'data.max_len=600 is more than the 512 positions' in errors['too_long'][0]
  assert 'model.transformer.pooler=False' in errors['no_pooler'][0] and '^pooler_dense/=freeze' in errors['no_pooler'][0]
  assert sorted(os.listdir(minilm_copy)) == before
  assert not any(os.path.exists(tmp_path / n / 'checkpoints') for n in 'abcd')


# A finetuned MiniLM, exported back.


@pytest.fixture(scope='module')
def finetuned(tmp_path_factory):
  """minilm_sst2.py:tiny trained (12 steps), then exported as a Hugging Face folder and as a bigjax artifact."""
  if not os.path.isdir(MINILM) or not os.path.isdir(os.path.join(SHARED_DATA, 'data', 'sst2')):
    pytest.skip('../shared/models or ../shared/data is absent')
  tmp = tmp_path_factory.mktemp('finetuned')
  run, hf, artifact = str(tmp / 'run'), str(tmp / 'hf'), str(tmp / 'artifact')
  card_data = tmp / 'card.txt'  # The bigjax artifact's card scores these (the round trip is tested on all of test).
  card_data.write_text(''.join(open(os.path.join(SHARED_DATA, 'data', 'sst2', 'test.txt')).readlines()[:64]))
  outcomes = run_cases({
      # One checkpoint (one dev evaluation) at the end of the 12 steps.
      'train': ('experiments.train', ['--config=experiments/configs/minilm_sst2.py:tiny', f'--workdir={run}',
                                      '--config.optim.learning_rate=1e-3', '--config.checkpoint.every_steps=12',
                                      '--config.train.eval_batch_size=256']),
      'hf': ('experiments.export', [f'--workdir={run}', f'--out={hf}', '--format=huggingface']),
      'artifact': ('experiments.export', [f'--workdir={run}', f'--out={artifact}', '--platforms=cpu',
                                          f'--data={card_data}']),
  }, str(tmp))
  for name, outcome in outcomes.items():
    assert outcome['rc'] == 0, (name, outcome['output'][-3000:])
  return run, hf, artifact


def test_an_exported_finetuned_minilm_gives_bigjaxs_logits_in_transformers_on_sst2_test(finetuned):
  """The whole SST-2 test set (1,821 sentences): logits within 1e-5; transformers reports no
  missing, unexpected or mismatched weights, and AutoTokenizer gives the run's token ids."""
  from bigjax import runs  # pylint: disable=g-import-not-at-top
  run_dir, hf, _ = finetuned
  run = runs.load_run(run_dir)
  texts = _sst2_texts(2000)
  rows = run.encode(texts)
  model, info = transformers.AutoModelForSequenceClassification.from_pretrained(hf, output_loading_info=True)
  assert all(not info[key] for key in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
  assert model.config.id2label == {0: '0', 1: '1'}
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf)
  assert tokenizer(texts, truncation=True, max_length=run.data['max_len'])['input_ids'] == [r.tolist() for r in rows]
  logits = jax.jit(run.fns.logits)
  order = np.argsort([len(r) for r in rows], kind='stable')
  ours, theirs = np.zeros((len(rows), 2), np.float32), np.zeros((len(rows), 2), np.float32)
  boundaries = run.derived.bucket_boundaries
  for part in np.array_split(order, 4):  # Batches of similar lengths, padded to the run's bucket widths.
    part_rows = [rows[i] for i in part]
    ids, lengths = _padded(part_rows, next(b for b in boundaries if b >= max(map(len, part_rows))))
    ours[part] = np.asarray(logits(run.params, ids, lengths))
    mask = (np.arange(ids.shape[1])[None] < lengths[:, None]).astype(np.int64)
    with torch.no_grad():
      theirs[part] = model.eval()(input_ids=torch.from_numpy(ids.astype(np.int64)),
                                  attention_mask=torch.from_numpy(mask)).logits.numpy()
  assert len(texts) == 1821
  assert np.abs(ours).max() > 0.05  # Trained: not the fresh head's near-zero logits.
  np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_the_bigjax_artifact_of_a_pretrained_run_reads_special_tokens_as_the_run(finetuned):
  from bigjax import runs  # pylint: disable=g-import-not-at-top
  from bigjax.export import loader  # pylint: disable=g-import-not-at-top
  run_dir, _, artifact_dir = finetuned
  run, artifact = runs.load_run(run_dir), loader.load(artifact_dir)
  texts = _sst2_texts(50)
  expected = run.encode(texts)
  assert all(row[0] == 101 and row[-1] == 102 for row in expected)  # [CLS] ... [SEP]
  assert [r.tolist() for r in artifact.encode(texts)] == [r.tolist() for r in expected]
  metadata = json.load(open(os.path.join(artifact_dir, loader.METADATA_FILE)))
  assert metadata['round_trip']['max_abs_diff'] < 1e-5


def test_export_refuses_a_run_transformers_cannot_compute(finetuned, tmp_path):
  """A mean-pooled run has no transformers classifier: one line, nothing written."""
  from bigjax import runs  # pylint: disable=g-import-not-at-top
  from bigjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from bigjax.huggingface import export as hf_export  # pylint: disable=g-import-not-at-top
  import dataclasses  # pylint: disable=g-import-not-at-top
  run = runs.load_run(finetuned[0])
  config = json.loads(json.dumps(run.config))
  config['model']['transformer']['pooling'] = 'mean'
  with pytest.raises(ConfigError, match=r"model.transformer has \{'pooling': 'mean'\}; BertForSequenceClassification"):
    hf_export.write_folder(dataclasses.replace(run, config=config), str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out')



# Slow tier: 1.5-3 minutes on 2 cores (two compress commands over the 22.7 M-parameter model); the
# default tier's int8 checks run on the tiny Transformer (tests/test_compress.py), the same code.
@pytest.mark.slow
def test_an_int8_finetuned_minilm_stores_a_quarter_of_the_bytes_and_keeps_its_accuracy(tmp_path):
  """`experiments.compress --method=quantize` on a finetuned MiniLM (int8 weights, dynamic
  activation scales): every kernel and the word table as int8 values with float32 scales, the
  LayerNorms, biases and position tables float32, so the stored arrays are about a quarter of
  the float32 ones; on the run's test set (all 1,821 SST-2 test sentences) the accuracy moves by
  at most a point. The run is minilm_sst2.py:tiny at a finetuning learning rate (the `finetuned`
  fixture's 1e-3 leaves a model that calls every sentence positive, which any rounding keeps)."""
  from bigjax import run_record  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(MINILM) or not os.path.isdir(os.path.join(SHARED_DATA, 'data', 'sst2')):
    pytest.skip('../shared/models or ../shared/data is absent')
  run, out = str(tmp_path / 'run'), tmp_path / 'int8'
  outcomes = run_cases({
      'train': ('experiments.train', ['--config=experiments/configs/minilm_sst2.py:tiny', f'--workdir={run}',
                                      '--config.train.steps=40', '--config.optim.learning_rate=1e-4',
                                      '--config.checkpoint.every_steps=40', '--config.train.eval_batch_size=256']),
      'int8': ('experiments.compress', ['--method=quantize', f'--from={run}', f'--workdir={out}',
                                        '--latency_rounds=1']),
  }, str(tmp_path), case_timeout=600)
  for name, outcome in outcomes.items():
    assert outcome['rc'] == 0, (name, outcome['output'][-3000:])
  report = json.loads((out / 'compression.json').read_text())
  before, after = report['before'], report['after']
  stored = run_record.read(str(out)).derived.quantization['stored_bytes']
  assert before['parameters'] == after['parameters'] > 22_000_000
  # The arrays: int8 values (1 byte a parameter), a float32 scale per output channel or table row,
  # and the ~1 % of parameters that stay float32.
  assert 0.25 < sum(stored.values()) / (4 * before['parameters']) < 0.27, stored
  assert stored['int8_values'] > 0.98 * before['parameters']
  # On disk (best/: what export ships), Orbax's own files included.
  assert 0.24 < after['bytes_on_disk'] / before['bytes_on_disk'] < 0.28, (before, after)
  assert before['test_accuracy'] > 0.7, before  # Finetuned, so the comparison means something.
  assert abs(after['test_accuracy'] - before['test_accuracy']) <= 0.01, (before, after)

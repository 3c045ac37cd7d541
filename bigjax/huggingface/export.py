"""A finetuned run written back as a Hugging Face folder.

  python -m experiments.export --workdir=runs/minilm_sst2 --out=exports/minilm_sst2_hf --format=huggingface

The folder is what `transformers` writes for a sequence classifier of the run's base model
(BertForSequenceClassification, RobertaForSequenceClassification,
DistilBertForSequenceClassification): config.json (the pretrained folder's, kept in the run's
config.json, with the run's labels as id2label/label2id), model.safetensors (through the same
key table that imported it: bigjax.huggingface.weights), the run's tokenizer.json with the
pretrained folder's tokenizer_config.json and special_tokens_map.json, and a README.md model card.
`AutoModelForSequenceClassification.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`
load it; PyTorch is not needed to write it.

Only what transformers' classifier computes can be exported: the first token's state ([CLS])
through the pooler (tanh; ReLU for DistilBERT) into the output layer, post-LN, float32 weights.
"""
import json
import os
import shutil
import tempfile
from typing import Optional

from bigjax import files
from bigjax.errors import ConfigError
from bigjax.export import model_card
from bigjax.huggingface import weights
from bigjax.huggingface.architecture import (CONFIG_FILE, SPECIAL_TOKENS_FILE, TOKENIZER_CONFIG_FILE, Architecture,
                                             parse_architecture)
from bigjax.runs import Run

CLASSIFIERS = {'bert': 'BertForSequenceClassification', 'roberta': 'RobertaForSequenceClassification',
               'distilbert': 'DistilBertForSequenceClassification'}
README_FILE = 'README.md'


def run_architecture(run: Run) -> Architecture:
  """The architecture of the pretrained folder a run started from; a ConfigError for any other run,
  or one whose model transformers' sequence classifier does not compute."""
  record = (run.derived.init or {}).get('huggingface')
  if run.model_name != 'transformer' or not record:
    raise ConfigError(f'{run.workdir} did not start from a Hugging Face folder (init.pretrained): only such runs '
                      'export as one')
  arch = parse_architecture(record['config'], f'{run.workdir}/config.json (derived.init.huggingface.config)')
  own = run.config['model']['transformer']
  wanted = {'pooling': 'cls', 'pooler': True, 'pooler_activation': arch.head_activation, 'pre_ln': False}
  differ = {key: own.get(key) for key, value in wanted.items() if own.get(key, value) != value}
  if differ:
    raise ConfigError(f'{run.workdir}: model.transformer has {differ}; {CLASSIFIERS[arch.model_type]} computes '
                      f'{wanted}, so this run cannot be exported as one')
  if run.derived.quantization:
    raise ConfigError(f'{run.workdir} is quantized; export the float run it came from')
  return arch


def hf_config(arch: Architecture, label_names: list) -> dict:
  config = {key: value for key, value in arch.config.items() if key not in ('_name_or_path', 'architectures')}
  config['architectures'] = [CLASSIFIERS[arch.model_type]]
  config['id2label'] = {str(i): name for i, name in enumerate(label_names)}
  config['label2id'] = {name: i for i, name in enumerate(label_names)}
  config['problem_type'] = 'single_label_classification'
  config['dtype'] = 'float32'
  return config


def _prepare_out(out: str, overwrite: bool) -> str:
  out = os.path.abspath(out)
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    ours = os.path.isfile(os.path.join(out, weights.WEIGHTS_FILE)) and os.path.isfile(os.path.join(out, CONFIG_FILE))
    if not (overwrite and ours):
      what = ('a model folder; pass --overwrite to replace it' if ours else
              'not a model folder; choose another --out')
      raise ConfigError(f'--out={out} exists and is {what}')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  return out


def _card(run: Run, arch: Architecture, results: dict) -> str:
  test = results.get('test') or {}
  accuracy = f'{100 * test["accuracy"]:.2f} %' if isinstance(test.get('accuracy'), float) else 'not recorded'
  source = run.derived.init.get('pretrained', '')
  return (f'# {os.path.basename(run.workdir.rstrip("/"))}\n\n'
          f'A {CLASSIFIERS[arch.model_type]} finetuned with bigjax from `{source}` on '
          f'`{run.data.get("path") or run.data.get("name")}`, labels {run.label_names}.\n\n'
          f'- Test accuracy of the run (its best dev checkpoint, step {run.step}): {accuracy}.\n'
          f'- Texts: at most {run.data["max_len"]} tokens, special tokens included, the `{run.data["keep"]}` '
          'ones kept (first / last / ends: the first quarter and the last three quarters).\n'
          '- Written by `experiments.export --format=huggingface`; the bigjax run folder holds the training logs.\n\n'
          + '\n'.join(model_card.privacy_lines(run.derived.privacy)))


def write_folder(run: Run, out: str, *, overwrite: bool = False) -> dict:
  """Writes the run as a Hugging Face folder at `out` (written aside, then moved in place);
  returns {'out', 'architecture', 'tensors', 'parameters'}."""
  arch = run_architecture(run)
  out = _prepare_out(out, overwrite)
  tensors = weights.to_tensors(run.params, arch)
  record = run.derived.init['huggingface']
  results_path = os.path.join(run.workdir, 'results.json')
  results = files.read_json(results_path) if os.path.exists(results_path) else {}
  staging = tempfile.mkdtemp(prefix='.export-', dir=os.path.dirname(out))
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the folder is meant to be shared.
    weights.save(tensors, os.path.join(staging, weights.WEIGHTS_FILE))
    _write_json(os.path.join(staging, CONFIG_FILE), hf_config(arch, run.label_names))
    run.tokenizer.save(staging)
    tokenizer_config = dict(record.get('tokenizer_config') or {})
    tokenizer_config['model_max_length'] = run.data['max_len']  # What the model was finetuned on.
    _write_json(os.path.join(staging, TOKENIZER_CONFIG_FILE), tokenizer_config)
    if record.get('special_tokens_map'):
      _write_json(os.path.join(staging, SPECIAL_TOKENS_FILE), record['special_tokens_map'])
    with open(os.path.join(staging, README_FILE), 'w', encoding='utf-8') as f:
      f.write(_card(run, arch, results))
    if os.path.exists(out):
      shutil.rmtree(out)  # _prepare_out allowed it: a model folder, and --overwrite.
    os.replace(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return {'out': out, 'architecture': CLASSIFIERS[arch.model_type], 'tensors': len(tensors),
          'parameters': int(sum(t.size for t in tensors.values()))}


def _write_json(path: str, value: Optional[dict]) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=2)
    f.write('\n')

"""A trained run -> a self-contained artifact folder that loads without bigjax or Flax.

The folder holds (bigjax/export/loader.py reads it, and is copied in as predict.py):
  model.jax_exported  the inference function, jax.export-serialized StableHLO:
                      probabilities(params, token_ids int32[b, t], lengths int32[b]) -> float32[b, K],
                      with b and t symbolic (t at most the model's bound where it has one:
                      the Transformer's max_positions), lowered for every platform that lowers
  params.npz          the parameters as plain arrays (allow_pickle=False), keyed by path
  params_tree.json    their nesting, shapes and dtypes (the function's first argument)
  tokenizer.json      the run's Hugging Face tokenizer
  metadata.json       format version, labels, how to encode (max_len, keep, direction, buckets, pad id,
                      max_tokens),
                      platforms, versions, the resolved config, the run's test report, sha256s
  predict.py          the loader: python DIR/predict.py < texts.txt

Why a symbolic length and not one module per trained bucket: measured on this project's
CPU (docs/results/deployment.md), one module with t symbolic compiles, per concrete width, to the
same program as a module exported at that width — identical outputs, the same speed — and
is one file instead of twelve. The loader still pads to the trained buckets, so a server
compiles a handful of shapes, not one per text length.
"""
import datetime
import json
import os
import shutil
import tempfile
from typing import Optional, Sequence

from etils import epath
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import tokenizers

from bigjax import files
from bigjax.compress import quantize
from bigjax.data import batching
from bigjax.errors import ConfigError
from bigjax.export import loader
from bigjax.export import model_card
from bigjax.models import registry
from bigjax.runs import Run
from bigjax.tasks.classification import at_least_f32

PLATFORMS = ('cpu', 'cuda', 'tpu')


def inference_fn(fns):
  """probabilities(params, token_ids, lengths) -> float32[B, K]: the softmax in f32, as evaluation computes it."""

  def probabilities(params, token_ids, lengths):
    return jax.nn.softmax(at_least_f32(fns.logits(params, token_ids, lengths, None)), axis=-1)

  return probabilities


def _specs(params, max_tokens: Optional[int] = None):
  # A model with a limit (the Transformer's position table) gets it as a constraint of the symbolic
  # width: a call with wider rows is refused when its shapes are checked, instead of computing NaN.
  batch, width = jax.export.symbolic_shape('b, t', constraints=(f't <= {max_tokens}',) if max_tokens else ())
  return (jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params),
          jax.ShapeDtypeStruct((batch, width), jnp.int32), jax.ShapeDtypeStruct((batch,), jnp.int32))


def export_function(fns, params, platforms: Sequence[str] = PLATFORMS, max_tokens: Optional[int] = None):
  """(jax.export.Exported for the platforms that lower, {platform: why not} for the others).

  The exported function takes the parameters as nested dicts of plain arrays; a quantized
  run's int8 weights ({'qvalue', 'scale'} each) are put back into qwix's form inside it, so
  the artifact runs its int8 matmuls and its loader needs nothing of qwix. max_tokens: the
  widest row the model takes (ModelSpec.max_tokens_key), None for any.
  """
  structure = jax.tree.structure(params)
  probabilities = inference_fn(fns)
  fn = jax.jit(lambda plain, token_ids, lengths: probabilities(
      jax.tree.unflatten(structure, jax.tree.leaves(plain)), token_ids, lengths))
  specs = _specs(quantize.plain_tree(params), max_tokens)
  try:
    return jax.export.export(fn, platforms=tuple(platforms))(*specs), {}
  except Exception:  # pylint: disable=broad-except  # Find out which platform failed, and why.
    pass
  working, skipped = [], {}
  for platform in platforms:
    try:
      jax.export.export(fn, platforms=(platform,))(*specs)
      working.append(platform)
    except Exception as e:  # pylint: disable=broad-except  # A jaxlib without that lowering raises anything.
      skipped[platform] = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'[:300]
  if not working:
    raise ConfigError(f'the model does not lower for any of {list(platforms)}: {skipped}')
  return jax.export.export(fn, platforms=tuple(working))(*specs), skipped


def param_arrays(params, prefix: str = ''):
  """(the JSON tree description, {path: numpy array}) of a nested dict of arrays."""
  if isinstance(params, dict):
    items, arrays = {}, {}
    for name in sorted(params):
      if '/' in name:
        raise ConfigError(f'parameter name {name!r} contains "/", which the artifact uses as its path separator')
      items[name], more = param_arrays(params[name], f'{prefix}{name}/')
      arrays.update(more)
    return {'type': 'dict', 'items': items}, arrays
  if not hasattr(params, 'dtype'):
    raise ConfigError(f'parameter {prefix[:-1]!r} is a {type(params).__name__}; only nested dicts of arrays export')
  array = np.asarray(params)
  key = prefix[:-1]
  node = {'type': 'array', 'key': key, 'shape': list(array.shape), 'dtype': str(array.dtype)}
  if array.dtype.kind not in 'biuf' or array.dtype.name == 'bfloat16':
    # numpy has no bfloat16: its bits, which the loader views back with jax's dtype.
    array = array.view(np.dtype(f'uint{array.dtype.itemsize * 8}'))
  return node, {key: array}


def _read_results(workdir: str) -> dict:
  path = os.path.join(workdir, 'results.json')
  if not epath.Path(path).exists():  # The run's folder may be in a bucket.
    return {}
  return files.read_json(path)


def _prepare_out(out: str, overwrite: bool) -> str:
  out = os.path.abspath(out)
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    is_artifact = os.path.isfile(os.path.join(out, loader.METADATA_FILE))
    if not (overwrite and is_artifact):
      what = 'an artifact; pass --overwrite to replace it' if is_artifact else 'not an artifact; choose another --out'
      raise ConfigError(f'--out={out} exists and is {what}')
  parent = os.path.dirname(out)
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise ConfigError(f'--out={out}: cannot create {parent} ({e.strerror})') from None
  return out


def write_artifact(run: Run, out: str, *, platforms: Sequence[str] = PLATFORMS, overwrite: bool = False) -> dict:
  """Exports run into the folder out (written aside, then moved in place); returns its metadata."""
  if run.fns.logits is None:
    raise ConfigError(f'{run.workdir} is a {run.model_name} run; only classifiers export')
  out = _prepare_out(out, overwrite)
  results = _read_results(run.workdir)  # Before the lowering (seconds): a damaged file fails at once.
  max_tokens = registry.spec(run.model_name).max_tokens(run.config['model'])
  exported, skipped = export_function(run.fns, run.params, platforms, max_tokens)
  tree, arrays = param_arrays(quantize.plain_tree(run.params))
  staging = tempfile.mkdtemp(prefix='.export-', dir=os.path.dirname(out))
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the artifact is meant to be shared.
    with open(os.path.join(staging, loader.MODULE_FILE), 'wb') as f:
      f.write(exported.serialize())
    np.savez(os.path.join(staging, loader.PARAMS_FILE), allow_pickle=False, **arrays)
    with open(os.path.join(staging, loader.TREE_FILE), 'w', encoding='utf-8') as f:
      json.dump(tree, f, indent=1)
    run.tokenizer.save(staging)
    shutil.copyfile(loader.__file__, os.path.join(staging, loader.LOADER_FILE))
    data, derived = run.data, run.derived
    metadata = {
        'format': loader.FORMAT,
        'format_version': loader.FORMAT_VERSION,
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'labels': run.label_names,
        'model': run.model_name,
        'input': {'max_len': data['max_len'], 'keep': data['keep'], 'direction': data['direction'],
                  'bucket_boundaries': derived.bucket_boundaries, 'pad_id': loader.PAD_ID,
                  'special_ends': run.tokenizer.special_ends, 'vocab_size': derived.vocab_size, 'tokenizer': data['tokenizer'],
                  'max_tokens': max_tokens},
        'signature': 'probabilities(params, token_ids: int32[b, t], lengths: int32[b]) -> float32[b, K]; b, t '
                     f'symbolic{f", t <= {max_tokens}" if max_tokens else ""}; a row\'s tokens first, then pad id 0',
        'platforms': list(exported.platforms),
        'platforms_skipped': skipped,
        'calling_convention_version': exported.calling_convention_version,
        'versions': {'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'numpy': np.__version__,
                     'tokenizers': tokenizers.__version__},
        'run': {'workdir': run.workdir, 'step': run.step, 'params_fingerprint': results.get('params_fingerprint'),
                'test': results.get('test')},
        'config': run.config,
        'derived': derived.to_json(),
        'files': {name: {'sha256': loader.sha256_of(os.path.join(staging, name)),
                         'bytes': os.path.getsize(os.path.join(staging, name))} for name in loader.HASHED_FILES},
    }
    write_metadata(staging, metadata)
    if os.path.exists(out):
      shutil.rmtree(out)  # _prepare_out allowed it: an artifact, and --overwrite.
    os.replace(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return metadata


def write_metadata(directory: str, metadata: dict) -> None:
  path = os.path.join(directory, loader.METADATA_FILE)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(metadata, f, indent=1)
  os.replace(path + '.tmp', path)


def checkpoint_probabilities(run: Run, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
  """float32[N, K] from the run's own model functions and parameters, in text order.

  Batches are cut in input order (not by length, as the loader does) and padded to the
  run's buckets: a comparison with the artifact then also checks that padding changes nothing.
  """
  fn = jax.jit(inference_fn(run.fns))
  params = jax.device_put(run.params)
  boundaries = run.derived.bucket_boundaries
  rows = run.encode(texts)
  out = []
  for start in range(0, len(rows), batch_size):
    part = rows[start:start + batch_size]
    lengths = np.asarray([len(r) for r in part], np.int32)
    token_ids = np.zeros((batch_size, batching.bucket_width(lengths, boundaries)), np.int32)
    for i, row in enumerate(part):
      token_ids[i, :len(row)] = row
    out.append(np.asarray(fn(params, token_ids, np.pad(lengths, (0, batch_size - len(part)))))[:len(part)])
  return np.concatenate(out) if out else np.zeros((0, run.derived.num_classes), np.float32)


def export_run(run: Run, out: str, *, platforms: Sequence[str] = PLATFORMS, overwrite: bool = False,
               evaluation_data=None, training: Optional[dict] = None, language: str = 'English',
               bins: int = model_card.DEFAULT_BINS, batch_size: int = 256) -> dict:
  """Writes the artifact, checks it against the checkpoint, and writes its model card.

  evaluation_data: (name, texts, labels) — the test split, scored with the reloaded
  artifact for the card's metrics and calibration, and with the checkpoint for the round
  trip; None: the card falls back on the run's results.json and states it.
  Returns a summary: out, platforms, round-trip difference, test metrics, ECE.
  """
  metadata = write_artifact(run, out, platforms=platforms, overwrite=overwrite)
  out = os.path.abspath(out)
  try:
    artifact = loader.load(out)
  except loader.ArtifactError as e:
    raise ConfigError(f'the artifact just written does not load: {e}') from None
  evaluation, round_trip = None, None
  if evaluation_data is not None:
    name, texts, labels = evaluation_data
    labels = np.asarray(labels)
    exported = artifact.probabilities(texts, batch_size)
    reference = checkpoint_probabilities(run, texts, batch_size)
    round_trip = {'examples': len(texts), 'max_abs_diff': float(np.max(np.abs(exported - reference), initial=0.0)),
                  'data': name, 'same_labels': bool(np.all(exported.argmax(1) == reference.argmax(1)))}
    calib = model_card.calibration(exported, labels, bins)
    model_card.reliability_diagram(calib, os.path.join(out, model_card.DIAGRAM_FILE),
                                   f'{run.model_name} on {os.path.basename(name) or name}')
    evaluation = {'data': name, 'report': model_card.classification_metrics(exported, labels, len(artifact.labels)),
                  'calibration': calib}
    metadata['evaluation'] = {'data': name, 'report': evaluation['report'],
                              'ece': calib['ece'], 'ece_bins': bins, 'nll': calib['nll']}
    metadata['round_trip'] = round_trip
    write_metadata(out, metadata)  # metadata.json is not among the hashed files: adding to it is safe.
  model_card.write_card(out, metadata=metadata, evaluation=evaluation, training=training or {},
                        language=language, round_trip=round_trip)
  return {'out': out, 'platforms': metadata['platforms'], 'platforms_skipped': metadata['platforms_skipped'],
          'round_trip': round_trip, 'test': evaluation and {k: evaluation['report'][k] for k in
                                                            ('accuracy', 'macro_f1', 'f1_per_class', 'examples')},
          'ece': evaluation and evaluation['calibration']['ece'], 'ece_bins': bins,
          'files': {name: f['bytes'] for name, f in metadata['files'].items()}}

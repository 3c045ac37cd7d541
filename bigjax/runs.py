"""A trained run, loaded from its workdir alone: the start of every post-training stage.

`load_run(workdir)` reads what the run wrote (config.json, tokenizer.json, best/) and
never the dataset, so evaluation, finetuning, compression, attributions and export work
where the training data is gone.
"""
import dataclasses
import os
from typing import Any, Sequence

from etils import epath
import jax
import numpy as np

from bigjax import checkpoint as checkpoint_lib
from bigjax import files
from bigjax import metrics
from bigjax import run_record
from bigjax.compress import quantize as quantize_lib
from bigjax.data import batching
from bigjax.data.tokenizer import Tokenizer
from bigjax.errors import ConfigError, DataError
from bigjax.models import registry
from bigjax.run_record import Derived
from bigjax.tasks.classification import Classification, at_least_f32
from bigjax.types import ModelFns


@dataclasses.dataclass(frozen=True)
class Run:
  workdir: str
  config: dict  # The resolved config, as config.json holds it (bigjax.run_record.RunRecord.config).
  derived: Derived  # What the run computed: vocab_size, num_classes, label_names, ...
  model: Any  # The Flax module.
  fns: ModelFns
  params: Any  # Host arrays.
  step: int  # The step the parameters are from.
  tokenizer: Tokenizer

  @property
  def label_names(self) -> list:
    return self.derived.label_names or [str(i) for i in range(self.derived.num_classes)]

  @property
  def data(self) -> dict:
    """config.data: how the run read and encoded its texts (older runs' defaults filled on reading)."""
    return self.config['data']

  @property
  def model_name(self) -> str:
    return self.config['model']['name']

  def with_max_len(self, max_len: int) -> 'Run':
    """This run reading at most `max_len` tokens of each text (its data.keep saying which),
    the batch widths recomputed up to it: how much of a long text the model's answer needs.

    The models read any width, so a run trained on texts cut short can read them whole.
    """
    if max_len < 1:
      raise ConfigError(f'max_len must be at least 1, got {max_len}')
    data = dict(self.data, max_len=max_len)
    boundaries = batching.bucket_boundaries(max_len, data['smallest_bucket'], data['bucket_growth'])
    return dataclasses.replace(self, config=dict(self.config, data=data),
                               derived=dataclasses.replace(self.derived, bucket_boundaries=list(boundaries)))

  def encode(self, texts):
    """Token id rows, as the run encoded its data (max_len, truncation side, direction)."""
    return self.tokenizer.encode(texts, self.data['max_len'], self.data['keep'], self.data['direction'])

  def batches(self, texts, labels, batch_size: int = 256) -> list:
    """Evaluation batches of texts, padded to the run's own length buckets (its compiled shapes)."""
    split = batching.EncodedSplit.from_rows(self.encode(texts), labels)
    return batching.eval_batches(split, batch_size, self.derived.bucket_boundaries)

  def probabilities(self, texts, batch_size: int = 256) -> np.ndarray:
    """float32[N, K]: the model's class probabilities for each text, in the order of texts."""
    split = batching.EncodedSplit.from_rows(self.encode(texts), np.zeros(len(texts), np.int32))
    order = np.argsort(split.lengths, kind='stable')  # The rows of the batches, as eval_batches cuts them.
    softmax = jax.jit(lambda params, batch: jax.nn.softmax(
        at_least_f32(self.fns.logits(params, batch.token_ids, batch.lengths, None)), -1))
    out = np.zeros((len(texts), self.derived.num_classes), np.float32)
    for start, batch in zip(range(0, len(order), batch_size), self.batches(texts, split.labels, batch_size)):
      rows = order[start:start + batch_size]
      out[rows] = np.asarray(softmax(self.params, batch))[:len(rows)]
    return out

  def evaluate(self, texts, labels, batch_size: int = 256) -> dict:
    """The report results.json gives for test (accuracy, macro-F1, per-class F1, confusion, loss)."""
    task = Classification(self.derived.num_classes)
    sums = jax.jit(lambda params, batch: task.eval_sums(self.fns, params, batch))
    totals = [jax.device_get(sums(self.params, batch)) for batch in self.batches(texts, labels, batch_size)]
    return task.report(jax.tree.map(lambda *xs: np.sum(np.asarray(xs, np.float64), axis=0), *totals))


def probabilities_report(probabilities: np.ndarray, labels) -> dict:
  """Run.evaluate's report (accuracy, macro-F1, per-class F1, confusion, loss) of given
  probabilities, such as the mean of several runs' (an ensemble)."""
  probabilities = np.asarray(probabilities, np.float64)
  labels = np.asarray(labels, np.int64)
  num_classes = probabilities.shape[1]
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, probabilities.argmax(1)), 1)
  report = metrics.classification_report(confusion)
  chosen = probabilities[np.arange(len(labels)), labels]
  report['loss'] = float(-np.mean(np.log(np.maximum(chosen, np.finfo(np.float32).tiny)))) if len(labels) else 0.0
  return report


def ensemble_report(members: Sequence[Run], texts, labels, batch_size: int = 256) -> dict:
  """The report of the members' mean probabilities, with each member's own accuracy.

  The members are classifiers of the same labels; each reads the texts as its own run did
  (tokenizer, truncation, direction), so a forward and a backward run ensemble as ULMFiT's do.
  """
  names = [m.label_names for m in members]
  if any(n != names[0] for n in names):
    raise ConfigError(f'the runs to ensemble have different labels: {dict(zip((m.workdir for m in members), names))}')
  each = [m.probabilities(texts, batch_size) for m in members]
  report = probabilities_report(np.mean(each, 0), labels)
  report['members'] = [{'workdir': m.workdir, 'step': m.step, 'accuracy': probabilities_report(p, labels)['accuracy']}
                       for m, p in zip(members, each)]
  return report


def load_run(workdir: str) -> Run:
  """The run's model, best parameters, tokenizer, label names and config.

  A quantized run (experiments.compress) stores int8 arrays and scales; they come back
  ready to run as its mode says (bigjax.compress.quantize).
  """
  workdir = files.absolute(workdir)  # A local path, or a bucket URL (gs://...).
  record = run_record.read(workdir)
  config, derived = record.config, record.derived
  # Before the checkpoint (seconds to restore): a damaged file of the run fails at once.
  tokenizer = Tokenizer.load(workdir, remedy=files.COPY_AGAIN)
  if tokenizer.vocab_size != derived.vocab_size:  # Ids past the embedding table would be read as others.
    raise DataError(f'{os.path.join(workdir, "tokenizer.json")} has {tokenizer.vocab_size} entries where the run\'s '
                    f'config.json says {derived.vocab_size}: it is another run\'s; copy the run\'s own again')
  model = registry.from_section(record.model, vocab_size=derived.vocab_size, num_classes=derived.num_classes)
  width = max(derived.bucket_boundaries)
  example = jax.ShapeDtypeStruct((1, width), 'int32'), jax.ShapeDtypeStruct((1,), 'int32')
  quantization = derived.quantization
  if quantization:
    target = quantize_lib.stored_shapes(model, example, quantization['mode'], quantization['activations'])
  else:
    target = jax.eval_shape(registry.model_fns(model, record.model_name).init, jax.random.PRNGKey(0), *example)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), target)
  best = os.path.join(workdir, 'best')
  if not epath.Path(best).is_dir():
    raise ConfigError(f'{workdir} has no best/ checkpoint yet (one is saved at the first dev evaluation); train '
                      'it further first')
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), best_directory=best,
                                             metric=derived.selection_metric,
                                             higher_is_better=derived.higher_is_better)
  try:
    step, params = checkpointer.restore_best(target)
  finally:
    checkpointer.close()
  fns = registry.model_fns(model, record.model_name)
  if quantization:
    model, params, fns = quantize_lib.for_inference(model, params, quantization['mode'],
                                                    quantization['activations'])
  return Run(workdir=workdir, config=config, derived=derived, model=model, fns=fns,
             params=jax.device_get(params), step=step, tokenizer=tokenizer)

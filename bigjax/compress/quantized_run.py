"""A quantized copy of a trained run, written as a run folder of its own.

The folder holds what any run holds (config.json, tokenizer.json, best/), so evaluation,
attributions, export and serving take it as they take the source; best/ stores the int8
arrays and their scales (bigjax.compress.quantize), and config.json's derived.quantization
says how to run them.
"""
import dataclasses
import os
import sys
from typing import Optional, Sequence

import jax

from bigjax import checkpoint as checkpoint_lib
from bigjax import run_record
from bigjax import runs
from bigjax.compress import quantize


def quantize_run(source: runs.Run, workdir: str, *, mode: str, activations: str, dev_texts: Sequence[str],
                 dev_labels, calibration_texts: Optional[Sequence[str]] = None) -> runs.Run:
  """Quantizes the source's best parameters, saves the new run, and loads it back with load_run.

  dev_texts/dev_labels rank the saved step, as training ranks its best steps;
  calibration_texts (training texts) give static activation scales (activations='static').
  """
  quantize.check_choice(source.model, mode, activations)
  width = max(source.derived.bucket_boundaries)
  example = jax.ShapeDtypeStruct((1, width), 'int32'), jax.ShapeDtypeStruct((1,), 'int32')
  stats = None
  if mode == 'int8' and activations == 'static':
    if not calibration_texts:
      raise ValueError('static activation scales need calibration texts from the training split')
    stats = quantize.calibrate(source.model, source.params,
                               source.batches(calibration_texts, [0] * len(calibration_texts)))
  stored = quantize.quantize(source.model, source.params, example, mode, activations, stats)
  record = {'method': 'quantize', 'mode': mode, 'activations': activations, 'source': source.workdir,
            'source_step': source.step, 'calibration_examples': len(calibration_texts or []) if stats else 0,
            'stored_bytes': quantize.int8_bytes(stored)}
  derived = dataclasses.replace(source.derived, quantization=record)
  module, params, fns = quantize.for_inference(source.model, stored, mode, activations)
  in_memory = dataclasses.replace(source, workdir=workdir, derived=derived, model=module, fns=fns, params=params)
  dev_accuracy = in_memory.evaluate(dev_texts, dev_labels)['accuracy']

  os.makedirs(workdir, exist_ok=True)
  # The source's config and versions: the model and how it reads its texts are the source's.
  run_record.write(workdir, dataclasses.replace(run_record.read(source.workdir), derived=derived,
                                                argv=list(sys.argv)))
  source.tokenizer.save(workdir)
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                             best_directory=os.path.join(workdir, 'best'),
                                             metric=derived.selection_metric,
                                             higher_is_better=derived.higher_is_better)
  try:
    checkpointer.save_best(source.step, stored, {'compression': record}, dev_accuracy)
  finally:
    checkpointer.close()
  return runs.load_run(workdir)

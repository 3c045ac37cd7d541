"""Runs an experiment in its run folder: claims the folder, trains (resuming from it), tests
the best-dev checkpoint, and records the resolved config in config.json.
"""
import json
from typing import Callable, Optional

import jax
import ml_collections

from bigjax import experiment as experiment_lib
from bigjax import huggingface
from bigjax import metrics as metrics_lib
from bigjax import privacy
from bigjax import run_record
from bigjax import workdirs
from bigjax.train import loop



def train_command(config: ml_collections.ConfigDict) -> str:
  """What writes a training run's folder (bigjax.workdirs), which only the same resumes: the
  training command and the model (a run of another model in the folder is another run)."""
  return f'experiments.train (model {config.model.name})'


def claim_workdir(config: ml_collections.ConfigDict, workdir: str, command: Optional[str] = None) -> str:
  """The run folder, checked and created for `command` (default: train_command) by
  bigjax.workdirs.claim, with the folders the config starts or learns from as its inputs."""
  return workdirs.claim(workdir, command or train_command(config), workdirs.config_inputs(config.to_dict()),
                        record=jax.process_index() == 0)


def run_training(config: ml_collections.ConfigDict, workdir: str, stop_after_steps: Optional[int] = None,
                 build: Callable = experiment_lib.build, command: Optional[str] = None) -> dict:
  """Trains (resuming from workdir), then tests the best-dev checkpoint; returns results.json's content.

  build(config, workdir) -> Experiment: by default a classifier, a language model or a masked LM, as the
    config's model is.
  command: what writes the run folder, which only the same may resume (bigjax.workdirs; default:
    train_command).
  """
  config = huggingface.configure(config)  # init.pretrained's architecture, recorded in config.json.
  workdir = claim_workdir(config, workdir, command)
  exp = build(config, workdir)
  is_main = jax.process_index() == 0
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main)
  extra_hooks = [] if exp.dp is None else [privacy.EpsilonLog(exp.dp, writer)]
  try:
    return loop.train_and_evaluate(
        driver=exp.driver, task=exp.task, init_state=exp.init_state, batch_at=exp.train_batches.batch,
        dev=exp.dev, test=exp.test,
        config=loop.LoopConfig(
            periods=loop.Periods(exp.total_steps, exp.checkpoint_every_steps, config.train.log_every_steps,
                                 config.checkpoint.keep_latest, config.checkpoint.keep_best,
                                 select_from_step=experiment_lib.pruning_end_step(config.prune, exp.total_steps)),
            nan=loop.NanPolicy(config.train.nan_policy, config.train.max_skipped_in_a_row),
            test_at_checkpoints=config.train.test_at_checkpoints, stop_after_steps=stop_after_steps),
        workdir=workdir, meta={'compatibility': exp.compatibility, 'config': config.to_dict()}, writer=writer,
        constants=exp.constants,
        train_shapes=exp.train_batches.shape_examples if config.train.compile_ahead else None,
        extra_hooks=extra_hooks,
        # config.json only once the workdir's checkpoints are known to be this run's.
        on_start=lambda: is_main and write_run_info(workdir, config, exp.derived))
  finally:
    writer.close()


def write_run_info(workdir: str, config: ml_collections.ConfigDict, derived: run_record.Derived) -> None:
  """config.json: the resolved config, what the run derived from its data, argv and versions."""
  run_record.write(workdir, run_record.new_record(json.loads(config.to_json()), derived))

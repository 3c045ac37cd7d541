"""Finetuning a pretrained BERT-family model, bigjax's train step against PyTorch `transformers`, side by side.

  python -m benchmarks.finetune_speed --model_dir=../shared/models/all-MiniLM-L6-v2 --shapes=16x256,8x512 \\
      --rounds=3 --steps=5 --warmup_steps=2 --threads=2 --peer_python=/path/to/torch-venv/bin/python
  python -m benchmarks.finetune_speed --shapes=2x16 --rounds=1 --steps=2 --warmup_steps=1 --bf16=no \\
      --peers=torch_same_allocator --json_out= --markdown_out=  # a smoke run

What is compared: one training step of the model in --model_dir (all-MiniLM-L6-v2 by default: 6
layers, hidden 384, 12 heads, MLP 1536, 512 positions, a 30,522-word vocabulary) at each
BATCHxLEN shape of --shapes, on full rows of random token ids (batch x len real tokens a step,
drawn from numpy's generator with seed 0 on both sides: benchmarks.step_race.race_batch).

bigjax's side is the step its trainer runs (benchmarks.step_race.BigjaxStep: the
`transformer` model through registry.model_fns, the Classification task, the optim section's
optimizer, parallel.JitDriver around bigjax.train.step.train_step), in this process, with the
model's architecture read from MODEL_DIR/config.json (hidden_size -> model.embed_dim,
num_hidden_layers, num_attention_heads, intermediate_size, max_position_embeddings,
type_vocab_size, layer_norm_eps, hidden_act, the two dropouts) and BERT's head (the first
position, then the pooler), post-LN. Its weights are drawn at random: the step's cost does not
depend on them (importing the checkpoint is bigjax/pretrained/'s job). The peer is
benchmarks/torch_peer_finetune.py in its speed mode, in a subprocess of its own (torch and JAX
never share a process), with torch.set_num_threads(--threads): the pretrained folder itself
through AutoModelForSequenceClassification.from_pretrained, `transformers`' default attention
(sdpa). Both sides train with BERT's finetuning recipe: AdamW at --learning_rate with weight
decay 0.01 on all but biases and LayerNorms (bigjax: optim.no_decay='bias|norm'), clipping at
norm 1, a linear warmup over a tenth of the steps then a linear decay, dropout as config.json
has it. torch's AdamW is the fused one, which transformers' Trainer uses by default.

Each round measures the f32 matmul ceiling of this CPU in JAX (a large jnp.dot), runs bigjax at
every shape, then each torch run (one subprocess for all the shapes: the model is loaded once a
shape); figures are medians over rounds of each run's median step time, the ceiling the best
of the rounds, and bigjax's step is reported as a fraction of it (the `transformer` spec's
training_flops). Parameter counts and tokens a step of every side are printed and must agree,
or the race stops. Allocators and the bf16 line are as in benchmarks.transformer_speed: torch
with bigjax's allocator setting (the headline, "torch_same_allocator") and its default one
("torch"); bigjax also with bf16 matmul operands where the CPU has bf16 instructions.

The race itself is benchmarks/finetune_race.py (no flags, so tests import it), built from the
pieces it shares with benchmarks.transformer_speed (benchmarks/step_race.py).
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging

from benchmarks import finetune_race
from benchmarks import step_race
from bigjax import logs
from experiments import cli

_MODEL_DIR = flags.DEFINE_string('model_dir', finetune_race.DEFAULT_MODEL_DIR, 'A Hugging Face BERT-family folder '
                                 "(config.json, weights): the architecture of both sides and the peer's weights.")
_SHAPES = flags.DEFINE_list('shapes', ['16x256', '8x512'], 'BATCHxLEN shapes, every row full.')
_PEER_PYTHON = flags.DEFINE_string('peer_python', sys.executable, 'Python with torch and transformers installed.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating rounds.', lower_bound=1)
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps per run and shape.', lower_bound=1)
_WARMUP = flags.DEFINE_integer('warmup_steps', 2, 'Untimed steps before them in each run (bigjax compiles '
                               'before its first round).', lower_bound=0)
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 5e-5, 'Peak learning rate of both sides.')
_THREADS = flags.DEFINE_integer('threads', 2, "torch's threads; a process that may use more CPUs is pinned to "
                                'this many first (the peer inherits it), so XLA has as many.', lower_bound=1)
_BF16 = flags.DEFINE_enum('bf16', 'auto', ['auto', 'yes', 'no'], 'Also run bigjax with bf16 matmul operands; '
                          'auto: where the CPU has bf16 instructions.')
_PEERS = flags.DEFINE_list('peers', list(step_race.PEER_SETTINGS),
                           f'Which torch runs: {", ".join(step_race.PEER_SETTINGS)}.')
_JSON_OUT = flags.DEFINE_string('json_out', 'runs/finetune_speed.json', 'The figures, as JSON.')
_MARKDOWN_OUT = flags.DEFINE_string('markdown_out', 'runs/finetune_speed.md', 'The summary, as markdown.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  step_race.pin_cpus(_THREADS.value)
  cli.setup_host()  # As the trainer: freed host memory kept in the process.
  logs.quiet_library_logs()
  logging.set_verbosity(logging.WARNING)
  results = finetune_race.race(
      os.path.abspath(_MODEL_DIR.value), _SHAPES.value, peer_python=_PEER_PYTHON.value, rounds=_ROUNDS.value,
      steps=_STEPS.value, warmup_steps=_WARMUP.value, threads=_THREADS.value, bf16=step_race.bf16_wanted(_BF16.value),
      peers=_PEERS.value, learning_rate=_LEARNING_RATE.value)
  summary = finetune_race.markdown(results)
  print(summary)
  step_race.write(results, summary, _JSON_OUT.value, _MARKDOWN_OUT.value)


if __name__ == '__main__':
  app.run(main)

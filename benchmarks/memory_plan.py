"""What each device would hold for a Transformer on several mesh shapes, before any pod job.

  python -m benchmarks.memory_plan --devices=8 --size=bert-base --batch=32 --length=128 \
      --meshes='data=8;fsdp=8;data=2,fsdp=2,tensor=2;fsdp=4,tensor=2' --out=docs/results/memory_plan.json

Nothing is allocated: the train state is an abstract one (jax.eval_shape), placed by the mesh
driver's rules, and the train step is lowered and compiled for it on `--devices` fake CPU
devices. The bytes of parameters and optimizer state come from the arrays' shardings, the
step's temporaries from XLA's analysis of the compiled program (XLA:CPU's; a GPU's or TPU's
compiler fuses and schedules otherwise, so treat them as an estimate there). The step is the
library's own (bigjax.train.parallel.MeshDriver over a classification task, AdamW).
"""
import json
import os
import sys

from absl import app, flags

flags.DEFINE_integer('devices', 8, 'Fake CPU devices to plan for (set before JAX starts).')
flags.DEFINE_enum('size', 'bert-base', ['bert-base', 'bert-large', 'small'], 'Encoder sizes.')
flags.DEFINE_integer('batch', 32, 'Global batch rows.')
flags.DEFINE_integer('length', 128, 'Tokens per row.')
flags.DEFINE_string('meshes', 'data=8;fsdp=8;data=2,fsdp=2,tensor=2;fsdp=4,tensor=2',
                    'Mesh shapes, ";"-separated, each AXIS=SIZE,... (axes left out are 1).')
flags.DEFINE_string('remat', '', "model.transformer.remat ('' or a jax.checkpoint_policies name).")
flags.DEFINE_string('out', '', 'Also write the plan here as JSON.')
FLAGS = flags.FLAGS

SIZES = {  # hidden, layers, heads, intermediate (Devlin et al. 2019), vocabulary 30,522, 512 positions.
    'small': (256, 4, 4, 1024),
    'bert-base': (768, 12, 12, 3072),
    'bert-large': (1024, 24, 16, 4096),
}


def plan(size: str, batch: int, length: int, meshes: list[dict], remat: str) -> list[dict]:
  import jax  # pylint: disable=g-import-not-at-top  # After XLA_FLAGS is set.
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from bigjax.models import registry  # pylint: disable=g-import-not-at-top
  from bigjax.tasks.classification import Classification  # pylint: disable=g-import-not-at-top
  from bigjax.train import parallel, sharding  # pylint: disable=g-import-not-at-top
  from bigjax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  from bigjax.types import Batch  # pylint: disable=g-import-not-at-top

  hidden, layers, heads, inner = SIZES[size]
  model = registry.build_model('transformer', vocab_size=30522, num_classes=2, embed_dim=hidden, num_layers=layers,
                               num_heads=heads, intermediate_dim=inner, max_positions=512, dropout=0.1, remat=remat)
  fns = registry.model_fns(model)
  tx = optax.adamw(1e-4, weight_decay=0.01)
  example = Batch(np.ones((batch, length), np.int32), np.full(batch, length, np.int32), np.zeros(batch, np.int32),
                  np.ones(batch, np.float32))
  abstract = jax.eval_shape(lambda: step_lib.create_train_state(fns, tx, jax.random.PRNGKey(0), example))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  rows = []
  for sizes in meshes:
    driver = parallel.task_driver('mesh', Classification(2), fns, tx, mesh=dict(
        mesh_shape=sharding.MeshShape(**{axis: sizes.get(axis, 1) for axis in sharding.AXES})))
    memory = driver.memory(driver.abstract_state(abstract), example)
    rows.append(dict(memory, parameters=count))
  return rows


def parse_meshes(text: str) -> list[dict]:
  meshes = []
  for item in filter(None, text.split(';')):
    sizes = {}
    for part in item.split(','):
      axis, _, size = part.partition('=')
      sizes[axis.strip()] = int(size)
    meshes.append(sizes)
  return meshes


def main(argv):
  del argv
  rows = plan(FLAGS.size, FLAGS.batch, FLAGS.length, parse_meshes(FLAGS.meshes), FLAGS.remat)
  mib = lambda b: f'{b / 2**20:,.0f}'
  print(f'| mesh | parameters MiB | optimizer MiB | step temporaries MiB | total MiB |  ({FLAGS.size}, '
        f'{rows[0]["parameters"]:,} parameters, batch {FLAGS.batch} x {FLAGS.length}, remat {FLAGS.remat or "off"})')
  print('| --- | ---: | ---: | ---: | ---: |')
  for row in rows:
    total = row['params_bytes_per_device'] + row['optimizer_bytes_per_device'] + row['step_temp_bytes_per_device']
    mesh = ' × '.join(f'{axis}={size}' for axis, size in row['mesh'].items() if size > 1) or 'one device'
    print(f'| {mesh} | {mib(row["params_bytes_per_device"])} | {mib(row["optimizer_bytes_per_device"])} | '
          f'{mib(row["step_temp_bytes_per_device"])} | {mib(total)} |')
  if FLAGS.out:
    with open(FLAGS.out, 'w', encoding='utf-8') as f:
      json.dump({'size': FLAGS.size, 'batch': FLAGS.batch, 'length': FLAGS.length, 'remat': FLAGS.remat,
                 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  # The fake device count must be set before JAX starts; absl has parsed nothing yet, so read it here.
  devices = next((a.split('=', 1)[1] for a in sys.argv if a.startswith('--devices=')), '8')
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  app.run(main)

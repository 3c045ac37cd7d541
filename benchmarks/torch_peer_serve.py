"""The PyTorch seed LSTM (../shared/peers/torch_lstm.py) behind bigjax's own HTTP service.

  python -m benchmarks.torch_peer_serve --workdir=/tmp/torch_peer_sst2 --port=8001

The serving comparison of docs/results/deployment.md needs a peer answering through the same
server: the same Starlette app, micro-batcher, limits and uvicorn, only the model differs.
The model is torch_lstm.py's SentimentAnalysisModel, imported from the peers' folder (not
copied), with its vocabulary (whitespace tokens of SST-2 train) and its encoding. It
answers each text alone, as the seed model does (one forward call per text: the batcher
runs at --max_batch=1 and this model never pads).

The first run trains it (--epochs of torch_lstm.py's recipe: Adam 1e-3, batch 64, dropout
0.5) and keeps the weights and vocabulary in --workdir; later runs load them. Needs a
Python with torch==2.13.0 (the CPU build the peers were measured with) next to bigjax's
serving dependencies: `pip install -e ".[peers]"`.
"""
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging

from benchmarks.torch_peer_model import TorchPeerModel, import_peer, train_or_load
from bigjax import errors
from bigjax.serve import server
from experiments import cli
from experiments.configs import base

_PEERS = os.path.join(os.path.dirname(base.SHARED_DATA), 'peers')

_WORKDIR = flags.DEFINE_string('workdir', None, 'Keeps the trained weights (model.pt) and vocabulary (vocab.json).')
_PEERS_DIR = flags.DEFINE_string('peers_dir', _PEERS, 'The folder holding torch_lstm.py.')
_DATA_DIR = flags.DEFINE_string('data_dir', os.path.join(base.SHARED_DATA, 'sst2'), "SST-2's train/dev/test.txt.")
_EPOCHS = flags.DEFINE_integer('epochs', 2, 'Training epochs when --workdir has no weights yet.')
_SEED = flags.DEFINE_integer('seed', 1, 'torch and shuffling seed.')
_THREADS = flags.DEFINE_integer('threads', 2, 'torch.set_num_threads.')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to bind.')
_PORT = flags.DEFINE_integer('port', 8001, 'Port to bind.')
_MAX_QUEUE = flags.DEFINE_integer('max_queue', 1024, 'Texts waiting at most; beyond it requests get 503.')
_TRAIN_ONLY = flags.DEFINE_bool('train_only', False, 'Train (or check the weights load), then exit.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.')


def main(argv):
  logging.set_verbosity(logging.WARNING)
  # As experiments.serve: uvicorn re-raises the signal it drained on, and a finished drain is a clean stop.
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: sys.exit(0))

  def run():
    if len(argv) > 1:
      raise errors.ConfigError(f'unexpected arguments {argv[1:]}; flags are written --name=value')
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise errors.ConfigError('this Python has no torch: pip install -e ".[peers]" (torch==2.13.0)') from None
    torch.set_num_threads(_THREADS.value)
    peer = import_peer(_PEERS_DIR.value)
    model, stoi, report = train_or_load(_WORKDIR.value, peer, _DATA_DIR.value, _EPOCHS.value, _SEED.value)
    logging.warning('torch peer: dev %.4f, test %.4f', report['dev_accuracy'], report['test_accuracy'])
    if _TRAIN_ONLY.value:
      return
    server.serve(TorchPeerModel(peer, model, stoi, report), host=_HOST.value, port=_PORT.value, max_batch=1,
                 max_queue=_MAX_QUEUE.value, warm_up=True)

  errors.exit_on_user_error(run, _VERBOSE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)

"""The HTTP service: answers in order, every malformed request and limit, micro-batching, the
queue-full answer, the drain on SIGTERM, the loopback load test, and no Flax in its imports."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from bigjax import runs
from bigjax.export import export, loader
from bigjax.serve import app as app_lib
from bigjax.serve import load
from bigjax.serve.batcher import MicroBatcher, QueueFull
from tests.test_export import corpus_texts, tiny_artifact

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMITS = dict(max_body_bytes=4000, max_texts=4, max_text_chars=200)


@pytest.fixture(scope='module')
def artifact(tmp_path_factory):
  _, out, data = tiny_artifact(tmp_path_factory, 'mlp')
  return loader.load(out), out, data


@pytest.fixture(scope='module')
def client(artifact):
  with TestClient(app_lib.create_app(artifact[0], **LIMITS)) as c:
    yield c


def test_predictions_in_order_equal_the_loaders(artifact, client):
  model, _, data = artifact
  texts = corpus_texts(data)[:3] + ['']
  response = client.post('/predict', json={'texts': texts})
  assert response.status_code == 200
  assert response.json() == {'predictions': model.predict(texts)}  # The records of experiments.predict.
  assert all(abs(sum(p['probabilities'].values()) - 1) < 1e-5 for p in response.json()['predictions'])
  health = client.get('/healthz')
  assert health.status_code == 200 and health.json()['status'] == 'ok'
  meta = client.get('/metadata').json()
  assert meta['labels'] == model.labels and meta['input']['bucket_boundaries'] == model.buckets
  assert meta['limits'] == LIMITS and meta['batching']['max_batch'] == 64


def test_a_transformer_run_is_served(tiny_transformer_run, tiny_transformer_artifact):
  workdir, data = tiny_transformer_run
  model = loader.load(tiny_transformer_artifact)
  texts = corpus_texts(data)[:6] + ['', ' '.join(['good', 'bad', 'film'] * 10)]  # Empty; cut to 16 tokens.
  with TestClient(app_lib.create_app(model, **LIMITS)) as c:
    answers = [c.post('/predict', json={'texts': texts[i:i + 4]}) for i in (0, 4)]
    meta = c.get('/metadata').json()
  assert [a.status_code for a in answers] == [200, 200]
  predictions = answers[0].json()['predictions'] + answers[1].json()['predictions']
  # The server's batches of 4 are other programs than predict's batch of 8: equal to float rounding.
  probabilities = lambda records: np.asarray([[p['probabilities'][label] for label in model.labels] for p in records])
  expected = model.predict(texts)
  assert [p['label'] for p in predictions] == [p['label'] for p in expected]
  np.testing.assert_allclose(probabilities(predictions), probabilities(expected), atol=1e-6, rtol=0)
  # The Transformer's own probabilities, as its checkpoint computes them.
  served = probabilities(predictions)
  np.testing.assert_allclose(served, export.checkpoint_probabilities(runs.load_run(workdir), texts), atol=1e-6, rtol=0)
  assert meta['model'] == 'transformer' and meta['input']['max_tokens'] == 16
  assert meta['config']['model']['transformer']['num_layers'] == 1


@pytest.mark.parametrize('body,status,message', [
    (b'', 400, 'the body is empty'),
    (b'  \n', 400, 'the body is empty'),
    (b'{"texts": ["a"', 400, 'malformed JSON'),
    (b'\xff\xfe\xfd', 400, 'not UTF-8'),
    (b'["a"]', 422, 'the body is a JSON list'),
    (b'"a"', 422, 'the body is a JSON str'),
    (b'{}', 422, 'no "texts" field'),
    (b'{"texts": ["a"], "top_k": 2}', 422, "unknown field(s) ['top_k']"),
    (b'{"texts": "a"}', 422, '"texts" is a JSON str'),
    (b'{"texts": {"a": 1}}', 422, '"texts" is a JSON dict'),
    (b'{"texts": []}', 422, '"texts" is empty'),
    (b'{"texts": ["a", 3]}', 422, 'texts[1] is a JSON int'),
    (b'{"texts": [null]}', 422, 'texts[0] is a JSON null'),
    (b'{"texts": [["a"]]}', 422, 'texts[0] is a JSON list'),
    (json.dumps({'texts': ['a'] * 5}).encode(), 413, '5 texts in one request; the limit is 4'),
    (json.dumps({'texts': ['a', 'b' * 201]}).encode(), 413, 'texts[1] has 201 characters; the limit is 200'),
    (json.dumps({'texts': ['a' * 150] * 4}).encode(), 200, ''),  # At the limits: accepted.
    (b' ' * 4001, 413, 'the body has 4001 bytes; the limit is 4000'),
])
def test_malformed_requests_and_limits(client, body, status, message):
  response = client.post('/predict', content=body, headers={'content-type': 'application/json'})
  assert response.status_code == status
  if status != 200:
    assert list(response.json()) == ['error'] and message in response.json()['error']


@pytest.fixture(scope='module')
def server(artifact, tmp_path_factory):
  """The real service (experiments.serve under uvicorn, default limits), its log kept."""
  port = load.free_port()
  log = tmp_path_factory.mktemp('serve_log') / 'server.log'
  argv = [sys.executable, '-m', 'experiments.serve', f'--model={artifact[1]}', f'--port={port}']
  with load.ServerProcess(argv, f'http://127.0.0.1:{port}', start_timeout_s=120, log_path=str(log)) as process:
    yield process, log


_NESTED = 100_000  # Far past the parser's recursion limit, and 200 kB: within the 1 MiB body limit.


@pytest.mark.parametrize('body,status,message', [
    # Valid JSON, but no tokenizer takes the text (it raised, failing every text of its batch: a 500).
    (b'{"texts": ["\\ud800 x"]}', 400, 'texts[0]: not valid Unicode text (a lone surrogate \\ud800 at position 0)'),
    (b'{"texts": ["fine", "x\\udfff"]}', 400, 'texts[1]: not valid Unicode text (a lone surrogate \\udfff at '
     'position 1)'),
    (b'{"texts": ["\xed\xa0\x80"]}', 400, 'lone surrogate \\ud800 at position 0'),  # Raw; json.loads lets it by.
    # The parser's own limits.
    (b'{"texts": ' + b'[' * _NESTED + b']' * _NESTED + b'}', 400, 'the body is nested too deeply'),
    (b'{"a": ' * _NESTED + b'1' + b'}' * _NESTED, 400, 'the body is nested too deeply'),
    (b'{"texts": [' + b'9' * 5000 + b']}', 400, 'the body has a number of 5000 digits; the limit is 4300'),
    # Valid Unicode is a text, however odd: NUL, controls, a noncharacter, an escaped surrogate pair.
    (json.dumps({'texts': ['a\x00b', '\x01\x1f\x7f', '\uffff', '\U0001f600']}).encode(), 200, ''),
], ids=['surrogate', 'low_surrogate', 'raw_surrogate', 'deep_arrays', 'deep_objects', 'long_int', 'odd_unicode'])
def test_hostile_bodies_get_a_json_4xx_from_the_real_server(server, body, status, message):
  process, log = server
  response = httpx.post(process.url + '/predict', content=body, headers={'content-type': 'application/json'},
                        timeout=30)
  assert response.status_code == status, response.text[:300]
  if status == 200:
    assert len(response.json()['predictions']) == 4
  else:
    assert list(response.json()) == ['error'] and message in response.json()['error']
  assert httpx.get(process.url + '/healthz', timeout=10).json()['status'] == 'ok'  # Still answering.
  # Each refusal came from a check that names it: no traceback, no error, not even the catch-all's warning.
  text = log.read_text(encoding='utf-8', errors='replace')
  assert 'Traceback' not in text and 'ERROR' not in text and 'WARNING' not in text, text[-2000:]


@pytest.mark.parametrize('length,status,message', [
    ('\N{SUPERSCRIPT TWO}', 400, "Content-Length '²' is not a number"),  # isdigit() is true, int() refuses it.
    ('9' * 5000, 413, 'Content-Length has 5000 digits; the limit is 4000 bytes'),
], ids=['superscript', 'huge'])
def test_content_length_the_app_cannot_parse(artifact, length, status, message):
  # uvicorn (h11) refuses these before the app; another ASGI server might not. httpx's ASGI
  # transport passes the header's bytes as sent (TestClient re-encodes them as UTF-8).
  app = app_lib.create_app(artifact[0], **LIMITS)

  async def send():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://test') as http:
      return await http.post('/predict', content=b'{"texts": ["a"]}',
                             headers={'content-length': length.encode('latin-1')})

  response = asyncio.run(send())
  assert response.status_code == status and response.json() == {'error': message}


def test_a_failing_model_answers_500_json_and_logs_one_line(artifact, caplog):
  class Broken:
    def __getattr__(self, name):
      return getattr(artifact[0], name)

    def run_rows(self, rows, max_rows=None):
      raise RuntimeError('XLA ran out of\nmemory')

  with TestClient(app_lib.create_app(Broken())) as c, caplog.at_level('ERROR', logger='uvicorn.error'):
    response = c.post('/predict', json={'texts': ['a', 'b']})
    assert c.get('/healthz').status_code == 200
  assert response.status_code == 500
  assert response.json() == {'error': 'the model failed (RuntimeError); the server log has the details'}
  assert [r.getMessage() for r in caplog.records] == [
      'POST /predict: the model failed on 2 text(s): RuntimeError: XLA ran out of memory']
  assert not any(r.exc_info for r in caplog.records)


def test_a_body_failure_no_check_names_is_still_a_400(client, monkeypatch, caplog):
  def unforeseen(body, **limits):
    raise KeyError(body[:8])

  monkeypatch.setattr(app_lib, 'parse_texts', unforeseen)
  with caplog.at_level('WARNING', logger='uvicorn.error'):
    response = client.post('/predict', json={'texts': ['a']})
  assert response.status_code == 400
  assert response.json() == {'error': 'the body cannot be read as {"texts": ["a text", ...]} (KeyError)'}
  assert [r.getMessage() for r in caplog.records] == [
      "POST /predict: a body no check names was refused: KeyError: b'{\"texts\"'"]


def test_streamed_body_over_the_limit_and_wrong_routes(client):
  # No Content-Length (chunked): refused once the bytes read pass the limit.
  response = client.post('/predict', content=iter([b' ' * 1000] * 5))
  assert response.status_code == 413 and 'more than 4000 bytes' in response.json()['error']
  assert client.get('/predict').status_code == 405 and 'POST /predict' in client.get('/predict').json()['error']
  assert client.get('/nowhere').status_code == 404 and 'error' in client.get('/nowhere').json()


def test_micro_batches_share_calls_and_keep_order():
  calls = []

  def run_batch(texts):
    calls.append(list(texts))
    return np.asarray([[float(t), -float(t)] for t in texts])

  async def scenario():
    batcher = MicroBatcher(run_batch, max_batch=4, max_wait_s=0.2, max_queue=16)
    await batcher.start()
    results = await asyncio.gather(*(batcher.submit([str(i)]) for i in range(5)),
                                   batcher.submit(['5', '6']))
    await batcher.close()
    return results

  results = asyncio.run(scenario())
  assert [r[:, 0].tolist() for r in results] == [[0.0], [1.0], [2.0], [3.0], [4.0], [5.0, 6.0]]
  assert [len(c) for c in calls] == [4, 3]  # Seven texts, at most four a call, none lost or reordered.


class _Gated:
  """The artifact, but each model call waits for `release` (and says it started)."""

  def __init__(self, artifact):
    self._artifact, self.started, self.release = artifact, threading.Event(), threading.Event()
    self.sizes = []

  def __getattr__(self, name):
    return getattr(self._artifact, name)

  def run_rows(self, rows, max_rows=None):
    self.sizes.append(len(rows))
    self.started.set()
    assert self.release.wait(30)
    return self._artifact.run_rows(rows, max_rows)


def test_queue_full_answers_503_with_retry_after(artifact):
  gated = _Gated(artifact[0])
  app = app_lib.create_app(gated, max_batch=2, max_wait_ms=0, max_queue=3, max_texts=3, retry_after_s=7)

  async def scenario():
    async with app.router.lifespan_context(app):
      transport = httpx.ASGITransport(app=app)
      async with httpx.AsyncClient(transport=transport, base_url='http://test') as http:
        first = asyncio.ensure_future(http.post('/predict', json={'texts': ['great', 'dull']}))
        while not gated.started.is_set():  # The first batch is in the model, holding the worker.
          await asyncio.sleep(0.01)
        second = asyncio.ensure_future(http.post('/predict', json={'texts': ['fine', 'bad', 'ok']}))
        while app.state.batcher.queued < 3:  # Three texts queued: the queue is full.
          await asyncio.sleep(0.01)
        refused = await http.post('/predict', json={'texts': ['one more']})
        health = (await http.get('/healthz')).json()
        gated.release.set()
        return refused, health, await first, await second

  refused, health, first, second = asyncio.run(scenario())
  assert refused.status_code == 503 and refused.headers['retry-after'] == '7'
  assert 'busy' in refused.json()['error'] and health['queued'] == 3 and health['in_flight'] == 2
  assert first.status_code == second.status_code == 200
  assert len(second.json()['predictions']) == 3 and gated.sizes == [2, 2, 1]
  with pytest.raises(QueueFull):  # The batcher refuses a request whole, never in part.
    async def over():
      b = MicroBatcher(lambda t: np.zeros((len(t), 2)), max_queue=2)
      await b.start()
      await b.submit(['a', 'b', 'c'])
    asyncio.run(over())


def test_sigterm_drains_held_requests_then_exits(artifact):
  model, out, data = artifact
  port = load.free_port()
  url = f'http://127.0.0.1:{port}'
  # A long max wait holds the requests in the queue until the signal makes the batcher flush.
  argv = [sys.executable, '-m', 'experiments.serve', f'--model={out}', f'--port={port}', '--max_wait_ms=60000',
          '--max_batch=64']
  server = load.ServerProcess(argv, url, start_timeout_s=120)
  texts = corpus_texts(data)
  with server:
    held = {}

    def send(i):
      held[i] = httpx.post(url + '/predict', json={'texts': texts[i:i + 2]}, timeout=60)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
      t.start()
    deadline = time.monotonic() + 30
    while httpx.get(url + '/healthz', timeout=5).json()['queued'] < 8 and time.monotonic() < deadline:
      time.sleep(0.05)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    for t in threads:
      t.join(60)
    answered = time.monotonic() - signalled
    assert server.process.wait(timeout=60) == 0
  assert [held[i].status_code for i in range(4)] == [200] * 4
  assert [held[i].json()['predictions'] for i in range(4)] == [model.predict(texts[i:i + 2]) for i in range(4)]
  assert answered < 30  # Answered on the signal, not after the 60 s max wait.
  with pytest.raises(httpx.ConnectError):  # It no longer takes requests.
    httpx.get(url + '/healthz', timeout=5)


def test_loopback_load_test_has_zero_errors(artifact):
  import uvicorn  # pylint: disable=g-import-not-at-top
  model, _, data = artifact
  port = load.free_port()
  app = app_lib.create_app(model, max_batch=16, max_wait_ms=2)
  server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning'))
  thread = threading.Thread(target=server.run, daemon=True)  # Not the main thread: no signal handlers.
  thread.start()
  try:
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
      time.sleep(0.05)
    result = asyncio.run(load.run_load(f'http://127.0.0.1:{port}', corpus_texts(data), requests=200,
                                       concurrency=8, time_limit_s=60))
  finally:
    server.should_exit = True
    thread.join(30)
  assert result['requests'] == 200 and result['errors'] == 0 and not result['stopped_by_time_limit']
  assert result['latency_ms']['p50'] <= result['latency_ms']['p99'] and result['requests_per_s'] > 0
  assert app.state.batcher.texts == 200 and max(app.state.batcher.batch_sizes) > 1  # Requests shared calls.


def test_load_test_targets_loopback_only():
  assert load.check_loopback('http://127.0.0.1:8000') and load.check_loopback('http://localhost:1')
  for url in ('http://10.1.2.3:8000', 'http://192.168.0.1', 'http://8.8.8.8'):
    with pytest.raises(ValueError, match='only targets loopback'):
      load.check_loopback(url)


def test_serving_imports_neither_flax_nor_training():
  code = ('import sys, bigjax.serve.app, bigjax.serve.server, bigjax.serve.load, bigjax.serve.batcher\n'
          'bad = [m for m in sys.modules if m.split(".")[0] == "flax" or m.startswith(("bigjax.train", '
          '"bigjax.models", "bigjax.runs", "bigjax.data"))]\n'
          'assert not bad, bad\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-2000:]


def test_the_same_app_serves_the_torch_peer_lstm(tmp_path):
  """benchmarks.torch_peer_serve: torch_lstm.py's model behind bigjax's app answers each text
  with the model's own softmax, one call per text; its weights reload from the workdir."""
  torch = pytest.importorskip('torch', reason='torch is not installed here (pip install -e ".[peers]")')
  from benchmarks import torch_peer_model as torch_peer_serve  # pylint: disable=import-outside-toplevel
  peers = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'peers')
  if not os.path.isfile(os.path.join(peers, 'torch_lstm.py')):
    pytest.skip(f'{peers}/torch_lstm.py is absent (the shared folder beside the project)')
  data = tmp_path / 'sst2'
  data.mkdir()
  words = ['good', 'great', 'fun', 'bad', 'dull', 'awful']
  rng = np.random.default_rng(0)
  for name, count in (('train', 64), ('dev', 16), ('test', 16)):
    lines = [f'{label} ' + ' '.join(rng.choice(words[3 * label:3 * label + 3], size=4)) for label in
             rng.integers(0, 2, count)]
    (data / f'{name}.txt').write_text('\n'.join(lines) + '\n')
  peer = torch_peer_serve.import_peer(peers)
  model, stoi, report = torch_peer_serve.train_or_load(str(tmp_path / 'peer'), peer, str(data), epochs=1, seed=1)
  again, stoi_again, _ = torch_peer_serve.train_or_load(str(tmp_path / 'peer'), peer, str(data), epochs=1, seed=1)
  assert stoi_again == stoi and 0.0 <= report['test_accuracy'] <= 1.0
  for a, b in zip(model.state_dict().values(), again.state_dict().values()):
    assert torch.equal(a, b)
  served = torch_peer_serve.TorchPeerModel(peer, model, stoi, report)
  texts = ['good fun', 'awful dull bad', 'never seen words', '']
  with TestClient(app_lib.create_app(served, max_batch=1)) as c:
    answer = c.post('/predict', json={'texts': texts})
    meta = c.get('/metadata').json()
  assert answer.status_code == 200
  with torch.inference_mode():
    for text, record in zip(texts, answer.json()['predictions']):
      ids = [stoi.get(w, peer.UNK) for w in text.split()] or [peer.UNK]
      expected = torch.softmax(model.eval()(torch.tensor([ids]), torch.tensor([len(ids)])), -1)[0].numpy()
      got = np.array([record['probabilities'][label] for label in served.labels])
      np.testing.assert_allclose(got, expected, rtol=1e-6)
      assert record['label'] == served.labels[int(np.argmax(expected))]
  assert meta['served']['batch_sizes'] == {'1': len(texts)} and 'torch' in meta['versions']

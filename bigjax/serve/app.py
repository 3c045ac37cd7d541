"""The HTTP JSON service for an exported model: an ASGI app on Starlette, served by uvicorn.

Why Starlette and not FastAPI: the service has three routes and validates one small JSON
body by hand so that every refusal is a one-line JSON message with the status it
deserves; FastAPI would add pydantic and its own 422 error format for no gain. Starlette is
what FastAPI is built on (maintained by Encode, like uvicorn and httpx), and its
TestClient tests the app in-process.

  POST /predict   {"texts": ["...", ...]} -> {"predictions": [{"label": ..., "probabilities": {label: p}}, ...]}
                  in the order of the texts; the records are those of experiments.predict's JSONL.
  GET  /healthz   {"status": "ok", "queued": n, "in_flight": m}; 503 {"status": "draining"} while shutting down
  GET  /metadata  labels, input encoding, platforms, versions, the run, test metrics, limits, batching

Refusals, each {"error": "one line"}:
  400 empty body, malformed JSON or UTF-8, a body nested too deeply or with a number too long for
      the parser, a text that is not valid Unicode (a lone surrogate such as "\\ud800", which
      JSON escapes allow but no tokenizer takes); any other failure to read the body
  413 body over max_body_bytes, more than max_texts texts, a text over max_text_chars characters
  422 a body that is not {"texts": [string, ...]} (not an object, missing or unknown fields, wrong
      types, an empty list)
  404, 405 unknown path or method
  503 + Retry-After: the micro-batching queue is full, or the server is shutting down
  500 the model itself failed (logged as one line): never the answer to what a client sent
An empty string is a valid text (the model's output for an empty sequence), and so is any valid
Unicode: NUL, control characters and noncharacters reach the tokenizer, which maps them as it does
in training (unknown tokens, mostly).

Imports neither Flax nor the training code: the model is an artifact (bigjax.export.loader).
"""
import contextlib
import json
import logging
from typing import Optional, Protocol, Sequence

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bigjax.export import loader
from bigjax.serve.batcher import Closed, MicroBatcher, QueueFull


_LOG = logging.getLogger('uvicorn.error')  # The server's own log (bigjax.serve.server), one format.
# Longest integer literal parsed: Python's own default (sys.get_int_max_str_digits), kept where an
# interpreter lifts it, as int() of a longer one is quadratic. No field of the body is a number.
_MAX_INT_DIGITS = 4300


class _Refusal(Exception):

  def __init__(self, status: int, message: str, headers: Optional[dict] = None):
    super().__init__(message)
    self.status, self.message, self.headers = status, message, headers


def _error(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
  # A lone surrogate echoed from the body would make the JSON answer itself unencodable.
  message = message.encode('utf-8', 'backslashreplace').decode('utf-8')
  return JSONResponse({'error': message}, status_code=status, headers=headers)


def _one_line(e: BaseException) -> str:
  """The exception as one log line, a surrogate in it escaped (else the log handler itself fails)."""
  text = f'{type(e).__name__}: ' + ' '.join(str(e).split())[:300]
  return text.encode('utf-8', 'backslashreplace').decode('utf-8')


async def _read_body(request: Request, limit: int) -> bytes:
  """The body, refused as soon as it passes limit bytes (declared or streamed), never read whole first."""
  declared = request.headers.get('content-length')
  if declared is not None:
    # isdigit() alone takes '²' (int() does not); a number of thousands of digits is merely too big.
    if not (declared.isascii() and declared.isdigit()):
      raise _Refusal(400, f'Content-Length {declared!r} is not a number')
    if len(declared.lstrip('0')) > 18:
      raise _Refusal(413, f'Content-Length has {len(declared.lstrip("0"))} digits; the limit is {limit} bytes')
    if int(declared) > limit:
      raise _Refusal(413, f'the body has {int(declared)} bytes; the limit is {limit}')
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise _Refusal(413, f'the body has more than {limit} bytes, the limit')
    chunks.append(chunk)
  return b''.join(chunks)


def _parse_int(literal: str) -> int:
  digits = len(literal.lstrip('-'))
  if digits > _MAX_INT_DIGITS:
    raise _Refusal(400, f'the body has a number of {digits} digits; the limit is {_MAX_INT_DIGITS} '
                   '(and the texts are strings)')
  return int(literal)


def check_text(i: int, text: str) -> None:
  """A _Refusal unless text is valid Unicode, which is all the tokenizer needs.

  JSON's \\u escapes (and json.loads of bytes, which decodes with surrogatepass) let a lone
  surrogate into a str; the tokenizer (Rust strings) refuses it, failing the whole batch it shares.
  Every other code point, NUL and control characters included, tokenizes as in training.
  """
  try:
    text.encode('utf-8')
  except UnicodeEncodeError as e:
    raise _Refusal(400, f'texts[{i}]: not valid Unicode text (a lone surrogate \\u{ord(text[e.start]):04x} '
                   f'at position {e.start})') from None


def parse_texts(body: bytes, *, max_texts: int, max_text_chars: int) -> list:
  """The texts of a /predict body, or a _Refusal naming what is wrong."""
  if not body.strip():
    raise _Refusal(400, 'the body is empty; send {"texts": ["a text", ...]}')
  try:
    payload = json.loads(body, parse_int=_parse_int)
  except UnicodeDecodeError as e:
    raise _Refusal(400, f'the body is not UTF-8 ({e.reason} at byte {e.start})') from None
  except ValueError as e:
    raise _Refusal(400, f'malformed JSON: {e}') from None
  except RecursionError:  # The parser recurses once per nested array or object.
    raise _Refusal(400, 'the body is nested too deeply; send {"texts": ["a text", ...]}') from None
  if not isinstance(payload, dict):
    raise _Refusal(422, f'the body is a JSON {type(payload).__name__}; send an object {{"texts": [...]}}')
  unknown = sorted(set(payload) - {'texts'})
  if unknown:
    raise _Refusal(422, f'unknown field(s) {unknown}; the body has one field, "texts"')
  if 'texts' not in payload:
    raise _Refusal(422, 'the body has no "texts" field; send {"texts": ["a text", ...]}')
  texts = payload['texts']
  if not isinstance(texts, list):
    raise _Refusal(422, f'"texts" is a JSON {type(texts).__name__}; it must be a list of strings')
  if not texts:
    raise _Refusal(422, '"texts" is empty; send at least one text')
  if len(texts) > max_texts:
    raise _Refusal(413, f'{len(texts)} texts in one request; the limit is {max_texts}')
  for i, text in enumerate(texts):
    if not isinstance(text, str):
      raise _Refusal(422, f'texts[{i}] is a JSON {type(text).__name__ if text is not None else "null"}; '
                     'every text must be a string')
    if len(text) > max_text_chars:
      raise _Refusal(413, f'texts[{i}] has {len(text)} characters; the limit is {max_text_chars}')
    check_text(i, text)
  return texts


class ServedModel(Protocol):
  """What the service needs of a model: bigjax.export.loader.Artifact is one; a peer framework's
  model wrapped the same way is served by the same app (benchmarks.torch_peer_serve)."""
  labels: list
  buckets: list  # The widths batches are padded to (may be empty: no padding).

  def encode(self, texts: Sequence[str]) -> list: ...
  def run_rows(self, rows: list, max_rows: Optional[int] = None) -> np.ndarray: ...  # float32[len(rows), K]
  def records(self, probabilities: np.ndarray) -> list[dict]: ...
  def warm_up(self, max_rows: int) -> int: ...
  def describe(self) -> dict: ...  # What GET /metadata tells of the model.


def create_app(model: ServedModel, *, max_batch: int = 64, max_wait_ms: float = 0.0, max_queue: int = 1024,
               max_body_bytes: int = 1 << 20, max_texts: int = 256, max_text_chars: int = 20_000,
               retry_after_s: int = 1, warm_up: bool = False) -> Starlette:
  """The service for one model (an artifact, say). The batcher starts and stops with the app (its lifespan)."""
  if max_texts > max_queue:
    raise ValueError(f'max_texts={max_texts} exceeds max_queue={max_queue}: such a request could never be queued')

  def run_batch(texts):
    return model.run_rows(model.encode(texts), max_rows=max_batch)

  batcher = MicroBatcher(run_batch, max_batch=max_batch, max_wait_s=max_wait_ms / 1000, max_queue=max_queue,
                         retry_after_s=retry_after_s)
  limits = {'max_body_bytes': max_body_bytes, 'max_texts': max_texts, 'max_text_chars': max_text_chars}
  batching = {'max_batch': max_batch, 'max_wait_ms': max_wait_ms, 'max_queue': max_queue,
              'row_sizes': loader.row_sizes(max_batch), 'length_buckets': model.buckets}
  public = {**model.describe(), 'limits': limits, 'batching': batching}

  async def predict(request: Request):
    try:
      body = await _read_body(request, max_body_bytes)
      texts = parse_texts(body, max_texts=max_texts, max_text_chars=max_text_chars)
    except _Refusal as e:
      return _error(e.status, e.message, e.headers)
    except ClientDisconnect:
      return _error(400, 'the client disconnected before sending the whole body')
    except Exception as e:  # pylint: disable=broad-except  # Only the body got here: the client's fault.
      _LOG.warning('POST /predict: a body no check names was refused: %s', _one_line(e))
      return _error(400, f'the body cannot be read as {{"texts": ["a text", ...]}} ({type(e).__name__})')
    try:
      probabilities = await batcher.submit(texts)
      return JSONResponse({'predictions': model.records(np.asarray(probabilities))})
    except QueueFull as e:
      return _error(503, f'busy: {e}', {'Retry-After': str(e.retry_after_s)})
    except Closed as e:
      return _error(503, str(e), {'Retry-After': str(retry_after_s)})
    except Exception as e:  # pylint: disable=broad-except  # Valid texts: the model's fault, not the client's.
      _LOG.error('POST /predict: the model failed on %d text(s): %s', len(texts), _one_line(e))
      return _error(500, f'the model failed ({type(e).__name__}); the server log has the details')

  async def healthz(request: Request):
    del request
    status = {'queued': batcher.queued, 'in_flight': batcher.in_flight, 'batches': batcher.batches,
              'texts': batcher.texts}
    if batcher.draining:
      return JSONResponse({'status': 'draining', **status}, status_code=503)
    return JSONResponse({'status': 'ok', **status})

  async def metadata(request: Request):
    del request
    return JSONResponse({**public, 'served': {'batches': batcher.batches, 'texts': batcher.texts,
                                              'batch_sizes': dict(sorted(batcher.batch_sizes.items()))}})

  async def http_error(request: Request, exc: HTTPException):
    del request
    return _error(exc.status_code, f'{exc.detail}: use POST /predict, GET /healthz or GET /metadata',
                  getattr(exc, 'headers', None))

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    await batcher.start()
    if warm_up:  # Compile every (rows, bucket) shape before the port opens (uvicorn binds after this).
      await batcher.run_in_worker_thread(model.warm_up, max_batch)
    try:
      yield
    finally:
      await batcher.close()  # After uvicorn has answered every open request: nothing is left unanswered.

  app = Starlette(routes=[Route('/predict', predict, methods=['POST']), Route('/healthz', healthz, methods=['GET']),
                          Route('/metadata', metadata, methods=['GET'])],
                  exception_handlers={HTTPException: http_error}, lifespan=lifespan)
  app.state.batcher = batcher
  return app

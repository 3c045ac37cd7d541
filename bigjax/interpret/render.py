"""Explanations for people: a coloured terminal rendering and a self-contained HTML report.

Colours: blue for tokens in favour of the predicted class, red against, shaded by the
size of the attribution relative to the text's largest (per method), so every text uses
the full scale. The HTML page has no scripts and loads nothing (no fonts, CDN or
images): it opens the same offline, attached to a mail or years later.
"""
import datetime
import html
import math
from typing import Optional, Sequence

import numpy as np

FOR = (31, 119, 180)  # Blue: supports the predicted class.
AGAINST = (214, 39, 40)  # Red: speaks against it.
METHOD_NAMES = {'integrated_gradients': 'integrated gradients', 'gradient_x_input': 'gradient × input',
                'occlusion': 'occlusion', 'random': 'random'}
METASPACE = '\u2581'  # BPE pieces that start a word carry it (tokenizers' Metaspace).


def pieces(tokens: Sequence[str]) -> list[tuple[str, bool]]:
  """(text to show, whether a space goes before it) per token.

  Whole-word vocabularies: a space between all tokens. BPE: a space only before pieces
  that start a word, so "un" "believ" "able" reads as one word, shaded piece by piece.
  """
  subwords = any(t.startswith(METASPACE) for t in tokens)
  out = []
  for i, t in enumerate(tokens):
    if subwords:
      out.append((t.lstrip(METASPACE) or t, i > 0 and t.startswith(METASPACE)))
    else:
      out.append((t, i > 0))
  return out


def shade(value: float, scale: float) -> tuple[tuple[int, int, int], float]:
  """(background RGB, strength in [0, 1]) of one attribution on a text's scale."""
  strength = 0.0 if scale <= 0 or not math.isfinite(value) else min(1.0, abs(value) / scale)
  color = FOR if value >= 0 else AGAINST
  rgb = tuple(int(round(255 + (c - 255) * strength)) for c in color)
  return rgb, strength


def scale_of(values) -> float:
  values = np.abs(np.asarray(values, np.float64))
  return float(values.max()) if values.size else 0.0


def _percent(x: Optional[float]) -> str:
  return f'{100 * x:.3g} %' if x is not None and math.isfinite(x) else 'n/a'


def _count(n: int, noun: str = 'text') -> str:
  return f'{n} {noun}' + ('' if n == 1 else 's')


def headline(e, gold_names: Optional[Sequence[str]] = None) -> str:
  """'predicted: 1 (p = 0.934)  completeness error 0.0012 (0.05 % of |f(x) − f(x′)|)'."""
  text = f'predicted: {e.label_name} (p = {e.probability:.3f})'
  if e.gold is not None:
    text += f'  gold: {gold_names[e.gold] if gold_names else e.gold}'
  if e.completeness:
    c = e.completeness
    text += f'  completeness error {c["error"]:.2g} ({_percent(c["relative_error"])} of |f(x) − f(x′)|)'
  if e.truncated:
    text += '  [truncated to the tokens the model reads]'
  return text


def terminal(e, method: str = 'integrated_gradients', *, color: bool = True,
             gold_names: Optional[Sequence[str]] = None) -> str:
  """Two lines: the headline, and the tokens shaded by `method` (24-bit ANSI background colours).

  Without colour each token is followed by its attribution, e.g. `great[+0.82]`.
  """
  if not e.tokens:
    return f'{headline(e, gold_names)}\n  {METHOD_NAMES.get(method, method)}: (no tokens: nothing to attribute)'
  values = e.attributions[method]
  scale = scale_of(values)
  out = []
  for (text, space), v in zip(pieces(e.tokens), values):
    if color:
      rgb, strength = shade(float(v), scale)
      fg = '97' if strength > 0.6 else '30'  # White text on the darkest shades, black elsewhere.
      token = f'\x1b[48;2;{rgb[0]};{rgb[1]};{rgb[2]}m\x1b[{fg}m{text}\x1b[0m'
    else:
      token = f'{text}[{float(v):+.2f}]'
    out.append((' ' if space else '') + token)
  return f'{headline(e, gold_names)}\n  {METHOD_NAMES.get(method, method)}: {"".join(out)}'


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 70em;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.4em; margin-bottom: .2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: .9em; }
table.faith { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
table.faith th, table.faith td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
table.faith th:first-child, table.faith td:first-child { text-align: left; white-space: nowrap; }
.example { border: 1px solid #ddd; border-radius: 6px; padding: .5em .8em; margin: .7em 0; }
.head { font-size: .9em; color: #333; margin-bottom: .3em; }
.head .label { font-weight: 600; }
.row { display: flex; gap: .8em; align-items: baseline; margin: .15em 0; }
.method { flex: 0 0 11em; color: #666; font-size: .85em; }
.tokens { flex: 1; }
.tok { padding: .05em .15em; border-radius: 3px; }
.legend span { padding: .1em .5em; border-radius: 3px; margin-right: .4em; }
.good { color: #1a7f37; } .bad { color: #c0392b; }
"""


def _token_spans(e, method: str) -> str:
  values = e.attributions[method]
  scale = scale_of(values)
  spans = []
  for (text, space), v in zip(pieces(e.tokens), values):
    rgb, strength = shade(float(v), scale)
    fg = '#fff' if strength > 0.6 else '#111'
    spans.append(('&#32;' if space else '') +
                 f'<span class="tok" style="background:rgb{rgb};color:{fg}" title="{float(v):+.4g}">'
                 f'{html.escape(text)}</span>')
  return ''.join(spans)


def _faithfulness_html(table: dict) -> str:
  if not table or not table.get('methods'):
    return ''
  fractions = ', '.join(f'{100 * f:g}' for f in table['fractions'])
  rows = []
  for name, m in table['methods'].items():
    vs = m.get('vs_random', {}).get('comprehensiveness_aopc')
    margin = '—'
    if vs:
      ci = vs['ci95']  # None for one text: no spread to make an interval of.
      margin = f'{vs["mean"]:+.3f} ' + (f'[{ci[0]:+.3f}, {ci[1]:+.3f}]' if ci else '(one text: no interval)')
    rows.append(f'<tr><td>{html.escape(METHOD_NAMES.get(name, name))}</td>'
                f'<td>{m["comprehensiveness_aopc"]:.3f}</td><td>{m["sufficiency_aopc"]:.3f}</td>'
                f'<td>{m["deletion_auc"]:.3f}</td><td>{margin}</td></tr>')
  return (f'<h2>Faithfulness over {_count(table["examples"])}</h2>'
          '<table class="faith"><tr><th>method</th><th>comprehensiveness AOPC ↑</th><th>sufficiency AOPC ↓</th>'
          "<th>deletion AUC ↓</th><th>comprehensiveness − random's (95 % CI)</th></tr>" + ''.join(rows) +
          '</table>' + _deletion_svg(table) +
          f'<p class="meta">AOPC: the mean over the top {fractions} % of tokens (at least one) of the drop in the '
          'predicted class\'s probability when those tokens are deleted (comprehensiveness) or are all that is '
          'kept (sufficiency), as in ERASER (DeYoung et al. 2020). Deletion curve: that probability as the '
          'top-ranked tokens are deleted, 0 to 100 %.</p>')


def _deletion_svg(table: dict) -> str:
  """The deletion curves as an inline SVG line chart (no script, no image file)."""
  w, h, pad = 420, 200, 34
  colors = {'integrated_gradients': '#1f77b4', 'gradient_x_input': '#2ca02c', 'occlusion': '#9467bd',
            'random': '#7f7f7f'}
  xs = table['deletion_fractions']
  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 150}" height="{h}" role="img" '
           'aria-label="deletion curves">',
           f'<rect x="{pad}" y="8" width="{w - pad - 8}" height="{h - pad - 8}" fill="none" stroke="#bbb"/>']
  for k, (name, m) in enumerate(table['methods'].items()):
    points = ' '.join(f'{pad + x * (w - pad - 8):.1f},{8 + (1 - y) * (h - pad - 8):.1f}'
                      for x, y in zip(xs, m['deletion_curve']))
    color = colors.get(name, '#000')
    parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
    parts.append(f'<text x="{w + 4}" y="{24 + 16 * k}" font-size="12" fill="{color}">'
                 f'{html.escape(METHOD_NAMES.get(name, name))}</text>')
  parts.append(f'<text x="{pad}" y="{h - 8}" font-size="11">0 % deleted</text>'
               f'<text x="{w - 60}" y="{h - 8}" font-size="11">100 %</text>'
               f'<text x="2" y="18" font-size="11">p=1</text><text x="2" y="{h - pad}" font-size="11">0</text>')
  parts.append('</svg>')
  return ''.join(parts)


def html_page(explanations: Sequence, *, title: str = 'bigjax attributions', meta: Optional[dict] = None,
              faithfulness_table: Optional[dict] = None, completeness: Optional[dict] = None,
              gold_names: Optional[Sequence[str]] = None, skipped: Sequence[str] = ()) -> str:
  """A self-contained HTML report: settings, the faithfulness table, then a heat-map per text.

  `skipped` names the texts left out for having no tokens (nothing to attribute).
  """
  meta = dict(meta or {})
  meta.setdefault('written', datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))
  info = ' · '.join(f'{html.escape(str(k))}: {html.escape(str(v))}' for k, v in meta.items())
  body = [f'<h1>{html.escape(title)}</h1>', f'<p class="meta">{info}</p>',
          '<p class="legend"><span style="background:rgb(31,119,180);color:#fff">for the predicted class</span>'
          '<span style="background:rgb(214,39,40);color:#fff">against it</span>'
          'shade: size relative to the text\'s largest attribution (hover a token for its value)</p>']
  if completeness:
    body.append(f'<p>Integrated gradients\' completeness error |Σ attributions − (f(x) − f(x′))| over '
                f'{_count(completeness["texts"])}: median {_percent(completeness["median_relative_error"])}, worst '
                f'{_percent(completeness["max_relative_error"])} of |f(x) − f(x′)|.</p>')
  body.append(_faithfulness_html(faithfulness_table or {}))
  body.append(f'<h2>Texts ({len(explanations)})</h2>')
  if skipped:
    body.append(f'<p class="meta">Not explained, no tokens (nothing to attribute): '
                f'{html.escape(", ".join(skipped))}</p>')
  for i, e in enumerate(explanations):
    correct = ''
    if e.gold is not None:
      correct = ' <span class="good">✓</span>' if e.gold == e.label else ' <span class="bad">✗</span>'
    name = html.escape(e.label_name)
    head = html.escape(headline(e, gold_names)).replace(f'predicted: {name}',
                                                        f'predicted: <span class="label">{name}</span>', 1)
    rows = ''.join(f'<div class="row"><div class="method">{html.escape(METHOD_NAMES.get(m, m))}</div>'
                   f'<div class="tokens">{_token_spans(e, m)}</div></div>' for m in e.attributions)
    body.append(f'<div class="example" id="text-{i}"><div class="head">#{i + 1} {head}{correct}</div>{rows}</div>')
  return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
          f'<style>{_CSS}</style></head><body>' + '\n'.join(body) + '</body></html>\n')


def summary_lines(summary: dict) -> str:
  """The completeness summary and the faithfulness table as plain text, for the terminal."""
  lines = []
  c = summary.get('completeness')
  if c:
    lines.append(f'integrated gradients, {_count(c["texts"])}: completeness error median '
                 f'{_percent(c["median_relative_error"])}, worst {_percent(c["max_relative_error"])} of '
                 f'|f(x) − f(x′)| ({_percent(c["share_within_1_percent"])} of texts within 1 %)')
    if c['max_relative_error'] > 0.01 and summary.get('settings', {}).get('rule') != 'adaptive':
      lines.append("  some paths have steps these points miss: --rule=adaptive places the points where f changes "
                   "(an LSTM: with --baseline=padding; docs/results/attributions.md)")
  table = summary.get('faithfulness')
  if table and not table['examples']:
    lines.append('faithfulness: no text with tokens to delete (nothing to measure)')
  elif table and table.get('methods'):
    lines.append(f'faithfulness over {_count(table["examples"])} (AOPC over the top '
                 f'{"/".join(f"{100 * f:g}" for f in table["fractions"])} % of tokens):')
    lines.append(f'  {"method":<22} {"comprehensiveness ↑":>19} {"sufficiency ↓":>14} {"deletion AUC ↓":>15}')
    for name, m in table['methods'].items():
      lines.append(f'  {METHOD_NAMES.get(name, name):<22} {m["comprehensiveness_aopc"]:>19.3f} '
                   f'{m["sufficiency_aopc"]:>14.3f} {m["deletion_auc"]:>15.3f}')
  return '\n'.join(lines)

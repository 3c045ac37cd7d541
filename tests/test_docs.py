"""The README and docs/: every relative link resolves, and the README stays short.

A link is `[text](path)` or `![alt](path)` outside code (fenced blocks and inline code are
skipped); `path` may end in `#anchor`, which must be the GitHub slug of a heading of the
target file (or of this file, for `#anchor` alone). Links with a scheme (https:, mailto:)
are not checked.
"""
import collections
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README_MAX_LINES = 200

_FENCE = re.compile(r'^\s*(```|~~~)')
_INLINE_CODE = re.compile(r'(`+).*?\1')
_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
_HEADING = re.compile(r'^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
_SCHEME = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:')


def markdown_files() -> list:
  return [ROOT / 'README.md'] + sorted((ROOT / 'docs').rglob('*.md'))


def prose_lines(text: str, keep_code: bool = False):
  """(line number, line) of the lines outside fenced code blocks, inline code removed unless
  keep_code (a heading's `code` is part of its slug)."""
  fenced = False
  for number, line in enumerate(text.splitlines(), 1):
    if _FENCE.match(line):
      fenced = not fenced
      continue
    if not fenced:
      yield number, line if keep_code else _INLINE_CODE.sub('', line)


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: its text lowercased, markup and punctuation dropped
  (letters, digits, '_' and '-' kept), spaces turned into '-'."""
  text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # A link's text.
  text = re.sub(r'<[^>]+>', '', text).replace('`', '').lower()
  text = re.sub(r'[^\w\- ]', '', text)
  return text.replace(' ', '-')


def anchors(path: pathlib.Path) -> set:
  """Every heading's slug; a repeated heading gets -1, -2, ... as on GitHub."""
  seen = collections.Counter()
  found = set()
  for _, line in prose_lines(path.read_text(encoding='utf-8'), keep_code=True):
    match = _HEADING.match(line)
    if not match:
      continue
    base = slug(match.group(2))
    found.add(f'{base}-{seen[base]}' if seen[base] else base)
    seen[base] += 1
  return found


def links(path: pathlib.Path):
  """(line number, target) of each relative link in a markdown file."""
  for number, line in prose_lines(path.read_text(encoding='utf-8')):
    for match in _LINK.finditer(line):
      target = match.group(1)
      if target and not _SCHEME.match(target):
        yield number, target


def broken_links(path: pathlib.Path) -> list:
  problems = []
  for number, target in links(path):
    file_part, _, anchor = target.partition('#')
    dest = (path.parent / file_part).resolve() if file_part else path
    where = f'{path.relative_to(ROOT)}:{number}: {target}'
    if not dest.exists():
      problems.append(f'{where}: no such file')
    elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
      problems.append(f'{where}: no heading with that anchor in {dest.relative_to(ROOT)}')
  return problems


def test_slugs_follow_github():
  assert slug('ULMFiT on IMDB (`ulmfit_imdb.py`)') == 'ulmfit-on-imdb-ulmfit_imdbpy'
  assert slug("The language model's speed against PyTorch") == 'the-language-models-speed-against-pytorch'
  assert slug('Compiling ahead (2026-12-02, commit 9d6f09b)') == 'compiling-ahead-2026-12-02-commit-9d6f09b'
  assert slug('Both directions: the forward and backward ensemble') == 'both-directions-the-forward-and-backward-ensemble'


def test_the_checker_finds_a_broken_link_and_anchor(tmp_path, monkeypatch):
  monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
  (tmp_path / 'a.md').write_text('# Title\n\n## Two words\n', encoding='utf-8')
  page = tmp_path / 'b.md'
  page.write_text('[ok](a.md#two-words) [gone](missing.md) [bad](a.md#nope) [self](#here)\n'
                  '`[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```\n## Here\n', encoding='utf-8')
  problems = broken_links(page)
  assert len(problems) == 2, problems
  assert 'missing.md: no such file' in problems[0] and 'a.md#nope' in problems[1]


@pytest.mark.parametrize('path', markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
  assert not broken_links(path), '\n'.join(broken_links(path))


def test_the_docs_exist_where_the_readme_says():
  for folder in ('docs/guides', 'docs/results'):
    assert list((ROOT / folder).glob('*.md')), folder


def test_readme_is_short():
  lines = (ROOT / 'README.md').read_text(encoding='utf-8').splitlines()
  assert len(lines) <= README_MAX_LINES, f'README.md has {len(lines)} lines; keep it to {README_MAX_LINES}'

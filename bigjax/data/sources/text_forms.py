"""data.text_form: how the files write their text, and turning it into plain text.

'ptb': Penn Treebank tokens (SST-2's files, and GLUE's: `do n't`, `-lrb-`, `` quotes ''),
joined back into plain text on reading (`ptb_to_plain`).
"""

import re

from bigjax.data.sources import common
from bigjax.errors import DataError

TEXT_FORMS = ('plain', 'ptb')

# Penn Treebank tokens -> plain text, in order. Only what changes tokens is undone (the
# tokenizers split punctuation again). NLTK's TreebankWordDetokenizer knows neither
# lower-case brackets (-lrb-) nor escaped slashes, so it would not do here.
_PTB_TO_PLAIN = [
    (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE), r'\1'),  # Contractions rejoined.
    *((re.compile(f'-{code}-', re.IGNORECASE), bracket)
      for code, bracket in (('lrb', '('), ('rrb', ')'), ('lsb', '['), ('rsb', ']'), ('lcb', '{'), ('rcb', '}'))),
    (re.compile(r"``|''"), '"'),
    (re.compile(r'\\([/*])'), r'\1'),  # Escaped slashes and stars.
]


def ptb_to_plain(text: str) -> str:
  """Penn Treebank tokens back to plain English: `wo n't` -> `won't`, `-lrb-` -> `(`.

  Served text is plain, and so is the text a pretrained tokenizer learnt from: there a
  treebank's `do n't` becomes `do n ' t` where plain text gives `don ' t`, so a model that
  has read only the treebank form meets negations elsewhere in a form it has never seen.
  """
  for pattern, plain in _PTB_TO_PLAIN:
    text = pattern.sub(plain, text)
  return text


def check_text_form(text_form: str) -> None:
  if text_form not in TEXT_FORMS:
    raise DataError(f'data.text_form={text_form!r} is unknown; use one of {", ".join(map(repr, TEXT_FORMS))}.')


def to_plain(parts: dict[str, common.Part], text_form: str) -> None:
  if text_form == 'ptb':
    for part in parts.values():
      part.texts = [ptb_to_plain(text) for text in part.texts]

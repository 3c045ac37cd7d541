"""What a model module declares about itself, once: everything the rest of bigjax asks of a model.

A model module ends with its ModelSpec(s); bigjax.models.registry maps names to them. Config
defaults and valid ranges, the choice of training command (classifier or language model),
the model card's description, quantization's limits, the longest row it reads and the
benchmark's FLOPs all come from here, so nothing else switches on a model's name.
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional

CLASSIFIER = 'classifier'
LANGUAGE_MODEL = 'language_model'
MASKED_LM = 'masked_lm'
KINDS = (CLASSIFIER, LANGUAGE_MODEL, MASKED_LM)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A model, as the registry knows it.

  name: model.name in a config.
  kind: CLASSIFIER (logits per text), LANGUAGE_MODEL (logits per token, state carried) or
    MASKED_LM (logits at chosen positions; a module with `mlm_logits`, initialized through it).
  section: the config subsection with its own settings, model.<section>; two models may
    share one (the LSTM classifier and language model read model.lstm; the Transformer
    classifier and masked LM, model.transformer).
  fields: that section's keys as KEY=DEFAULT or KEY=(DEFAULT, (low, high[, closed])), the
    form configs declare numbers with their valid ranges (bigjax.config.schema).
  choices: {key: valid values} of the section's keys that take one of a few values.
  module: the Flax module class `build` makes (registry.build_model constructs it directly, and
    registry.spec_of_module finds a module's spec by it: the first registered, where two share it).
  build(own, *, vocab_size, num_classes, embed_dim, dropout) -> the Flax module; own is the
    section as a dict (a run's config.json may predate newer keys: build reads them with .get).
  training_flops(own, *, batch, width, real_tokens, embed_dim, num_classes) ->
    {'executed', 'useful'}: multiply-add FLOPs of one training step (3x the forward pass),
    over the padded batch and over real tokens only.
  description: what the model is, for the model card.
  static_activation_scales: int8 with calibrated (static) activation scales works (qwix can
    keep one range per matmul input: no matmul inside a lax.scan, no input with a length axis).
  int8_float_modules: module paths as qwix names them (a regular expression matched whole, as
    'layers_[0-9]+') whose own matmuls int8 quantization leaves in float32; their submodules' are
    quantized. For products of two activations, where an int8 scale would mix what the model
    keeps apart (the Transformer's attention, whose values' scale would span a row's padding).
  max_tokens_key: the key of the section that bounds a row's tokens ('max_positions': the
    Transformer's position table), '' for no bound: data.max_len may not exceed it, and an
    exported function refuses wider rows.
  """
  name: str
  kind: str
  section: str
  fields: Mapping[str, Any]
  module: type  # The Flax module class build returns.
  build: Callable[..., Any]
  choices: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  training_flops: Optional[Callable[..., dict]] = None
  description: str = ''
  static_activation_scales: bool = True
  int8_float_modules: str = ''
  max_tokens_key: str = ''

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'model {self.name!r}: kind {self.kind!r} is not one of {KINDS}')
    unknown = set(self.choices) - set(self.fields)
    if unknown:
      raise ValueError(f'model {self.name!r}: choices for keys it does not declare: {sorted(unknown)}')

  def defaults(self) -> dict:
    """The section's default values."""
    return {key: value[0] if _has_range(value) else value for key, value in self.fields.items()}

  def max_tokens(self, model_section: Mapping) -> Optional[int]:
    """The most tokens a row may hold, from a config's model section; None for no bound."""
    return int(model_section[self.section][self.max_tokens_key]) if self.max_tokens_key else None

  def ranges(self) -> dict:
    """{key: (low, high, closed)} of the section's numeric keys."""
    out = {}
    for key, value in self.fields.items():
      if _has_range(value):
        low, high, *closed = value[1]
        out[key] = (low, high, closed[0] if closed else 'both')
    return out


def _has_range(value) -> bool:
  return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], tuple)

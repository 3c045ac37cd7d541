"""bf16 instructions read from /proc/cpuinfo, and the warning a bf16 LSTM gets without them."""
import logging

import pytest

from bigjax import experiment
from bigjax import hostcpu
from experiments.configs import lm_imdb, lstm_sst2, mlp_sst2

_ZEN3 = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n\nprocessor\t: 1\n'
_SAPPHIRE_RAPIDS = 'processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n'
_ZEN4 = 'processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n'
_NEOVERSE_V1 = 'processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n'
_NEOVERSE_N1 = 'processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 atomics\n'


@pytest.mark.parametrize('text, expected', [(_ZEN3, False), (_SAPPHIRE_RAPIDS, True), (_ZEN4, True),
                                            (_NEOVERSE_V1, True), (_NEOVERSE_N1, False), ('processor\t: 0\n', None)])
def test_bf16_instructions_from_the_flags_line(tmp_path, text, expected):
  path = tmp_path / 'cpuinfo'
  path.write_text(text)
  assert hostcpu.native_bf16_matmuls(str(path)) is expected


def test_no_cpuinfo_tells_nothing(tmp_path):
  assert hostcpu.native_bf16_matmuls(str(tmp_path / 'absent')) is None


def test_only_a_flag_of_its_own_counts(tmp_path):
  """avx512_bf16's neighbours (avx512bw, avx512_vnni) are not bf16 instructions."""
  path = tmp_path / 'cpuinfo'
  path.write_text('flags\t\t: avx512f avx512bw avx512_vnni avx512_fp16\n')
  assert hostcpu.native_bf16_matmuls(str(path)) is False


@pytest.mark.parametrize('has_bf16, config, dtype, warned', [
    (False, lm_imdb, 'bfloat16', True), (False, lstm_sst2, 'bfloat16', True), (True, lm_imdb, 'bfloat16', False),
    (None, lm_imdb, 'bfloat16', False), (False, lm_imdb, 'float32', False), (False, mlp_sst2, None, False)])
def test_a_bf16_lstm_is_warned_only_without_bf16_instructions(monkeypatch, caplog, has_bf16, config, dtype, warned):
  monkeypatch.setattr(hostcpu, 'native_bf16_matmuls', lambda: has_bf16)
  c = config.get_config()
  if dtype:
    c.model.lstm.dtype = dtype
  with caplog.at_level(logging.WARNING):
    experiment.build_model(c.model, vocab_size=50, num_classes=0 if c.model.name == 'lstm_lm' else 2)
  warnings = [r.getMessage() for r in caplog.records if 'without bf16 instructions' in r.getMessage()]
  assert len(warnings) == warned, warnings
  if warned:
    assert '--config.model.lstm.dtype=float32' in warnings[0]

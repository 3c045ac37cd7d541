"""What the host CPU's instructions say about XLA:CPU's bf16 matmuls.

A bf16 LSTM (`model.lstm.dtype=bfloat16`, as lstm_sst2.py, lm_imdb.py and ulmfit_imdb.py ship)
is faster than float32 only where the CPU has bf16 dot-product instructions. Without them, on
the 2-core AVX2 VM (AMD EPYC, Zen 3), a bf16 matmul ran at 58 % of an f32 one's speed, and
float32 trained the IMDB language model 1.24x and the SST-2 LSTM 1.37x faster
(docs/results/RESULTS.md, "bf16 on a CPU without bf16 instructions").
"""
from typing import Optional

# /proc/cpuinfo flags of bf16 dot-product instructions: x86's AVX512-BF16 and AMX-BF16, Arm's BF16.
BF16_FLAGS = frozenset({'avx512_bf16', 'amx_bf16', 'bf16'})


def native_bf16_matmuls(cpuinfo_path: str = '/proc/cpuinfo') -> Optional[bool]:
  """Whether the CPU has bf16 dot-product instructions; None where the file cannot tell
  (not Linux, or no flags line in it)."""
  try:
    with open(cpuinfo_path, encoding='utf-8', errors='replace') as f:
      for line in f:
        key, sep, value = line.partition(':')
        if sep and key.strip() in ('flags', 'Features'):  # x86 names the line 'flags', Arm 'Features'.
          return not BF16_FLAGS.isdisjoint(value.split())
  except OSError:
    pass
  return None

"""Pretrained checkpoints in and out: BERT-family Hugging Face folders as bigjax Transformers.

A folder as `transformers` writes it (config.json, model.safetensors or a sharded
model.safetensors.index.json, tokenizer.json, tokenizer_config.json) of a BERT, RoBERTa or
DistilBERT model becomes the start of a classifier run (--config.init.pretrained=FOLDER):

- `architecture`: config.json -> the `transformer` model's settings (sizes, post-LN, LayerNorm
  epsilon, GELU, token types, RoBERTa's position offset, the classification head's activation);
- `weights`: safetensors tensors <-> the model's parameters, by one table of key names per
  model type that both directions read (PyTorch's [out, in] Linear weights transposed,
  query/key/value split into heads); a key missing, left over or of the wrong shape is an
  error naming it;
- `tokenizer.json` is the run's tokenizer (bigjax.data.tokenizer), with the special tokens its
  post-processor adds;
- `export`: a finetuned run written back as a folder that
  `transformers.AutoModelForSequenceClassification` and `AutoTokenizer` load.

Reading needs no PyTorch: safetensors opens the files as numpy arrays.
"""
from bigjax.huggingface.architecture import (Architecture, configure, folder_record, read_architecture,
                                             SUPPORTED_TYPES)
from bigjax.huggingface.tokenizer import read_tokenizer
from bigjax.huggingface.weights import read_params, unused_patterns
# bigjax.huggingface.export (write_folder) imports bigjax.runs: import it where it is used.

"""Generate tests/fixtures/bert_reference.npz: last hidden states of transformers' PyTorch BertModel.

Run once, in a throwaway venv that has torch (never a project dependency):

    python3 -m venv /tmp/torchref && /tmp/torchref/bin/pip install torch==2.13.0 transformers safetensors numpy
    /tmp/torchref/bin/python scripts/make_reference_fixture.py --model-dir "$(.venv/bin/python -c \
        'from compression.weights import base_model_dir; print(base_model_dir())')"

The fixture stores the token ids, attention mask and hidden states (float32) for a few fixed
sentences padded to one batch; tests/test_model.py compares the Flax port against it without torch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import BertModel, BertTokenizerFast

SENTENCES = [
    "I love this new phone, the battery lasts forever!",
    "worst customer service ever. never again",
    "The meeting is at 3pm on Tuesday.",
    "ok",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/bert_reference.npz"))
    args = ap.parse_args()
    tok = BertTokenizerFast.from_pretrained(args.model_dir, local_files_only=True)
    model = BertModel.from_pretrained(args.model_dir, local_files_only=True, add_pooling_layer=False).eval()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    np.savez_compressed(
        args.out,
        input_ids=enc["input_ids"].numpy().astype(np.int32),
        attention_mask=enc["attention_mask"].numpy().astype(np.int32),
        hidden=hidden.numpy().astype(np.float32),
        torch_version=np.array(torch.__version__),
    )
    print(f"wrote {args.out}: hidden {tuple(hidden.shape)}")


if __name__ == "__main__":
    main()

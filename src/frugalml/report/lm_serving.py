"""The sections of a language-model speed report (``frugal bench-lm``) and a serving report (``frugal bench``).

``lm_section`` reads the dicts ``runtime.lm.lm_bench.bench_lm`` returns, one per engine option (float32, int8,
speculative, ...): decode tokens/s against quality (top-1 agreement with the unoptimised model), TTFT and TPOT,
the roofline fraction, quality per prompt slice. ``serving_section`` reads the dict ``serve.loadgen.bench``
returns (bench.json): latency against achieved throughput per run, the objective drawn, VALID and INVALID runs
told apart by marker shape and colour. Both read only the result dicts, tolerate missing parts (an old file, a
run without quality or batching) and say in words what a figure shows.
"""

from __future__ import annotations

import math

from .page import Figure, Section, Table
from .plots import GREY, MARKERS, PALETTE, figure, point_id, to_svg

DASH = "–"

# how a serving run is drawn, by verdict: a shape and a colour each, so neither alone carries the verdict
VERDICT_STYLE = {
    True: {"marker": "o", "color": PALETTE[0], "word": "VALID"},
    False: {"marker": "X", "color": PALETTE[1], "word": "INVALID"},
    None: {"marker": "s", "color": GREY, "word": "not judged"},
}

# ---------------------------------------------------------------------------------------------------- numbers


def _finite(x) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def num(x, digits: int = 3) -> str:
    """``digits`` significant digits without an exponent (1235, 41.2, 1.16, 0.0146; below 1e-4: 1.25e-05);
    integer digits are never dropped; "–" for a missing or non-finite number."""
    x = _finite(x)
    if x is None:
        return DASH
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag < -4:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - mag)
    rounded = round(x, decimals)
    if rounded and math.floor(math.log10(abs(rounded))) > mag:  # 9.996 -> 10.0, not 10.00
        decimals = max(0, decimals - 1)
    return f"{x:.{decimals}f}"


def pct(x, digits: int = 3) -> str:
    """A fraction as a percentage (0.973 -> 97.3%); never 100% unless it is 1, never 0% unless it is 0."""
    x = _finite(x)
    if x is None:
        return DASH
    s = num(100 * x, digits)
    if x < 1 and s in ("100", "100.0", "100.00"):
        return ">99.9%"
    return s + "%"


def times(x) -> str:
    """A ratio: 1.83x."""
    return DASH if _finite(x) is None else f"{num(x)}x"


def short(x) -> str:
    """A setting as given (15, 2.5, 0.25): up to 4 significant digits, no trailing zeros."""
    return DASH if _finite(x) is None else f"{float(x):.4g}"


def mb(b) -> str:
    """Bytes in MB (10^6), 3 significant digits."""
    b = _finite(b)
    return DASH if b is None else num(b / 1e6)


def count(x) -> str:
    return DASH if _finite(x) is None else str(int(x))


def _words(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


# ---------------------------------------------------------------------------------------------------- bench-lm


def _unique(names: list[str]) -> list[str]:
    """Names made unique in order: a repeated one gets " (2)", " (3)" (two runs of one option)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def _is_plain(r: dict) -> bool:
    """The unoptimised option: float32 weights, no quantization, plain decoding."""
    e = r.get("engine")
    if isinstance(e, dict):
        return (not e.get("quantize") and e.get("dtype", "float32") == "float32" and not e.get("draft")
                and not e.get("prompt_lookup"))
    return r.get("label") == "float32"


def _quality(r: dict) -> dict | None:
    """Overall quality of one option against the unoptimised model, or None when none was measured.
    ``reference``: the option is the unoptimised model itself (bench-lm then measures perplexity alone),
    agreement 1 and KL 0 by definition."""
    q = r.get("quality")
    if not isinstance(q, dict) or not q:
        return None
    o = q.get("overall")
    if isinstance(o, dict) and _finite(o.get("top1_agreement_fraction")) is not None:
        return {"top1": o["top1_agreement_fraction"], "kl_mean": o.get("kl_mean_nats"),
                "kl_max": o.get("kl_max_nats"), "ppl_ratio": q.get("perplexity_ratio"), "reference": False,
                "acceptance": o.get("acceptance_rate_mean")}
    if "slices" not in q and _finite(q.get("perplexity_reference")) is not None:
        return {"top1": 1.0, "kl_mean": 0.0, "kl_max": 0.0, "ppl_ratio": 1.0, "reference": True,
                "acceptance": None}
    return None


def _base(rs: list[dict]) -> int | None:
    """The option the others' speed is compared with: the first unoptimised one, else none (one option: none)."""
    if len(rs) < 2:
        return None
    return next((i for i, r in enumerate(rs) if _is_plain(r)), 0)


def _vs(rs, i, base, key="decode_tokens_per_s") -> float | None:
    if base is None or i == base:
        return None
    a, b = _finite(rs[i].get(key)), _finite(rs[base].get(key))
    return a / b if a is not None and b else None


def _style(i: int) -> dict:
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]}


def lm_section(results: dict | list[dict], id: str = "lm") -> Section:
    """``frugal bench-lm`` results, one per engine option, as one section: tokens/s against quality, latency,
    the roofline, quality per prompt slice. ``id`` prefixes the section's figure ids (unique in a page)."""
    rs = [results] if isinstance(results, dict) else [r for r in results if isinstance(r, dict)]
    sec = Section(id=id, title="Language model: speed against quality")
    if not rs:
        sec.paragraphs.append("No bench-lm result to show.")
        return sec
    labels = _unique([str(r.get("label") or f"option {i + 1}") for i, r in enumerate(rs)])
    base = _base(rs)
    sec.paragraphs += _lm_paragraphs(rs, labels, base)
    for fig in (_lm_tradeoff(rs, labels, base, f"{id}-tradeoff"), _lm_latency(rs, labels, f"{id}-latency"),
                _lm_slices(rs, labels, f"{id}-slices")):
        if fig is not None:
            sec.figures.append(fig)
    sec.tables.append(_lm_speed_table(rs, labels, base))
    return sec


def _lm_paragraphs(rs: list[dict], labels: list[str], base: int | None) -> list[str]:
    paras = []
    models = list(dict.fromkeys(str(r.get("model", "?")) for r in rs))
    where = list(dict.fromkeys((r.get("machine"), r.get("threads")) for r in rs))
    m, threads = where[0]
    machine = ("on " + (str(m) if m else "an unrecorded machine")
               + (f", {_plural(threads, 'thread')}" if threads is not None and "thread" not in str(m) else ""))
    r0 = rs[0]
    prompts = (f"{count(r0.get('prompts'))} prompts ({count(r0.get('prompt_tokens'))} prompt tokens, "
               f"{count(r0.get('generated_tokens'))} tokens generated)" if r0.get("prompts") is not None else "")
    paras.append(
        f"frugal bench-lm timed {_words(models)} in {_plural(len(rs), 'engine option')} "
        f"({_words(labels)}) {machine}"
        + (f": {prompts} from the built-in prompt set, one slice per task, greedy." if prompts else ".")
        + " Decode tokens/s is the batch-1 rate after the first token; time to first token (TTFT) is a prompt's "
        "prefill time, its median and p99 over the prompts; time per output token (TPOT) is each later token's time, "
        "p50 and p99 over every token generated.")
    if len(where) > 1:
        paras.append("The options did not all run on the same machine and threads ("
                     + "; ".join(f"{lab}: {r.get('machine') or '?'}, {r.get('threads', '?')} threads"
                                 for lab, r in zip(labels, rs))
                     + "): their speeds do not compare like for like.")
    # the roofline
    roof = []
    for lab, r in zip(labels, rs):
        if _finite(r.get("roofline_fraction")) is None:
            continue
        roof.append(f"{lab} decodes at {pct(r['roofline_fraction'])} of its roofline "
                    f"({num(r.get('roofline_tokens_per_s'))} tokens/s: {mb(r.get('weight_bytes_per_token'))} MB of "
                    f"weights per token at {num(r.get('bandwidth_gb_s'))} GB/s)")
    if roof:
        paras.append("The roofline is the fastest batch-1 decode the memory allows: each new token reads every "
                     "weight once, so it is the read bandwidth measured on this machine with the same threads "
                     "divided by the weight bytes read per token. " + "; ".join(roof) + ".")
    # quality
    with_q = [lab for lab, r in zip(labels, rs) if _quality(r) is not None]
    without = [lab for lab, r in zip(labels, rs) if _quality(r) is None]
    if with_q:
        text = ("Quality is measured against the same model unoptimised (float32 weights, plain decoding) on every "
                "built-in prompt: top-1 agreement is the share of next-token positions where both models pick the "
                "same token, KL the divergence of their next-token distributions in nats (0: identical).")
        refs = [lab for lab, r in zip(labels, rs) if (_quality(r) or {}).get("reference")]
        if refs:
            text += (f" {_words(refs)} {'is' if len(refs) == 1 else 'are'} the unoptimised model itself: agreement "
                     "100% and KL 0 by definition, perplexity "
                     + _words([num((r.get('quality') or {}).get('perplexity_reference'))
                               for lab, r in zip(labels, rs) if lab in refs]) + " on held-out text.")
        ppl = [f"{lab} x{num(q['ppl_ratio'], 4)}" for lab, r in zip(labels, rs)
               if (q := _quality(r)) and not q["reference"] and _finite(q["ppl_ratio"]) is not None]
        if ppl:
            text += " Perplexity on held-out text, against the unoptimised model's: " + ", ".join(ppl) + "."
        if without:
            text += (f" {_words(without)} {'has' if len(without) == 1 else 'have'} no quality measurement (run "
                     "without --no-quality): not on the speed-quality plot.")
        paras.append(text)
    else:
        paras.append("No option has a quality measurement (bench-lm ran with --no-quality): only speed is shown, "
                     "and there is no speed-quality plot.")
    # speculative acceptance
    acc = [f"{lab} {pct(r['acceptance_rate'])}" for lab, r in zip(labels, rs)
           if _finite(r.get("acceptance_rate")) is not None]
    if acc:
        paras.append("Speculative decoding: the share of guessed tokens the model kept, over the timed prompts: "
                     + ", ".join(acc) + ".")
    # batching
    batched, single = [], []
    for lab, r in zip(labels, rs):
        b = r.get("batched")
        if not isinstance(b, dict):
            single.append(lab)
            continue
        ratio = b.get("ratio_to_batch1")
        batched.append(f"{lab} {num(b.get('total_tokens_per_s'))} tokens/s in total with {count(b.get('batch'))} "
                       "at once" + (f", {times(ratio)} its batch-1 rate" if _finite(ratio) is not None else
                                    " (it does not speculate when batched: no like-for-like batch-1 rate)"))
    if batched:
        paras.append("With several requests running at once (continuous batching, plain decoding): "
                     + "; ".join(batched) + "."
                     + (f" {_words(single)}: not measured with concurrent requests (--batch 1)." if single else ""))
    else:
        paras.append("Concurrent requests were not measured (--batch 1).")
    # transformers' generate
    base_runs = [(lab, r["baseline"]) for lab, r in zip(labels, rs) if isinstance(r.get("baseline"), dict)]
    for lab, bl in base_runs:
        same = bl.get("identical_greedy_tokens")
        paras.append(f"{bl.get('name', 'transformers generate')} on the same weights, prompts and threads: "
                     f"{num(bl.get('end_to_end_tokens_per_s'))} tokens/s end to end, "
                     f"{num(bl.get('decode_tokens_per_s'))} decoding; frugalml's {lab} is {times(bl.get('ratio'))} "
                     "as fast end to end"
                     + ("" if same is None else f", with {'identical' if same else 'different'} greedy tokens")
                     + ".")
    if base is not None:
        paras.append(f"Speed ratios are against {labels[base]}.")
    return paras


def _lm_tradeoff(rs, labels, base, fid) -> Figure | None:
    pts = [(i, _finite(r.get("decode_tokens_per_s")), _quality(r)) for i, r in enumerate(rs)]
    pts = [(i, x, q) for i, x, q in pts if x is not None and q is not None]
    if not pts:
        return None
    finding = []
    for i, x, q in pts:
        ratio = _vs(rs, i, base)
        s = f"{labels[i]} decodes {num(x)} tokens/s"
        if ratio is not None:
            s += f", {times(ratio)} {labels[base]}"
        s += (f", keeping {pct(q['top1'])} top-1 agreement" if not q["reference"] else
              ", the unoptimised reference (100% by definition)")
        if not q["reference"] and _finite(q["kl_mean"]) is not None:
            s += f" (KL {num(q['kl_mean'])} nats)"
        finding.append(s)
    missing = [labels[i] for i, r in enumerate(rs) if _quality(r) is None]
    alt = ("Decode tokens/s at batch 1 against top-1 agreement with the unoptimised model: " + "; ".join(finding)
           + "." + (f" Not plotted, no quality measured: {_words(missing)}." if missing else ""))
    with figure(6.4, 3.6) as (fig, ax):
        for i, x, q in pts:
            st = _style(i)
            ax.plot([x], [q["top1"]], ls="none", ms=8, label=labels[i], gid=point_id(fid, labels[i]), **st)
            ax.annotate(labels[i], (x, q["top1"]), textcoords="offset points", xytext=(7, 4), fontsize=8)
        bl = next((r["baseline"] for r in rs if isinstance(r.get("baseline"), dict)
                   and _finite(r["baseline"].get("decode_tokens_per_s")) is not None), None)
        xs = [x for _, x, _ in pts]
        if bl is not None:
            bx = bl["decode_tokens_per_s"]
            ax.axvline(bx, color=GREY, ls=":", lw=1.2, gid=f"{fid}-baseline",
                       label=f"{bl.get('name', 'transformers generate')} (no quality: same model)")
            xs.append(bx)
        ax.set_xlim(0, 1.3 * max(xs))
        low = min(q["top1"] for _, _, q in pts)
        ax.set_ylim(max(0.0, min(0.9, low - 0.05)), 1.02)
        from matplotlib.ticker import PercentFormatter

        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.set_xlabel("decode tokens/s, batch 1 (higher is faster)")
        ax.set_ylabel("top-1 agreement with the\nunoptimised model")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left", frameon=False)
        svg = to_svg(fig, fid, alt)
    rows = []
    for i, x, q in pts:
        ref = q["reference"]
        vs = [] if base is None else [times(_vs(rs, i, base)) if i != base else "1x"]
        rows.append([labels[i], num(x), *vs, pct(q["top1"]) + (" (reference)" if ref else ""), num(q["kl_mean"]),
                     num(q["kl_max"]), num(q["ppl_ratio"], 4)])
    vs = [] if base is None else [f"vs {labels[base]}"]
    table = Table(["option", "decode tokens/s", *vs, "top-1 agreement", "KL mean (nats)", "KL max (nats)",
                   "perplexity ratio"], rows,
                  caption="Quality against the unoptimised model (float32, plain decoding), all built-in prompts")
    return Figure(fid, "Decode speed against quality, per engine option", svg, alt, table)


def _lm_latency(rs, labels, fid) -> Figure | None:
    idx = [i for i, r in enumerate(rs) if any(_finite(r.get(k)) is not None
                                               for k in ("ttft_ms", "tpot_ms_p50", "tpot_ms_p99"))]
    if not idx:
        return None
    finding = [f"{labels[i]} {num(rs[i].get('ttft_ms'))} ms to the first token (p99 {num(rs[i].get('ttft_ms_p99'))} "
               f"ms), then {num(rs[i].get('tpot_ms_p50'))} ms per token (p99 {num(rs[i].get('tpot_ms_p99'))} ms)"
               for i in idx]
    alt = "Time to first token and time per output token (p50, p99), batch 1: " + "; ".join(finding) + "."
    n = len(idx)
    with figure(6.4, max(2.0, 0.45 * n + 1.3), ncols=2) as (fig, axes):
        left, right = axes[0][0], axes[0][1]
        for y, i in enumerate(idx):
            r, st = rs[i], _style(i)
            ttft, ttft99 = _finite(r.get("ttft_ms")), _finite(r.get("ttft_ms_p99"))
            if ttft is not None and ttft99 is not None:
                left.plot([ttft, ttft99], [y, y], color=st["color"], lw=1.5, gid=point_id(fid, f"{labels[i]} ttft"))
            if ttft is not None:
                left.plot([ttft], [y], ls="none", ms=7, gid=point_id(fid, f"{labels[i]} ttft p50"), **st)
            if ttft99 is not None:
                left.plot([ttft99], [y], ls="none", ms=7, mfc="white", gid=point_id(fid, f"{labels[i]} ttft p99"),
                          **st)
            p50, p99 = _finite(r.get("tpot_ms_p50")), _finite(r.get("tpot_ms_p99"))
            if p50 is not None and p99 is not None:
                right.plot([p50, p99], [y, y], color=st["color"], lw=1.5, gid=point_id(fid, f"{labels[i]} tpot"))
            if p50 is not None:
                right.plot([p50], [y], ls="none", ms=7, gid=point_id(fid, f"{labels[i]} tpot p50"), **st)
            if p99 is not None:
                right.plot([p99], [y], ls="none", ms=7, mfc="white", gid=point_id(fid, f"{labels[i]} tpot p99"),
                           **st)
        for ax, title in ((left, "TTFT ms: p50 filled, p99 hollow"), (right, "TPOT ms: p50 filled, p99 hollow")):
            ax.set_yticks(range(n))
            ax.set_yticklabels([labels[i] for i in idx] if ax is left else [""] * n)
            ax.set_ylim(-0.6, n - 0.4)
            ax.invert_yaxis()
            ax.set_xlim(left=0)
            ax.set_xlabel(title)
            ax.grid(axis="x", alpha=0.3)
        svg = to_svg(fig, fid, alt)
    table = Table(["option", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms"],
                  [[labels[i], num(rs[i].get("ttft_ms")), num(rs[i].get("ttft_ms_p99")), num(rs[i].get("tpot_ms_p50")),
                    num(rs[i].get("tpot_ms_p99"))] for i in idx],
                  caption="Batch 1; TTFT: prefill time of a prompt (p99 over a few prompts is about the slowest); "
                  "TPOT: over every token after the first")
    return Figure(fid, "Time to first token and time per output token", svg, alt, table)


def _slices_of(r: dict) -> dict[str, dict]:
    q = r.get("quality")
    s = q.get("slices") if isinstance(q, dict) else None
    return {k: v for k, v in s.items() if isinstance(v, dict)} if isinstance(s, dict) else {}


def _lm_slices(rs, labels, fid) -> Figure | None:
    idx = [i for i, r in enumerate(rs) if _slices_of(r)]
    if not idx:
        return None
    names = list(dict.fromkeys(s for i in idx for s in _slices_of(rs[i])))
    with_acc = any(_finite(v.get("acceptance_rate_mean")) is not None for i in idx for v in _slices_of(rs[i]).values())
    finding = []
    for i in idx:
        sl = {k: v for k, v in _slices_of(rs[i]).items() if _finite(v.get("top1_agreement_fraction")) is not None}
        if not sl:
            continue
        lo = min(sl, key=lambda k: sl[k]["top1_agreement_fraction"])
        hi = max(sl, key=lambda k: sl[k]["top1_agreement_fraction"])
        a_lo, a_hi = sl[lo]["top1_agreement_fraction"], sl[hi]["top1_agreement_fraction"]
        s = (f"{labels[i]} agrees least on {lo} ({pct(a_lo)}), most on {hi} ({pct(a_hi)})" if a_lo != a_hi else
             f"{labels[i]} agrees {pct(a_lo)} on every slice")
        acc = {k: v["acceptance_rate_mean"] for k, v in sl.items()
               if _finite(v.get("acceptance_rate_mean")) is not None}
        if acc:
            alo, ahi = min(acc, key=acc.get), max(acc, key=acc.get)
            s += (f", accepts {pct(acc[alo])} of guesses on {alo} to {pct(acc[ahi])} on {ahi}"
                  if acc[alo] != acc[ahi] else f", accepts {pct(acc[alo])} of guesses on every slice")
        finding.append(s)
    alt = "Top-1 agreement with the unoptimised model per prompt slice: " + "; ".join(finding) + "."
    ncols = 3 if with_acc else 2
    k = len(idx)
    with figure(6.4 if ncols == 2 else 8.0, 3.2, ncols=ncols) as (fig, axes):
        axs = axes[0]
        width = 0.6 / max(k, 1)
        for j, i in enumerate(idx):
            st, sl = _style(i), _slices_of(rs[i])
            for x, name in enumerate(names):
                v = sl.get(name)
                if not v:
                    continue
                xo = x - 0.3 + width * (j + 0.5)
                tag = f"{labels[i]} {name}"
                if _finite(v.get("top1_agreement_fraction")) is not None:
                    axs[0].plot([xo], [v["top1_agreement_fraction"]], ls="none", ms=6, gid=point_id(fid, tag),
                                label=labels[i] if x == 0 else None, **st)
                if _finite(v.get("kl_mean_nats")) is not None:
                    axs[1].plot([xo], [v["kl_mean_nats"]], ls="none", ms=6, gid=point_id(fid, f"{tag} kl mean"), **st)
                if _finite(v.get("kl_max_nats")) is not None:
                    axs[1].plot([xo], [v["kl_max_nats"]], ls="none", ms=6, mfc="white",
                                gid=point_id(fid, f"{tag} kl max"), **st)
                if with_acc and _finite(v.get("acceptance_rate_mean")) is not None:
                    axs[2].plot([xo], [v["acceptance_rate_mean"]], ls="none", ms=6,
                                gid=point_id(fid, f"{tag} acceptance"), **st)
        from matplotlib.ticker import PercentFormatter

        titles = ["top-1 agreement", "KL nats: mean filled, max hollow", "speculative acceptance"]
        for c, ax in enumerate(axs):
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right")
            ax.set_title(titles[c], fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1)) if c != 1 else ax.set_ylim(bottom=0)
        if with_acc:
            axs[2].set_ylim(-0.02, 1.02)
        handles, names_ = axs[0].get_legend_handles_labels()
        axs[-1].legend(handles, names_, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
        svg = to_svg(fig, fid, alt)
    cols = ["option", "slice", "prompts", "positions", "top-1 agreement", "KL mean (nats)", "KL max (nats)"]
    if with_acc:
        cols.append("acceptance")
    rows = []
    for i in idx:
        overall = (rs[i].get("quality") or {}).get("overall")
        items = list(_slices_of(rs[i]).items()) + ([("overall", overall)] if isinstance(overall, dict) else [])
        for name, v in items:
            row = [labels[i], name, count(v.get("prompts")), count(v.get("positions")),
                   pct(v.get("top1_agreement_fraction")), num(v.get("kl_mean_nats")), num(v.get("kl_max_nats"))]
            if with_acc:
                row.append(pct(v.get("acceptance_rate_mean")))
            rows.append(row)
    table = Table(cols, rows, caption="Per prompt slice of the built-in set, against the unoptimised model; overall "
                                      "weights each position equally")
    return Figure(fid, "Quality per prompt slice", svg, alt, table)


def _lm_speed_table(rs, labels, base) -> Table:
    def each(fn):
        return [fn(r) for r in rs]

    def b(key, fmt=num):
        return lambda r: fmt(r["batched"].get(key)) if isinstance(r.get("batched"), dict) else DASH

    rows = [["decode tokens/s, batch 1", *each(lambda r: num(r.get("decode_tokens_per_s")))]]
    if base is not None:
        rows.append([f"decode vs {labels[base]}", *(times(_vs(rs, i, base)) if i != base else "1x"
                                                    for i in range(len(rs)))])
    rows += [
        ["prefill tokens/s", *each(lambda r: num(r.get("prefill_tokens_per_s")))],
        ["end-to-end tokens/s, batch 1", *each(lambda r: num(r.get("end_to_end_tokens_per_s")))],
        ["roofline fraction", *each(lambda r: pct(r.get("roofline_fraction")))],
        ["roofline tokens/s", *each(lambda r: num(r.get("roofline_tokens_per_s")))],
        ["weight MB read per token", *each(lambda r: mb(r.get("weight_bytes_per_token")))],
        ["measured read bandwidth GB/s", *each(lambda r: num(r.get("bandwidth_gb_s")))],
    ]
    if any(_finite(r.get("acceptance_rate")) is not None for r in rs):
        rows.append(["speculative acceptance", *each(lambda r: pct(r.get("acceptance_rate")))])
    if any(isinstance(r.get("batched"), dict) for r in rs):
        rows += [["concurrent requests (batch)", *each(b("batch", count))],
                 ["total tokens/s, concurrent", *each(b("total_tokens_per_s"))],
                 ["decode tokens/s, concurrent", *each(b("decode_tokens_per_s"))],
                 ["concurrent vs batch 1 (end to end)", *each(b("ratio_to_batch1", times))],
                 ["TTFT p50 ms, concurrent (queued)", *each(b("ttft_ms_p50"))],
                 ["share of time in prefills, concurrent", *each(b("prefill_share", pct))]]
    if any(isinstance(r.get("baseline"), dict) for r in rs):
        def bl(key, fmt=num):
            return lambda r: fmt(r["baseline"].get(key)) if isinstance(r.get("baseline"), dict) else DASH

        rows += [["transformers generate tokens/s, end to end", *each(bl("end_to_end_tokens_per_s"))],
                 ["frugalml vs transformers, end to end", *each(bl("ratio", times))],
                 ["identical greedy tokens", *each(lambda r: DASH if not isinstance(r.get("baseline"), dict) else
                                                   {True: "yes", False: "no"}.get(
                                                       r["baseline"].get("identical_greedy_tokens"), DASH))]]
    rows += [["peak memory MB", *each(lambda r: num(r.get("peak_memory_mb")))],
             ["load s", *each(lambda r: num(r.get("load_s")))]]
    if any(_finite(r.get("compile_s")) is not None for r in rs):
        rows.append(["compile s", *each(lambda r: num(r.get("compile_s")))])
    rows.append(["threads", *each(lambda r: count(r.get("threads")))])
    return Table(["measure", *labels], rows, caption="Speed per engine option")


# ---------------------------------------------------------------------------------------------------- bench


def _runs(b: dict) -> list[dict]:
    """The runs of a bench: a sweep's steps in the order run, else its one result. Each: name (the target rate,
    or the run's number), qps, valid (True/False, None when not judged), r (the run's summary)."""
    runs = []
    sweep = b.get("sweep")
    if isinstance(sweep, dict) and isinstance(sweep.get("steps"), list):
        for st in sweep["steps"]:
            r = st.get("result") if isinstance(st, dict) else None
            if isinstance(r, dict):
                runs.append({"qps": st.get("qps", r.get("target_qps")), "r": r,
                             "valid": (r.get("validity") or {}).get("valid", st.get("passed"))})
    elif isinstance(b.get("result"), dict):
        r = b["result"]
        v = r.get("validity")
        runs.append({"qps": r.get("target_qps"), "r": r, "valid": v.get("valid") if isinstance(v, dict) else None})
    names = _unique([f"{run['qps']:g}" if _finite(run["qps"]) is not None else str(k + 1)
                     for k, run in enumerate(runs)])
    for run, name in zip(runs, names):
        run["name"] = name
    return runs


def _reasons(r: dict) -> list[str]:
    v = r.get("validity")
    if not isinstance(v, dict):
        return []
    if isinstance(v.get("reasons"), list):
        return [str(x) for x in v["reasons"]]
    return [f"{c.get('rule')}: {c.get('detail')}" for c in v.get("checks", []) if not c.get("ok")]


def _verdict(run: dict) -> str:
    word = VERDICT_STYLE[run["valid"]]["word"]
    return word + (": " + "; ".join(_reasons(run["r"])) if run["valid"] is False and _reasons(run["r"]) else "")


def _rate_unit(b: dict) -> tuple[str, str]:
    """(key of the achieved throughput, its unit in words)."""
    if b.get("kind") == "language_model":
        return "output_throughput", "output tokens/s"
    return "request_throughput", "requests/s"


def _legend_handles(runs, extra=()):
    from matplotlib.lines import Line2D

    seen = list(dict.fromkeys(run["valid"] for run in runs))
    hs = [Line2D([], [], ls="none", marker=VERDICT_STYLE[v]["marker"], color=VERDICT_STYLE[v]["color"], ms=7,
                 label=VERDICT_STYLE[v]["word"]) for v in seen]
    hs += [Line2D([], [], ls="none", marker="o", color="black", ms=6, label="p99 (filled)"),
           Line2D([], [], ls="none", marker="o", color="black", mfc="white", ms=6, label="p50 (hollow)")]
    return hs + list(extra)


def _plot_runs(ax, fid, runs, xs, p50, p99, suffix=""):
    """Each run's p99 (filled) and p50 (hollow) in its verdict's shape and colour, joined by a thin line; the runs'
    p99s and p50s joined in order of x (the curves)."""
    order = sorted(range(len(runs)), key=lambda k: xs[k])
    for ys, ls, tag in ((p99, "-", "p99"), (p50, ":", "p50")):
        pts = [(xs[k], ys[k]) for k in order if ys[k] is not None]
        if len(pts) > 1:
            ax.plot(*zip(*pts), color="black", lw=0.8, ls=ls, alpha=0.6, gid=f"{fid}-{tag}{suffix}-curve")
    for k, run in enumerate(runs):
        st = VERDICT_STYLE[run["valid"]]
        pid = point_id(fid, run["name"] + suffix)
        if p50[k] is not None and p99[k] is not None:
            ax.plot([xs[k], xs[k]], [p50[k], p99[k]], color=st["color"], lw=1, alpha=0.7)
        if p99[k] is not None:
            ax.plot([xs[k]], [p99[k]], ls="none", marker=st["marker"], color=st["color"], ms=8, gid=pid)
            if _finite(run["qps"]) is not None and len(runs) > 1:
                ax.annotate(f"{short(run['qps'])}/s", (xs[k], p99[k]), textcoords="offset points", xytext=(6, 4),
                            fontsize=7)
        if p50[k] is not None:
            ax.plot([xs[k]], [p50[k]], ls="none", marker=st["marker"], color=st["color"], mfc="white", ms=7,
                    gid=pid + "-p50")


def _log_if_wide(ax, values):
    v = [x for x in values if x is not None and x > 0]
    if v and max(v) / min(v) > 30:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)


def _slo_line(ax, value, gid, label):
    ax.axhline(value, color="black", ls="--", lw=1.2, gid=gid)
    ax.annotate(label, (0.01, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                xytext=(0, 3), fontsize=7)


def serving_section(b: dict, id: str = "serving") -> Section:
    """A ``frugal bench`` result (bench.json) as one section: latency against achieved throughput per run, the
    objective drawn, VALID and INVALID runs told apart; for a language model TTFT and TPOT p99 against the rate.
    ``id`` prefixes the section's figure ids (unique in a page)."""
    sec = Section(id=id, title="Serving: latency against throughput")
    b = b if isinstance(b, dict) else {}
    runs = _runs(b)
    sec.paragraphs += _serving_paragraphs(b, runs)
    if not runs:
        sec.paragraphs.append("The bench holds no measured run to plot.")
        return sec
    sec.figures.append(_serving_latency(b, runs, f"{id}-latency"))
    if b.get("kind") == "language_model":
        fig = _serving_tokens(b, runs, f"{id}-tokens")
        if fig is not None:
            sec.figures.append(fig)
    sec.tables.append(_serving_table(b, runs))
    return sec


def _serving_paragraphs(b: dict, runs: list[dict]) -> list[str]:
    s = b.get("settings") or {}
    lm = b.get("kind") == "language_model"
    scenario = b.get("scenario") or s.get("scenario") or "?"
    what = b.get("model") or b.get("target") or "the model"
    machine = b.get("machine") or {}
    where = ("served in this process for the run" if b.get("server") == "in-process" else
             f"an external server at {b.get('url')}" if b.get("url") else "a server")
    how = {"single-stream": "single-stream: one request at a time, the next sent when the previous is answered",
           "offline": f"offline: every request issued at once, {s.get('concurrency') or 32} in flight at most",
           "server": "server: open-loop Poisson arrivals at a target rate (MLPerf LoadGen's rules)"}.get(
        scenario, scenario)
    payload = (f"each request asks for up to {s.get('max_tokens')} output tokens at temperature 0" if lm else
               f"{_plural(s.get('rows_per_request') or 1, 'row')} per request")
    latency = ("latency is E2EL, send to the last token streamed" if lm else "latency is send to answer read")
    paras = [f"frugal bench loaded {what} ({'a language model' if lm else 'a predictor'}"
             + (f", {b.get('endpoint')}" if b.get("endpoint") else "") + f"), {where}"
             + (f", from a machine with {machine.get('cores')} cores ({machine.get('platform')})"
                if machine.get("cores") else "")
             + f". Scenario {how}; {short(s.get('duration_s'))} s per run; {payload}; {latency}."]
    slo = [(k, label, s.get(k)) for k, label in (("slo_p99_ms", "p99 latency"), ("slo_ttft_ms", "p99 TTFT"),
                                                 ("slo_tpot_ms", "p99 TPOT")) if _finite(s.get(k)) is not None]
    if slo:
        paras.append("Objectives: " + ", ".join(f"{label} at most {short(v)} ms" for _, label, v in slo) + ".")
    else:
        paras.append("No latency objective was set: no line is drawn and no run is judged against one.")
    rate_key, unit = _rate_unit(b)
    sweep = b.get("sweep") if isinstance(b.get("sweep"), dict) else None
    if sweep is not None:
        peak = sweep.get("peak_qps")
        text = (f"The sweep doubled the rate from {short(sweep.get('start_qps'))} requests/s until a run failed, then "
                f"bisected: {_plural(len(runs), 'run')}. ")
        if _finite(peak) is None:
            first = runs[0] if runs else None
            text += ("No rate met every rule: even the first was INVALID"
                     + (f" ({'; '.join(_reasons(first['r']))})" if first and _reasons(first["r"]) else "") + ".")
        else:
            text += (f"The highest VALID rate is {short(peak)} requests/s"
                     + (f", with a goodput of {num(sweep.get('goodput'))} requests/s meeting every objective"
                        if _finite(sweep.get("goodput")) is not None else "") + ".")
            above = sorted((run for run in runs if run["valid"] is False and _finite(run["qps"]) is not None
                            and run["qps"] > peak), key=lambda run: run["qps"])
            if above:
                text += f" The lowest INVALID rate, {short(above[0]['qps'])} requests/s, failed: " + (
                    "; ".join(_reasons(above[0]["r"])) or "a rule") + "."
        paras.append(text)
    elif runs:
        run, r = runs[0], runs[0]["r"]
        if run["valid"] is not None:
            paras.append(f"At {short(r.get('target_qps'))} requests/s (the seeded schedule sent "
                         f"{num(r.get('scheduled_qps'))}/s, {num(r.get('achieved_qps'))}/s completed), the run is "
                         + ("VALID: every rule held." if run["valid"] else
                            "INVALID: " + ("; ".join(_reasons(r)) or "a rule failed") + "."))
        else:
            text = (f"The {scenario} scenario is not judged VALID or INVALID (LoadGen's rules apply to the server "
                    f"scenario). It sustained {num(r.get(rate_key))} {unit} at p50 {num(r.get('median_e2el_ms'))} ms, "
                    f"p99 {num(r.get('p99_e2el_ms'))} ms.")
            p99 = _finite(r.get("p99_e2el_ms"))
            if p99 is not None and _finite(s.get("slo_p99_ms")) is not None:
                text += (f" Its p99 is {'within' if p99 <= s['slo_p99_ms'] else 'over'} the objective of "
                         f"{short(s['slo_p99_ms'])} ms.")
            paras.append(text)
    gens = [run["r"].get("generator") for run in runs if isinstance(run["r"].get("generator"), dict)]
    if gens:
        lag50 = max((_finite(g.get("send_lag_ms_p50")) or 0.0) for g in gens)
        lag99 = max((_finite(g.get("send_lag_ms_p99")) or 0.0) for g in gens)
        cpu = max((_finite(g.get("cpu_share")) or 0.0) for g in gens)
        paras.append("The load generator measured itself" + (" (the worst run shown)" if len(gens) > 1 else "")
                     + f": it sent requests {num(lag50)} ms late at the median (p99 {num(lag99)} ms) and used "
                     f"{pct(cpu)} of a core; a late or busy generator measures itself, not the server.")
    warnings = list(dict.fromkeys(w for run in runs for w in (run["r"].get("warnings") or [])))
    if warnings:
        shown = warnings[:3]
        paras.append("Warnings: " + " ".join(w.rstrip(".")[:1].upper() + w.rstrip(".")[1:] + "." for w in shown)
                     + (f" And {len(warnings) - len(shown)} more of the same kinds in other runs."
                        if len(warnings) > len(shown) else ""))
    return paras


def _serving_latency(b: dict, runs: list[dict], fid: str) -> Figure:
    s = b.get("settings") or {}
    rate_key, unit = _rate_unit(b)
    xs = [_finite(run["r"].get(rate_key)) or 0.0 for run in runs]
    p50 = [_finite(run["r"].get("median_e2el_ms", run["r"].get("p50_e2el_ms"))) for run in runs]
    p99 = [_finite(run["r"].get("p99_e2el_ms")) for run in runs]
    slo = _finite(s.get("slo_p99_ms"))
    label = "latency" if b.get("kind") != "language_model" else "E2EL"
    finding = [f"{num(x)} {unit} at p99 {num(y)} ms" + (f" (target {short(run['qps'])} requests/s, {_verdict(run)})"
                                                       if _finite(run["qps"]) is not None else
                                                       f" ({_verdict(run)})" if run["valid"] is not None else "")
               for run, x, y in zip(runs, xs, p99)]
    alt = (f"p50 and p99 {label} against achieved throughput, {_plural(len(runs), 'run')}: " + "; ".join(finding)
           + "." + (f" Objective: p99 at most {short(slo)} ms." if slo is not None else
                    " The objectives bound TTFT and TPOT (next figure)." if any(
                        _finite(s.get(k)) is not None for k in ("slo_ttft_ms", "slo_tpot_ms")) else
                    " No objective set."))
    valid = [run for run in runs if run["valid"]]
    if valid:
        best = max(valid, key=lambda run: _finite(run["qps"]) or 0.0)
        alt += f" Highest VALID rate: {short(best['qps'])} requests/s."
    with figure(6.4, 3.8) as (fig, ax):
        _plot_runs(ax, fid, runs, xs, p50, p99)
        from matplotlib.lines import Line2D

        extra = []
        if slo is not None:
            _slo_line(ax, slo, f"{fid}-slo", f"objective: p99 at most {short(slo)} ms")
            extra.append(Line2D([], [], color="black", ls="--", lw=1.2, label="objective"))
        _log_if_wide(ax, p50 + p99 + [slo])
        ax.set_xlim(left=0, right=1.15 * max(xs) if max(xs) > 0 else 1)
        ax.set_xlabel(f"achieved throughput ({unit})")
        ax.set_ylabel(f"{label} ms")
        ax.grid(alpha=0.3)
        ax.legend(handles=_legend_handles(runs, extra), fontsize=7, loc="best", frameon=False)
        svg = to_svg(fig, fid, alt)
    rows = [[run["name"], short(run["qps"]), num(run["r"].get("request_throughput")),
             *([num(run["r"].get("output_throughput"))] if b.get("kind") == "language_model" else []),
             num(y50), num(y99), _verdict(run)] for run, y50, y99 in zip(runs, p50, p99)]
    cols = ["run", "target requests/s", "achieved requests/s",
            *(["output tokens/s"] if b.get("kind") == "language_model" else []),
            f"p50 {label} ms", f"p99 {label} ms", "verdict"]
    return Figure(fid, f"{'Latency' if label == 'latency' else 'E2EL'} against throughput", svg, alt,
                  Table(cols, rows, caption="Runs in the order they ran"))


def _serving_tokens(b: dict, runs: list[dict], fid: str) -> Figure | None:
    s = b.get("settings") or {}
    by_target = all(_finite(run["qps"]) is not None for run in runs)
    xs = [(_finite(run["qps"]) if by_target else _finite(run["r"].get("request_throughput"))) or 0.0 for run in runs]
    xlabel = "target rate (requests/s)" if by_target else "achieved requests/s"
    series = {m: ([_finite(run["r"].get(f"median_{m}_ms", run["r"].get(f"p50_{m}_ms"))) for run in runs],
                  [_finite(run["r"].get(f"p99_{m}_ms")) for run in runs]) for m in ("ttft", "tpot")}
    if all(v is None for m in series for v in series[m][1]):
        return None
    slos = {"ttft": _finite(s.get("slo_ttft_ms")), "tpot": _finite(s.get("slo_tpot_ms"))}
    finding = [f"at {short(x) if by_target else num(x)} requests/s TTFT p99 {num(t)} ms, TPOT p99 {num(p)} ms"
               + (f" ({VERDICT_STYLE[run['valid']]['word']})" if run["valid"] is not None else "")
               for run, x, t, p in zip(runs, xs, series["ttft"][1], series["tpot"][1])]
    alt = ("Time to first token and time per output token (p50 hollow, p99 filled) against the rate: "
           + "; ".join(finding) + "."
           + "".join(f" Objective: {m.upper()} p99 at most {short(v)} ms." for m, v in slos.items() if v is not None))
    with figure(6.4, 3.4, ncols=2) as (fig, axes):
        from matplotlib.lines import Line2D

        extra = []
        for c, m in enumerate(("ttft", "tpot")):
            ax = axes[0][c]
            p50, p99 = series[m]
            _plot_runs(ax, fid, runs, xs, p50, p99, suffix=f" {m}")
            if slos[m] is not None:
                _slo_line(ax, slos[m], f"{fid}-slo-{m}", f"objective: p99 at most {short(slos[m])} ms")
                if not extra:
                    extra.append(Line2D([], [], color="black", ls="--", lw=1.2, label="objective"))
            _log_if_wide(ax, p50 + p99 + [slos[m]])
            ax.set_xlim(left=0, right=1.15 * max(xs) if max(xs) > 0 else 1)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{m.upper()} ms")
            ax.grid(alpha=0.3)
        axes[0][0].legend(handles=_legend_handles(runs, extra), fontsize=7, loc="best", frameon=False)
        svg = to_svg(fig, fid, alt)
    rows = [[run["name"], short(x) if by_target else num(x), *(num(series[m][p][k]) for m in ("ttft", "tpot")
                                                                for p in (0, 1)),
             VERDICT_STYLE[run["valid"]]["word"]] for k, (run, x) in enumerate(zip(runs, xs))]
    table = Table(["run", xlabel, "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms", "verdict"], rows,
                  caption="vLLM's definitions: TTFT to the first streamed chunk, TPOT = (E2EL - TTFT)/(tokens - 1)")
    return Figure(fid, "TTFT and TPOT against the rate", svg, alt, table)


def _serving_table(b: dict, runs: list[dict]) -> Table:
    rows = []
    for run in runs:
        r = run["r"]
        g = r.get("generator") if isinstance(r.get("generator"), dict) else {}
        ci = r.get("p99_e2el_ms_ci95")
        ci = f"[{num(ci[0])}, {num(ci[1])}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else DASH
        rows.append([run["name"], count(r.get("sent")), count(r.get("completed")), count(r.get("failed")),
                     count(r.get("rejected")), num(r.get("request_goodput")), ci, num(g.get("send_lag_ms_p50")),
                     num(g.get("send_lag_ms_p99")), pct(g.get("cpu_share")), count(g.get("max_in_flight")),
                     "; ".join(_reasons(r)) or DASH])
    return Table(["run", "sent", "completed", "failed", "rejected (429/503)", "goodput requests/s",
                  "p99 95% CI ms", "send lag p50 ms", "send lag p99 ms", "generator CPU", "most in flight",
                  "failed rules"], rows, caption="Each run's requests and the load generator's own overhead")

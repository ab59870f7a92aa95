"""The language-model section of a report (``frugal bench-lm``): ``lm_section`` reads the dicts
``runtime.lm.lm_bench.bench_lm`` returns, one per engine option (float32, int8, speculative, ...): decode tokens/s
against quality (top-1 agreement with the unoptimised model), TTFT and TPOT, the roofline fraction, quality per
prompt slice. It tolerates missing parts (an old file, a run without quality or batching) and says in words what
a figure shows.
"""

from __future__ import annotations

from .numbers import DASH, count, finite, mb, num, pct, plural, times, unique, words
from .page import Figure, Section, Table
from .plots import GREY, MARKERS, PALETTE, figure, point_id, to_svg



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
    if isinstance(o, dict) and finite(o.get("top1_agreement_fraction")) is not None:
        return {"top1": o["top1_agreement_fraction"], "kl_mean": o.get("kl_mean_nats"),
                "kl_max": o.get("kl_max_nats"), "ppl_ratio": q.get("perplexity_ratio"), "reference": False,
                "acceptance": o.get("acceptance_rate_mean")}
    if "slices" not in q and finite(q.get("perplexity_reference")) is not None:
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
    a, b = finite(rs[i].get(key)), finite(rs[base].get(key))
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
    labels = unique([str(r.get("label") or f"option {i + 1}") for i, r in enumerate(rs)])
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
               + (f", {plural(threads, 'thread')}" if threads is not None and "thread" not in str(m) else ""))
    r0 = rs[0]
    prompts = (f"{count(r0.get('prompts'))} prompts ({count(r0.get('prompt_tokens'))} prompt tokens, "
               f"{count(r0.get('generated_tokens'))} tokens generated)" if r0.get("prompts") is not None else "")
    paras.append(
        f"frugal bench-lm timed {words(models)} in {plural(len(rs), 'engine option')} "
        f"({words(labels)}) {machine}"
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
        if finite(r.get("roofline_fraction")) is None:
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
            text += (f" {words(refs)} {'is' if len(refs) == 1 else 'are'} the unoptimised model itself: agreement "
                     "100% and KL 0 by definition, perplexity "
                     + words([num((r.get('quality') or {}).get('perplexity_reference'))
                               for lab, r in zip(labels, rs) if lab in refs]) + " on held-out text.")
        ppl = [f"{lab} x{num(q['ppl_ratio'], 4)}" for lab, r in zip(labels, rs)
               if (q := _quality(r)) and not q["reference"] and finite(q["ppl_ratio"]) is not None]
        if ppl:
            text += " Perplexity on held-out text, against the unoptimised model's: " + ", ".join(ppl) + "."
        if without:
            text += (f" {words(without)} {'has' if len(without) == 1 else 'have'} no quality measurement (run "
                     "without --no-quality): not on the speed-quality plot.")
        paras.append(text)
    else:
        paras.append("No option has a quality measurement (bench-lm ran with --no-quality): only speed is shown, "
                     "and there is no speed-quality plot.")
    # speculative acceptance
    acc = [f"{lab} {pct(r['acceptance_rate'])}" for lab, r in zip(labels, rs)
           if finite(r.get("acceptance_rate")) is not None]
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
                       "at once" + (f", {times(ratio)} its batch-1 rate" if finite(ratio) is not None else
                                    " (it does not speculate when batched: no like-for-like batch-1 rate)"))
    if batched:
        paras.append("With several requests running at once (continuous batching, plain decoding): "
                     + "; ".join(batched) + "."
                     + (f" {words(single)}: not measured with concurrent requests (--batch 1)." if single else ""))
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
    pts = [(i, finite(r.get("decode_tokens_per_s")), _quality(r)) for i, r in enumerate(rs)]
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
        if not q["reference"] and finite(q["kl_mean"]) is not None:
            s += f" (KL {num(q['kl_mean'])} nats)"
        finding.append(s)
    missing = [labels[i] for i, r in enumerate(rs) if _quality(r) is None]
    alt = ("Decode tokens/s at batch 1 against top-1 agreement with the unoptimised model: " + "; ".join(finding)
           + "." + (f" Not plotted, no quality measured: {words(missing)}." if missing else ""))
    with figure(6.4, 3.6) as (fig, ax):
        for i, x, q in pts:
            st = _style(i)
            ax.plot([x], [q["top1"]], ls="none", ms=8, label=labels[i], gid=point_id(fid, labels[i]), **st)
            ax.annotate(labels[i], (x, q["top1"]), textcoords="offset points", xytext=(7, 4), fontsize=8)
        bl = next((r["baseline"] for r in rs if isinstance(r.get("baseline"), dict)
                   and finite(r["baseline"].get("decode_tokens_per_s")) is not None), None)
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
    idx = [i for i, r in enumerate(rs) if any(finite(r.get(k)) is not None
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
            for ax, key, what in ((left, "ttft_ms", "ttft"), (right, "tpot_ms", "tpot")):
                p50 = finite(r.get(key if key == "ttft_ms" else f"{key}_p50"))
                p99 = finite(r.get(f"{key}_p99"))
                if p50 is not None and p99 is not None:
                    ax.plot([p50, p99], [y, y], color=st["color"], lw=1.5, gid=point_id(fid, f"{labels[i]} {what}"))
                if p50 is not None:
                    ax.plot([p50], [y], ls="none", ms=7, gid=point_id(fid, f"{labels[i]} {what} p50"), **st)
                if p99 is not None:
                    ax.plot([p99], [y], ls="none", ms=7, mfc="white", gid=point_id(fid, f"{labels[i]} {what} p99"),
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
    with_acc = any(finite(v.get("acceptance_rate_mean")) is not None for i in idx for v in _slices_of(rs[i]).values())
    finding = []
    for i in idx:
        sl = {k: v for k, v in _slices_of(rs[i]).items() if finite(v.get("top1_agreement_fraction")) is not None}
        if not sl:
            continue
        lo = min(sl, key=lambda k: sl[k]["top1_agreement_fraction"])
        hi = max(sl, key=lambda k: sl[k]["top1_agreement_fraction"])
        a_lo, a_hi = sl[lo]["top1_agreement_fraction"], sl[hi]["top1_agreement_fraction"]
        s = (f"{labels[i]} agrees least on {lo} ({pct(a_lo)}), most on {hi} ({pct(a_hi)})" if a_lo != a_hi else
             f"{labels[i]} agrees {pct(a_lo)} on every slice")
        acc = {k: v["acceptance_rate_mean"] for k, v in sl.items()
               if finite(v.get("acceptance_rate_mean")) is not None}
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
                if finite(v.get("top1_agreement_fraction")) is not None:
                    axs[0].plot([xo], [v["top1_agreement_fraction"]], ls="none", ms=6, gid=point_id(fid, tag),
                                label=labels[i] if x == 0 else None, **st)
                if finite(v.get("kl_mean_nats")) is not None:
                    axs[1].plot([xo], [v["kl_mean_nats"]], ls="none", ms=6, gid=point_id(fid, f"{tag} kl mean"), **st)
                if finite(v.get("kl_max_nats")) is not None:
                    axs[1].plot([xo], [v["kl_max_nats"]], ls="none", ms=6, mfc="white",
                                gid=point_id(fid, f"{tag} kl max"), **st)
                if with_acc and finite(v.get("acceptance_rate_mean")) is not None:
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
    if any(finite(r.get("acceptance_rate")) is not None for r in rs):
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
    if any(finite(r.get("compile_s")) is not None for r in rs):
        rows.append(["compile s", *each(lambda r: num(r.get("compile_s")))])
    rows.append(["threads", *each(lambda r: count(r.get("threads")))])
    return Table(["measure", *labels], rows, caption="Speed per engine option")

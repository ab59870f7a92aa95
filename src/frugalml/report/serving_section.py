"""The serving section of a report (``frugal bench``): ``serving_section`` reads the dict
``serve.loadgen.bench`` returns (bench.json): latency against achieved throughput per run, the objective drawn,
VALID and INVALID runs told apart by marker shape and colour. It tolerates missing parts and says in words what a
figure shows.
"""

from __future__ import annotations

from .numbers import DASH, count, finite, num, pct, plural, short, unique
from .page import Figure, Section, Table
from .plots import GREY, PALETTE, figure, point_id, to_svg

# how a serving run is drawn, by verdict: a shape and a colour each, so neither alone carries the verdict
VERDICT_STYLE = {
    True: {"marker": "o", "color": PALETTE[0], "word": "VALID"},
    False: {"marker": "X", "color": PALETTE[1], "word": "INVALID"},
    None: {"marker": "s", "color": GREY, "word": "not judged"},
}



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
    names = unique([f"{run['qps']:g}" if finite(run["qps"]) is not None else str(k + 1)
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
            if finite(run["qps"]) is not None and len(runs) > 1:
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
               f"{plural(s.get('rows_per_request') or 1, 'row')} per request")
    latency = ("latency is E2EL, send to the last token streamed" if lm else "latency is send to answer read")
    paras = [f"frugal bench loaded {what} ({'a language model' if lm else 'a predictor'}"
             + (f", {b.get('endpoint')}" if b.get("endpoint") else "") + f"), {where}"
             + (f", from a machine with {machine.get('cores')} cores ({machine.get('platform')})"
                if machine.get("cores") else "")
             + f". Scenario {how}; {short(s.get('duration_s'))} s per run; {payload}; {latency}."]
    slo = [(k, label, s.get(k)) for k, label in (("slo_p99_ms", "p99 latency"), ("slo_ttft_ms", "p99 TTFT"),
                                                 ("slo_tpot_ms", "p99 TPOT")) if finite(s.get(k)) is not None]
    if slo:
        paras.append("Objectives: " + ", ".join(f"{label} at most {short(v)} ms" for _, label, v in slo) + ".")
    else:
        paras.append("No latency objective was set: no line is drawn and no run is judged against one.")
    rate_key, unit = _rate_unit(b)
    sweep = b.get("sweep") if isinstance(b.get("sweep"), dict) else None
    if sweep is not None:
        peak = sweep.get("peak_qps")
        text = (f"The sweep doubled the rate from {short(sweep.get('start_qps'))} requests/s until a run failed, then "
                f"bisected: {plural(len(runs), 'run')}. ")
        if finite(peak) is None:
            first = runs[0] if runs else None
            text += ("No rate met every rule: even the first was INVALID"
                     + (f" ({'; '.join(_reasons(first['r']))})" if first and _reasons(first["r"]) else "") + ".")
        else:
            text += (f"The highest VALID rate is {short(peak)} requests/s"
                     + (f", with a goodput of {num(sweep.get('goodput'))} requests/s meeting every objective"
                        if finite(sweep.get("goodput")) is not None else "") + ".")
            above = sorted((run for run in runs if run["valid"] is False and finite(run["qps"]) is not None
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
            p99 = finite(r.get("p99_e2el_ms"))
            if p99 is not None and finite(s.get("slo_p99_ms")) is not None:
                text += (f" Its p99 is {'within' if p99 <= s['slo_p99_ms'] else 'over'} the objective of "
                         f"{short(s['slo_p99_ms'])} ms.")
            paras.append(text)
    gens = [run["r"].get("generator") for run in runs if isinstance(run["r"].get("generator"), dict)]
    if gens:
        lag50 = max((finite(g.get("send_lag_ms_p50")) or 0.0) for g in gens)
        lag99 = max((finite(g.get("send_lag_ms_p99")) or 0.0) for g in gens)
        cpu = max((finite(g.get("cpu_share")) or 0.0) for g in gens)
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
    xs = [finite(run["r"].get(rate_key)) or 0.0 for run in runs]
    p50 = [finite(run["r"].get("median_e2el_ms", run["r"].get("p50_e2el_ms"))) for run in runs]
    p99 = [finite(run["r"].get("p99_e2el_ms")) for run in runs]
    slo = finite(s.get("slo_p99_ms"))
    label = "latency" if b.get("kind") != "language_model" else "E2EL"
    finding = [f"{num(x)} {unit} at p99 {num(y)} ms" + (f" (target {short(run['qps'])} requests/s, {_verdict(run)})"
                                                       if finite(run["qps"]) is not None else
                                                       f" ({_verdict(run)})" if run["valid"] is not None else "")
               for run, x, y in zip(runs, xs, p99)]
    alt = (f"p50 and p99 {label} against achieved throughput, {plural(len(runs), 'run')}: " + "; ".join(finding)
           + "." + (f" Objective: p99 at most {short(slo)} ms." if slo is not None else
                    " The objectives bound TTFT and TPOT (next figure)." if any(
                        finite(s.get(k)) is not None for k in ("slo_ttft_ms", "slo_tpot_ms")) else
                    " No objective set."))
    valid = [run for run in runs if run["valid"]]
    if valid:
        best = max(valid, key=lambda run: finite(run["qps"]) or 0.0)
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
    by_target = all(finite(run["qps"]) is not None for run in runs)
    xs = [(finite(run["qps"]) if by_target else finite(run["r"].get("request_throughput"))) or 0.0 for run in runs]
    xlabel = "target rate (requests/s)" if by_target else "achieved requests/s"
    series = {m: ([finite(run["r"].get(f"median_{m}_ms", run["r"].get(f"p50_{m}_ms"))) for run in runs],
                  [finite(run["r"].get(f"p99_{m}_ms")) for run in runs]) for m in ("ttft", "tpot")}
    if all(v is None for m in series for v in series[m][1]):
        return None
    slos = {"ttft": finite(s.get("slo_ttft_ms")), "tpot": finite(s.get("slo_tpot_ms"))}
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

"""Tables (markdown) and the accuracy-vs-MACs plot of the Fashion-MNIST study, from the raw
JSON that bench/study_fashion_mnist.py writes. Parts not run yet are left out of the tables."""
from __future__ import annotations

import glob
import json
import os
import statistics
from collections import defaultdict

WIDTHS = (1.0, 0.75, 0.5, 0.35)   # the study's uniform widths (bench/study_fashion_mnist.py uses these)
TOLERANCE = 1.5    # points: S-MobileNet v2 on ImageNet was 0.6-1.3 from its individual models
CONVERGED = 0.3    # points: converged when the last 20% of epochs gain less than this on the test set
NOISE_FLOOR = 0.3  # points: the least seed noise a verdict assumes (two seeds under-estimate the spread)


def _load(results_dir: str) -> dict[str, list[dict]]:
    """method -> records (one per seed)."""
    out = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        if path.endswith(".partial.json"):
            continue
        with open(path) as f:
            rec = json.load(f)
        out[rec.get("method", os.path.basename(path)[:-5])].append(rec)
    return out


def _width_of(name: str) -> float | None:
    return float(name[6:]) if name.startswith("width ") else None


def _by_width(rows) -> dict[float, dict]:
    return {round(_width_of(r["name"]), 4): r for r in rows if _width_of(r["name"]) is not None}


def _stat(values) -> tuple[float, float, int] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.fmean(values), (max(values) - min(values)) / 2, len(values)


def _fmt(s, digits=2) -> str:
    if s is None:
        return "-"
    mean, half, n = s
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if n > 1 else "")


def _diff(a, b) -> str:
    if a is None or b is None:
        return "-"
    return f"{a[0] - b[0]:+.2f}"


def _M(macs) -> str:
    return f"{macs / 1e6:.2f}M"


def collect(results_dir: str) -> dict:
    """Per-method accuracy by width (mean, half range, seeds), plus the AutoSlim, calibration and
    cost records."""
    recs = _load(results_dir)
    acc, macs = defaultdict(dict), {}
    fixed = defaultdict(list)
    for r in recs.get("fixed", []):
        (row,) = r["eval"]
        fixed[r["width"]].append(row["top1"])
        macs[r["width"]] = row["macs"]
    acc["individual"] = {w: _stat(v) for w, v in fixed.items()}
    for method, key, label in (("snet", "eval", "S-Net"), ("snet_shared_bn", "eval", "shared BN"),
                               ("snet_shared_bn", "eval_calibrated", "shared BN + calibration"),
                               ("usnet", "eval", "US-Net"), ("usnet_no_distill", "eval", "US-Net, no distillation")):
        per_w = defaultdict(list)
        for r in recs.get(method, []):
            for w, row in _by_width(r.get(key, [])).items():
                per_w[w].append(row["top1"])
                macs.setdefault(w, row["macs"])
        if per_w:
            acc[label] = {w: _stat(v) for w, v in per_w.items()}
    # the AutoSlim supernet's uniform widths: its channel space is 1.5x, so a width's MACs are its own
    supernet = {}
    for r in recs.get("autoslim_supernet", []):
        for w, row in _by_width(r.get("eval", [])).items():
            supernet.setdefault(w, {"top1": [], "macs": row["macs"]})["top1"].append(row["top1"])
    autoslim = defaultdict(lambda: {"retrained": [], "in_supernet": [], "macs": [], "params": []})
    for r in recs.get("autoslim", []):
        (row,) = r["eval"]
        a = autoslim[r["budget_width"]]
        a["retrained"].append(row["top1"])
        a["macs"].append(row["macs"])
        a["params"].append(row["params"])
        a["budget"] = r["budget_macs"]
    searches = recs.get("autoslim_search", [])
    for s in searches:
        rows = {os.path.basename(r["name"]): r for r in s["eval_in_supernet"]}
        for w, path in s["files"].items():
            row = rows.get(os.path.basename(path))
            if row is not None:
                a = autoslim[float(w)]
                a["in_supernet"].append(row["top1"])
                a["budget"] = s["budgets"][w]
                if not a["macs"]:                  # the found config's cost, before any retrain reports it
                    a["macs"].append(row["macs"])
                    a["params"].append(row["params"])
    return {"acc": acc, "macs": macs, "autoslim": autoslim, "supernet": supernet, "searches": searches,
            "headroom": headroom(recs),
            "calibration": recs.get("calibration", []), "costs": recs.get("costs", []), "records": recs}


def headroom(recs: dict) -> list[dict]:
    """One row per random config of the headroom part: its cost, its accuracy in the AutoSlim
    supernet and retrained alone (a list over seeds; empty until a retrain lands)."""
    rows = []
    for s in recs.get("headroom_sample", []):
        scored = {os.path.basename(r["name"]): r for r in s["eval_in_supernet"]}
        for path in s["files"]:
            r = scored[os.path.basename(path)]
            rows.append({"config": os.path.splitext(os.path.basename(path))[0], "path": path,
                         "budget_width": s["budget_width"], "macs": r["macs"], "params": r["params"],
                         "in_supernet": r["top1"], "retrained": []})
    by_path = {r["path"]: r for r in rows}
    for r in recs.get("headroom", []):
        if r["channels"] in by_path:
            by_path[r["channels"]]["retrained"].append(r["eval"][0]["top1"])
    return rows


def spearman(x, y) -> float | None:
    """Spearman's rank correlation of two equal-length sequences (ties get their mean rank)."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        out = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return num / den if den else None


def convergence(records: dict) -> list[tuple]:
    """(job, width label, epochs, top-1 at 80% of the epochs, final top-1, gain) of every record
    with per-epoch test accuracy: the gain of its last 20% of epochs."""
    rows = []
    for recs in records.values():
        for r in recs:
            per_epoch = (r.get("train") or {}).get("top1_per_epoch") or {}
            for label, curve in per_epoch.items():
                curve = [v for v in curve if v is not None]
                if len(curve) < 5:
                    continue
                at = curve[int(round(0.8 * len(curve))) - 1]
                rows.append((r["job"], label, len(curve), at, curve[-1], curve[-1] - at))
    return sorted(rows)


def _noise(*stats) -> float:
    """The seeds' noise for a verdict: the largest half range among the given (mean, half range, n)
    stats, and at least NOISE_FLOOR."""
    return max([NOISE_FLOOR] + [st[1] for group in stats for st in group if st])


def claims(d: dict) -> list[tuple[str, str, str]]:
    """(claim, measured, verdict) with the papers' own tolerance; claims without data are left out."""
    acc, ind, out = d["acc"], d["acc"].get("individual", {}), []

    def gaps(label):
        m = acc.get(label, {})
        return {w: m[w][0] - ind[w][0] for w in WIDTHS if m.get(w) and ind.get(w)}
    for label in ("S-Net", "US-Net"):
        g = gaps(label)
        if len(g) == len(WIDTHS):
            worst = min(g.values())
            out.append((f"{label} within {TOLERANCE} pt of the individual model at every width",
                        ", ".join(f"{w:g}: {v:+.2f}" for w, v in g.items()),
                        "yes" if worst >= -TOLERANCE else "no"))
    us = acc.get("US-Net", {})
    if len(us) > 2:
        ws = sorted(us)
        noise = _noise(us.values(), ind.values())
        drops = [us[a][0] - us[b][0] for a, b in zip(ws, ws[1:])]
        out.append(("US-Net curve monotone within noise",
                    f"largest drop to a wider width {max(max(drops), 0):.2f} pt (noise {noise:.2f})",
                    "yes" if max(drops) <= noise else "no"))
    diffs = {w: _stat(a["retrained"])[0] - ind[w][0] for w, a in d["autoslim"].items()
             if a["retrained"] and ind.get(w)}
    if diffs:
        below = sorted((w for w, v in diffs.items() if v < 0), reverse=True)
        noise = _noise([_stat(a["retrained"]) for a in d["autoslim"].values()], ind.values())
        verdict = "yes" if not below else "no"
        if below and all(-diffs[w] <= noise for w in below):
            verdict += f": under at {', '.join(f'{w:g}' for w in below)} by less than the noise ({noise:.2f})"
        out.append(("AutoSlim retrained at or above the uniform model of the same MACs at every budget",
                    ", ".join(f"{w:g}: {v:+.2f}" for w, v in sorted(diffs.items(), reverse=True)),
                    verdict + ("" if len(diffs) == len(WIDTHS) else f" ({len(diffs)} of {len(WIDTHS)} budgets so far)")))
    for r in d["records"].get("fixed_long", []):      # the same model and seed, trained longer
        short = [x for x in d["records"].get("fixed", []) if x["width"] == r["width"] and x["seed"] == r["seed"]]
        if short:
            a, b = short[0]["eval"][0]["top1"], r["eval"][0]["top1"]
            n = short[0]["train"]["epochs"]
            out.append((f"individual {r['width']:g}x converged at {n} epochs: {r['epochs']} epochs gain < {CONVERGED} pt "
                        f"(seed {r['seed']})", f"{n} epochs: {a:.2f}, {r['epochs']}: {b:.2f} ({b - a:+.2f})",
                        "yes" if b - a < CONVERGED else "no"))
    conv = convergence(d["records"])
    individual = {r["job"] for r in d["records"].get("fixed", [])}
    fixed = [row for row in conv if row[0] in individual]
    if fixed:
        per_w = defaultdict(list)
        for row in fixed:
            per_w[row[1]].append(row[5])
        means = {w: statistics.fmean(v) for w, v in per_w.items()}
        out.append((f"individual models converged (last 20% of epochs gain < {CONVERGED} pt, mean of seeds)",
                    ", ".join(f"{w}: {v:+.2f}" for w, v in sorted(means.items(), key=lambda kv: -float(kv[0]))),
                    "yes" if max(means.values()) < CONVERGED else "no"))
    return out


def tables(d: dict) -> str:
    acc, macs = d["acc"], d["macs"]
    out = []
    verdicts = claims(d)
    if verdicts:
        out.append("| claim | measured | reproduced |")
        out.append("|---|---|---|")
        out += [f"| {c} | {m} | {v} |" for c, m, v in verdicts]
        out.append("")
    ind = acc.get("individual", {})
    seeds = {label: max((s[2] for s in m.values() if s), default=0) for label, m in acc.items()}
    images = next((row["images"] for recs in d["records"].values() for r in recs for row in r.get("eval", [])), 0)
    counts = sorted(set(seeds.values()))
    if len(counts) == 1:
        what = f"{counts[0]} seed(s)"
    else:
        what = "seeds: " + ", ".join(f"{label} {n}" for label, n in seeds.items())
    out.append(f"Test top-1 (%) on {images:,} Fashion-MNIST test images; {what}" +
               ("; with several seeds: mean ± half range." if max(counts, default=0) > 1 else ".") + "\n")
    # 1. every method at the four widths
    cols = [c for c in ("individual", "S-Net", "shared BN", "shared BN + calibration", "US-Net",
                        "US-Net, no distillation") if c in acc]
    out.append("| width | MACs | " + " | ".join(cols) + " |")
    out.append("|---|---|" + "---|" * len(cols))
    for w in WIDTHS:
        cells = []
        for c in cols:
            s = acc[c].get(w)
            cells.append(_fmt(s) + ("" if c == "individual" or s is None or ind.get(w) is None
                                    else f" ({_diff(s, ind.get(w))})"))
        out.append(f"| {w:g} | {_M(macs[w]) if w in macs else '-'} | " + " | ".join(cells) + " |")
    out.append("\n(in parentheses: difference to the individually trained model of that width)\n")
    # 2. the US-Net curve
    us, usn = acc.get("US-Net", {}), acc.get("US-Net, no distillation", {})
    if us:
        ws = sorted(set(us) | set(usn))
        out.append("| width | MACs | US-Net | US-Net, no distillation | distillation's gain |")
        out.append("|---|---|---|---|---|")
        for w in ws:
            out.append(f"| {w:g} | {_M(macs[w]) if w in macs else '-'} | {_fmt(us.get(w))} | {_fmt(usn.get(w))} | "
                       f"{_diff(us.get(w), usn.get(w))} |")
        curve = [us[w][0] for w in sorted(us)]
        drops = [b - a for a, b in zip(curve[1:], curve)]   # accuracy lost going one step wider
        out.append(f"\nUS-Net curve: largest accuracy drop from one width to the next wider one "
                   f"{max(max(drops), 0):.2f} points (0 = monotone).\n")
    # 3. AutoSlim: the supernet's uniform widths, then the searched configs
    if d["supernet"]:
        out.append("| width | MACs | AutoSlim supernet (BN calibrated) | US-Net | individual |")
        out.append("|---|---|---|---|---|")
        for w in sorted(d["supernet"], reverse=True):
            sup = d["supernet"][w]
            out.append(f"| {w:g} | {_M(sup['macs'])} | {_fmt(_stat(sup['top1']))} | {_fmt(us.get(w))} | "
                       f"{_fmt(ind.get(w))} |")
        out.append("\n(the AutoSlim supernet's uniform widths; its max is 1.5x, trained on labels every step)\n")
    if d["autoslim"]:
        out.append("| budget (MACs of uniform width) | searched config MACs | params | searched, in the supernet | "
                   "uniform, in the supernet | searched, retrained alone | uniform, trained alone | difference |")
        out.append("|---|---|---|---|---|---|---|---|")
        for w in WIDTHS:
            a = d["autoslim"].get(w)
            if not a or not a["macs"]:
                continue
            r, u = _stat(a["retrained"]), ind.get(w)
            uniform_in_supernet = _stat((d["supernet"].get(w) or {}).get("top1", []))
            out.append(f"| {w:g} ({_M(a['budget'])}) | {_M(statistics.fmean(a['macs']))} | "
                       f"{statistics.fmean(a['params']) / 1e6:.2f}M | {_fmt(_stat(a['in_supernet']))} | "
                       f"{_fmt(uniform_in_supernet)} | {_fmt(r)} | {_fmt(u)} | {_diff(r, u)} |")
        out.append("\n(in the supernet: test top-1 with BN calibrated; difference: retrained searched config against the "
                   "uniform model trained alone)")
        for s in d["searches"]:
            out.append(f"\nSearch (seed {s['seed']}): {s['iterations']} scoring rounds, {s['removals']} removals, "
                       f"{s['candidates']} candidate evaluations, {s['search_s'] / 60:.1f} min.")
        out.append("")
    out += headroom_table(d)
    # 4. calibration
    for c in d["calibration"]:
        per = defaultdict(lambda: defaultdict(list))
        for row in c["rows"]:
            for w, r in _by_width(row["results"]).items():
                per[row["images"]][w].append(r["top1"])
        ws = sorted({w for v in per.values() for w in v})
        out.append("| calibration images | " + " | ".join(f"top-1 at width {w:g}" for w in ws) + " |")
        out.append("|---|" + "---|" * len(ws))
        for n in sorted(per):
            out.append(f"| {n} | " + " | ".join(_fmt(_stat(per[n][w])) for w in ws) + " |")
        out.append(f"\n(US-Net seed {c['seed']}; mean ± half range over random draws of the calibration images)\n")
    # 5. export latency
    for c in d["costs"]:
        out.append("| width | MACs | batch | exported child (ms) | torchvision, same channels (ms) | child / torchvision "
                   "| supernet at that width (ms) | supernet / child |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in c["rows"]:
            for b in (1, 64):
                x = r[f"batch{b}"]
                out.append(f"| {r['width']:g} | {_M(r['macs'])} | {b} | {x['ms']['child']:.2f} | {x['ms']['plain']:.2f} | "
                           f"{x['child_over_plain']:.3f} | {x['ms']['supernet']:.2f} | {x['supernet_over_child']:.3f} |")
        out.append(f"\n(per model: median over {c['rounds']} interleaved rounds of the median of "
                   f"{c.get('repeats', 15)} timed forwards; {c['threads']} thread(s))\n")
    # 6. convergence
    conv = convergence(d["records"])
    if conv:
        out.append("| job | width | epochs | top-1 after 80% of the epochs | final | gain of the last 20% |")
        out.append("|---|---|---|---|---|---|")
        out += [f"| {j} | {w} | {n} | {a:.2f} | {f:.2f} | {g:+.2f} |" for j, w, n, a, f, g in conv]
        out.append("")
    # 7. wall time per job
    rows = job_walls(d["records"])
    if rows:
        out.append("| job | step | wall (min) |")
        out.append("|---|---|---|")
        for job, step, wall, last_session in rows:
            if step.startswith("calibrate ") and not step.endswith("draw 0"):
                continue
            out.append(f"| {job} | {step} | {wall / 60:.1f}{' *' if last_session else ''} |")
        out.append(f"\nTotal: {sum(w for _, _, w, _ in rows) / 60:.0f} min of job time.")
        if any(last_session for *_, last_session in rows):
            out.append("\n\\* the last session's wall time only: the job predates per-epoch times, so a job that was "
                       "interrupted and resumed shows only the part after its resume.")
        out.append("")
    return "\n".join(out) + "\n"


def headroom_table(d: dict) -> list[str]:
    """Random configs at one budget against the uniform width and the searched config there."""
    rows = d["headroom"]
    if not rows:
        return []
    w = rows[0]["budget_width"]
    fixed = [r["eval"][0] for r in d["records"].get("fixed", []) if r["width"] == w]
    a = d["autoslim"].get(w)
    ref = []
    if fixed:
        ref.append({"config": f"uniform {w:g}x", "macs": fixed[0]["macs"], "params": fixed[0]["params"],
                    "in_supernet": statistics.fmean((d["supernet"].get(w) or {}).get("top1") or [float("nan")]),
                    "retrained": [f["top1"] for f in fixed]})
    if a and a["in_supernet"] and a["macs"]:
        ref.append({"config": "AutoSlim's search", "macs": statistics.fmean(a["macs"]),
                    "params": statistics.fmean(a["params"]), "in_supernet": statistics.fmean(a["in_supernet"]),
                    "retrained": a["retrained"]})
    out = [f"| config at the {w:g}x budget | MACs | params | in the supernet | retrained alone |", "|---|---|---|---|---|"]
    for r in ref + rows:
        out.append(f"| {r['config']} | {_M(r['macs'])} | {r['params'] / 1e6:.2f}M | {r['in_supernet']:.2f} | "
                   f"{_fmt(_stat(r['retrained']))} |")
    done = [r for r in ref + rows if r["retrained"]]
    rand = [statistics.fmean(r["retrained"]) for r in rows if r["retrained"]]
    out.append("\n(random: each group's width drawn as the supernet's training draws it, then all scaled to the budget; "
               "in the supernet: test top-1 with BN calibrated; retrained alone: the individual models' recipe)")
    if rand:
        text = (f"\nRandom configs retrained: {min(rand):.2f} to {max(rand):.2f} ({len(rand)} of {len(rows)}, "
                f"range {max(rand) - min(rand):.2f} points).")
        rho = spearman([r["in_supernet"] for r in done], [statistics.fmean(r["retrained"]) for r in done])
        if rho is not None:
            text += (f" Rank correlation (Spearman) of the supernet's accuracy with the retrained one over these "
                     f"{len(done)} configs: {rho:+.2f}.")
        out.append(text)
    out.append("")
    return out


def job_walls(records: dict[str, list[dict]]) -> list[tuple[str, str, float, bool]]:
    """(job, step, seconds, last session only) per command. A training step's time is the sum of its
    epochs' times, which spans every session of a resumed job; a record without them (written before
    they were kept) has only the wall time of the command's last session."""
    rows = []
    for _, recs in sorted(records.items()):
        for r in recs:
            epoch_s = (r.get("train") or {}).get("epoch_s")
            for c in r.get("commands", []):
                if c["step"] == "train" and epoch_s:
                    rows.append((r["job"], c["step"], sum(epoch_s), False))
                else:
                    rows.append((r["job"], c["step"], c["wall_s"], c["step"] == "train"))
    return rows


def plot(d: dict, path: str) -> str | None:
    from slimnet.plots import plot_accuracy_vs_macs
    acc, macs = d["acc"], d["macs"]
    series = []
    for label, style in (("individual", "points"), ("S-Net", "line"), ("shared BN + calibration", "line"),
                         ("US-Net", "line"), ("US-Net, no distillation", "line")):
        per = acc.get(label)
        if not per:
            continue
        ws = sorted(w for w in per if w in macs and per[w])
        series.append({"label": label, "macs": [macs[w] for w in ws], "acc": [per[w][0] for w in ws], "style": style})
    a = [(statistics.fmean(v["macs"]), statistics.fmean(v["retrained"])) for v in d["autoslim"].values()
         if v["retrained"]]
    if a:
        a.sort()
        series.append({"label": "AutoSlim (searched, retrained)", "macs": [m for m, _ in a],
                       "acc": [t for _, t in a], "style": "points"})
    hr = [(r["macs"], statistics.fmean(r["retrained"])) for r in d["headroom"] if r["retrained"]]
    if hr:
        series.append({"label": "random configs (retrained)", "macs": [m for m, _ in hr], "acc": [t for _, t in hr],
                       "style": "points"})
    if not series:
        return None
    return plot_accuracy_vs_macs(series, path, title="Fashion-MNIST, MobileNet v2 (28x28)")


def write_report(results_dir: str, md_path: str, png_path: str) -> None:
    from slimnet.utils import atomic_write_text
    d = collect(results_dir)
    if not d["records"]:
        print(f"report: no results under {results_dir} yet")
        return
    atomic_write_text(md_path, tables(d))
    p = plot(d, png_path)
    print(f"report: {md_path}" + (f", {p}" if p else ""))

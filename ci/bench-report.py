#!/usr/bin/env python3
"""Read one `make bench` run (build/bench/<stamp>/) and write its report.

    bench-report.py OUTDIR

Reads the `# BENCH ...` and `# CDF ...` diagnostics of the guests' TAP files
(OUTDIR/<variant>/guest1.tap from the bench scenario, OUTDIR/vsock/guest1.tap from its
vsock-transport pass, whose BENCH lines say variant=vsock, OUTDIR/scale-<n>/guest*.tap from
bench-scale) and OUTDIR/meta.env, and writes:

    OUTDIR/bench.json          every figure (each measurement, and the summaries)
    OUTDIR/report.md           the tables: figures per path, the ratio table, plain against
                               doorbell, AF_VMCS over vsock against raw AF_VSOCK, scaling
    OUTDIR/throughput-<variant>.png, OUTDIR/rtt-cdf-<variant>.png, OUTDIR/scale.png
                               drawn by gnuplot (ci/bench-setup.sh installs it)

Standard library only. Figures of several rounds are their mean (p99 and max: the worst
round); the tables say so.
"""
import json
import os
import re
import subprocess
import sys

VMCS_PATHS = ["stream", "stream-bp", "stream-enc", "seqpacket", "dev", "bulk", "bulk-zc", "vmcs0"]
BASELINES = ["tcp", "vsock"]
ALL_PATHS = VMCS_PATHS + BASELINES + ["memcpy"]
LABEL = {
    "stream": "AF_VMCS stream",
    "stream-bp": "AF_VMCS stream, busy poll",
    "stream-enc": "AF_VMCS stream, encrypted",
    "seqpacket": "AF_VMCS seqpacket",
    "dev": "/dev/vmcs",
    "bulk": "bulk area (receiver copies out)",
    "bulk-zc": "bulk area (read in place)",
    "vmcs0": "TCP over vmcs0",
    "tcp": "TCP (virtio-net)",
    "vsock": "AF_VSOCK (vhost-user)",
    "memcpy": "memcpy (in guest)",
}


def num(v):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def parse_tap(path):
    """The BENCH records of one TAP file, each with its CDF quantiles attached."""
    recs, cdfs = [], {}
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip().replace("\r", "")
            m = re.match(r"^# (BENCH|CDF) (.*)$", line)
            if not m:
                continue
            kv = dict(w.split("=", 1) for w in m.group(2).split() if "=" in w)
            if m.group(1) == "CDF":
                key = tuple(kv.get(k) for k in ("variant", "round", "phase", "pair", "path", "size"))
                cdfs[key] = [float(x) for x in kv["us"].split(",")]
            else:
                recs.append({k: num(v) for k, v in kv.items()})
    for r in recs:
        key = tuple(None if r.get(k) is None else str(r.get(k))
                    for k in ("variant", "round", "phase", "pair", "path", "size"))
        if key in cdfs:
            r["rtt_cdf_us"] = cdfs[key]
    return recs


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def fmt(x, digits=None):
    if x is None:
        return "-"
    if digits is None:
        digits = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else 2)
    return f"{x:,.{digits}f}"


def title(variant):
    """How a variant (a pass of the bench scenario) is named in tables and plots."""
    return "vsock transport (no ivshmem)" if variant == "vsock" else f"ivshmem-{variant}"


def ratio(a, b):
    return a / b if a and b else None


def size_name(s):
    if s >= 1 << 20 and s % (1 << 20) == 0:
        return f"{s >> 20} MiB"
    if s >= 1024 and s % 1024 == 0:
        return f"{s >> 10} KiB"
    return f"{s} B"


def summarise(recs):
    """(variant, path, size) -> the rounds' figures combined."""
    groups = {}
    for r in recs:
        groups.setdefault((r["variant"], r["path"], r["size"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        tp = [r.get("tput_mb_s") for r in rs]
        s = {
            "rounds": len(rs),
            "tput_mb_s": mean(tp),
            "tput_mb_s_min": min(x for x in tp if x is not None),
            "tput_mb_s_max": max(x for x in tp if x is not None),
            "cpu_s_per_gb": mean([r.get("cpu_s_per_gb") for r in rs]),
        }
        if any("db_bytes" in r for r in rs):
            mb = sum(r.get("db_bytes", 0) for r in rs) / 1e6
            sent = sum(r.get("db_tx", 0) + r.get("db_rx", 0) for r in rs)
            saved = sum(r.get("db_suppressed", 0) for r in rs)
            s["doorbells_per_mb"] = sent / mb if mb > 0 else None
            s["doorbells_suppressed_per_mb"] = saved / mb if mb > 0 else None
        if any("rtt_p50_us" in r for r in rs):
            s["rtt_p50_us"] = mean([r.get("rtt_p50_us") for r in rs])
            s["rtt_mean_us"] = mean([r.get("rtt_mean_us") for r in rs])
            s["rtt_p99_us"] = max(r.get("rtt_p99_us", 0) for r in rs)
            s["rtt_n"] = sum(r.get("rtt_n", 0) for r in rs)
            pooled = sorted(q for r in rs for q in r.get("rtt_cdf_us", []))
            s["rtt_cdf_us"] = pooled
        out[key] = s
    return out


def main_tables(summary, variant, sizes):
    L = []
    paths = [p for p in ALL_PATHS if any((variant, p, s) in summary for s in sizes)]
    get = lambda p, s, k: summary.get((variant, p, s), {}).get(k)
    L.append(f"### {title(variant)}: throughput, MB/s (10^6 B/s, one way; mean of rounds)\n")
    L.append("| size | " + " | ".join(LABEL[p] for p in paths) + " |")
    L.append("|---:|" + "---:|" * len(paths))
    for s in sizes:
        L.append(f"| {size_name(s)} | " + " | ".join(fmt(get(p, s, "tput_mb_s")) for p in paths) + " |")
    rpaths = [p for p in paths if p != "memcpy"]
    L.append(f"\n### {title(variant)}: round trip, µs: p50 (p99)\n")
    L.append("| size | " + " | ".join(LABEL[p] for p in rpaths) + " |")
    L.append("|---:|" + "---:|" * len(rpaths))
    for s in sizes:
        cells = []
        for p in rpaths:
            a, b = get(p, s, "rtt_p50_us"), get(p, s, "rtt_p99_us")
            cells.append("-" if a is None else f"{fmt(a)} ({fmt(b)})")
        L.append(f"| {size_name(s)} | " + " | ".join(cells) + " |")
    L.append(f"\n### {title(variant)}: CPU seconds per GB moved (both guests, busy time from /proc/stat)\n")
    L.append("| size | " + " | ".join(LABEL[p] for p in rpaths) + " |")
    L.append("|---:|" + "---:|" * len(rpaths))
    for s in sizes:
        L.append(f"| {size_name(s)} | " + " | ".join(fmt(get(p, s, "cpu_s_per_gb")) for p in rpaths) + " |")
    # The bulk path's data does not go through the rings (only its 8-byte descriptors do).
    dpaths = [p for p in VMCS_PATHS if p != "bulk"
              and any("doorbells_per_mb" in summary.get((variant, p, s), {}) for s in sizes)]
    if variant == "doorbell" and dpaths:
        L.append(f"\n### {title(variant)}: doorbells per MB of ring traffic (guest 1, sent + received; "
                 "in parentheses: saved by the sleep tokens; round trips and streaming together; "
                 "not for the bulk path, whose data bypasses the rings)\n")
        L.append("| size | " + " | ".join(LABEL[p] for p in dpaths) + " |")
        L.append("|---:|" + "---:|" * len(dpaths))
        for s in sizes:
            cells = []
            for p in dpaths:
                a, b = get(p, s, "doorbells_per_mb"), get(p, s, "doorbells_suppressed_per_mb")
                cells.append("-" if a is None else f"{fmt(a)} ({fmt(b)})")
            L.append(f"| {size_name(s)} | " + " | ".join(cells) + " |")
    tcp64 = get("tcp", 64, "rtt_p50_us")
    if tcp64:
        L.append(f"\n### {title(variant)}: RTT at 64 B, p50, against TCP (targets: ≤ 1/10 with busy polling, ≤ 1/2 without)\n")
        L.append("| path | RTT p50 µs | of TCP's | target |")
        L.append("|---|---:|---:|---|")
        for p, target in (("stream-bp", 0.1), ("stream", 0.5)):
            rt = get(p, 64, "rtt_p50_us")
            if rt is None:
                continue
            r = rt / tcp64
            L.append(f"| {LABEL[p]} | {fmt(rt)} | {fmt(r)} | ≤ {target}: {'met' if r <= target else 'missed'} |")
    if any((variant, "stream-enc", s) in summary for s in sizes):
        L.append(f"\n### {title(variant)}: encrypted against plaintext AF_VMCS stream (#14 target: "
                 "encrypted throughput ≥ 50 % of plaintext at 64 KiB)\n")
        L.append("| size | plaintext MB/s | encrypted MB/s | encrypted / plaintext | RTT p50 µs plaintext | encrypted | target |")
        L.append("|---:|---:|---:|---:|---:|---:|---|")
        for s in sizes:
            tp, te = get("stream", s, "tput_mb_s"), get("stream-enc", s, "tput_mb_s")
            rp, re_ = get("stream", s, "rtt_p50_us"), get("stream-enc", s, "rtt_p50_us")
            r = ratio(te, tp)
            tgt = "-" if s != 65536 or r is None else f"≥ 0.5: {'met' if r >= 0.5 else 'missed'}"
            L.append(f"| {size_name(s)} | {fmt(tp)} | {fmt(te)} | {fmt(r)} | {fmt(rp)} | {fmt(re_)} | {tgt} |")
    L.append(f"\n### {title(variant)}: ratios (throughput: vmcs / other, > 1 favours vmcs; round trip p50: other / vmcs, > 1 favours vmcs)\n")
    L.append("| size | vmcs path | MB/s | × TCP | × vsock | of memcpy | RTT p50 µs | TCP / vmcs RTT | vsock / vmcs RTT |")
    L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in sizes:
        for p in VMCS_PATHS:
            if (variant, p, s) not in summary:
                continue
            t = get(p, s, "tput_mb_s")
            rt = get(p, s, "rtt_p50_us")
            mc = ratio(t, get("memcpy", s, "tput_mb_s"))
            L.append(
                f"| {size_name(s)} | {LABEL[p]} | {fmt(t)} | {fmt(ratio(t, get('tcp', s, 'tput_mb_s')))} | "
                f"{fmt(ratio(t, get('vsock', s, 'tput_mb_s')))} | {'-' if mc is None else f'{mc * 100:.2g} %'} | "
                f"{fmt(rt)} | {fmt(ratio(get('tcp', s, 'rtt_p50_us'), rt))} | {fmt(ratio(get('vsock', s, 'rtt_p50_us'), rt))} |"
            )
    return L


def plain_vs_doorbell(summary, sizes):
    L = ["### ivshmem-plain against ivshmem-doorbell (plain / doorbell; throughput > 0.5 and RTT < 2 is \"within 2x\")\n"]
    L.append("| size | vmcs path | MB/s plain / doorbell | RTT p50 plain / doorbell |")
    L.append("|---:|---|---:|---:|")
    for s in sizes:
        for p in VMCS_PATHS:
            a, b = summary.get(("plain", p, s)), summary.get(("doorbell", p, s))
            if not a or not b:
                continue
            L.append(f"| {size_name(s)} | {LABEL[p]} | {fmt(ratio(a['tput_mb_s'], b['tput_mb_s']))} | "
                     f"{fmt(ratio(a.get('rtt_p50_us'), b.get('rtt_p50_us')))} |")
    return L


def vsock_vs_raw(summary, sizes):
    """AF_VMCS over the vsock transport against raw AF_VSOCK, both from the vsock pass (the
    same two guests, the same boot, interleaved per size). #15's target: within 10 % at 64 KiB
    (throughput ≥ 0.9 of raw, round trip ≤ 1.1 of raw)."""
    L = ["### AF_VMCS over the vsock transport against raw AF_VSOCK (same guests, same run; "
         "#15 target: within 10 % at 64 KiB)\n"]
    L.append("| size | vmcs path | vmcs MB/s | raw AF_VSOCK MB/s | vmcs / raw | RTT p50 µs vmcs | raw | vmcs / raw | target (64 KiB) |")
    L.append("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    rows = []
    for s in sizes:
        raw = summary.get(("vsock", "vsock", s))
        for p in VMCS_PATHS:
            v = summary.get(("vsock", p, s))
            if not v:
                continue
            rt = raw.get("tput_mb_s") if raw else None
            rr = raw.get("rtt_p50_us") if raw else None
            tr, lr = ratio(v.get("tput_mb_s"), rt), ratio(v.get("rtt_p50_us"), rr)
            tgt = "-"
            if s == 65536:
                if tr is None:
                    tgt = "no figure"
                else:
                    ok = tr >= 0.9 and (lr is None or lr <= 1.1)
                    tgt = f"MB/s ≥ 0.9, RTT ≤ 1.1: {'met' if ok else 'missed'}"
            L.append(f"| {size_name(s)} | {LABEL[p]} | {fmt(v.get('tput_mb_s'))} | {fmt(rt)} | {fmt(tr)} | "
                     f"{fmt(v.get('rtt_p50_us'))} | {fmt(rr)} | {fmt(lr)} | {tgt} |")
            rows.append({"path": p, "size": s, "tput_ratio": tr, "rtt_p50_ratio": lr})
    return L, rows


def scale_summary(recs):
    """guests -> phase -> pair -> (path, size) -> record."""
    out = {}
    for r in recs:
        out.setdefault(r["guests"], {}).setdefault(r["phase"], {}).setdefault(r["pair"], {})[(r["path"], r["size"])] = r
    return out


def scale_tables(sc):
    L = ["### Scaling: N guests as N/2 pairs, each pair its own connection (ivshmem-doorbell)\n",
         "\"alone\": pair 0 measures while the other pairs wait; \"all\": every pair at once. "
         "Per pair: the mean over pairs; loss = 1 - (per pair, all) / (pair 0, alone).\n"]
    L.append("| guests | path, size | pair 0 alone | per pair, all (min..max) | aggregate, all | loss per pair |")
    L.append("|---:|---|---:|---:|---:|---:|")
    rows = []
    for n in sorted(sc):
        ph = sc[n]
        keys = sorted({k for pairs in ph.values() for m in pairs.values() for k in m})
        for (path, size) in keys:
            for what, field, unit in (("MB/s", "tput_mb_s", ""), ("RTT p50 µs", "rtt_p50_us", "")):
                alone = ph.get("alone", {}).get(0, {}).get((path, size), {}).get(field)
                per = [m[(path, size)].get(field) for m in ph.get("all", {}).values() if (path, size) in m]
                per = [x for x in per if x is not None]
                if not per:
                    continue
                avg = mean(per)
                agg = sum(per) if field == "tput_mb_s" else None
                if field == "tput_mb_s":
                    loss = None if not alone else 1 - avg / alone
                else:
                    loss = None if not alone else avg / alone - 1
                if field == "tput_mb_s" and size < 4096:
                    continue
                if field == "rtt_p50_us" and size > 4096:
                    continue
                L.append(f"| {n} | {LABEL.get(path, path)} {size_name(size)} {what} | {fmt(alone)} | "
                         f"{fmt(avg)} ({fmt(min(per))}..{fmt(max(per))}) | {fmt(agg)} | "
                         f"{'-' if loss is None else f'{loss * 100:.0f} %'} |")
                rows.append({"guests": n, "path": path, "size": size, "field": field, "alone": alone,
                             "per_pair": per, "per_pair_mean": avg, "aggregate": agg, "loss": loss})
    L.append("\n(RTT rows: loss = how much longer the round trip is with every pair busy.)")
    return L, rows


def gp_text(t):
    """A title for gnuplot's enhanced text (no subscripts from `_`)."""
    return t.replace("_", "\\_")


def gnuplot(script, cwd):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return True
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"bench-report: gnuplot failed: {getattr(e, 'stderr', e)}", file=sys.stderr)
        return False


def plots(out, summary, variants, sizes, scale_rows, meta):
    made = []
    dd = os.path.join(out, "plot-data")
    os.makedirs(dd, exist_ok=True)
    sub = f"{meta.get('date', '')}, commit {meta.get('commit', '?')}, TCG guests on a shared host"
    styles = {"stream": 1, "stream-bp": 10, "stream-enc": 11, "seqpacket": 2, "dev": 3, "bulk": 4, "bulk-zc": 5, "vmcs0": 9, "tcp": 6, "vsock": 7, "memcpy": 8}
    for v in variants:
        lines = []
        for p in ALL_PATHS:
            pts = [(s, summary[(v, p, s)]["tput_mb_s"]) for s in sizes if (v, p, s) in summary]
            if not pts:
                continue
            fn = os.path.join(dd, f"tput-{v}-{p}.dat")
            with open(fn, "w") as f:
                for s, t in pts:
                    f.write(f"{s} {t}\n")
            w = "lw 3 dt 2" if p == "memcpy" else "lw 2"
            lines.append(f"'plot-data/tput-{v}-{p}.dat' using 1:2 with linespoints ls {styles[p]} {w} title '{gp_text(LABEL[p])}'")
        if lines:
            png = f"throughput-{v}.png"
            gnuplot(f"""set terminal pngcairo size 1000,650 font 'sans,11'
set output '{png}'
set title "Throughput between two guests, {title(v)}\\n{{/*0.8 {sub}}}"
set logscale xy
set xlabel 'message size (bytes)'
set ylabel 'MB/s (10^6 B/s, one way)'
set xrange [40:1.6e6]
set format y '%g'
set xtics ("64" 64, "256" 256, "1K" 1024, "4K" 4096, "16K" 16384, "64K" 65536, "256K" 262144, "1M" 1048576)
set grid
set key outside right top
plot {", ".join(lines)}
""", out) and made.append(png)
        # RTT CDF at the smallest size and at 64 KiB (or the largest below it).
        cdf_sizes = [sizes[0]] + [s for s in sizes if s == 65536][:1]
        panels = []
        for s in cdf_sizes:
            plines = []
            for p in ALL_PATHS:
                q = summary.get((v, p, s), {}).get("rtt_cdf_us")
                if not q:
                    continue
                fn = os.path.join(dd, f"cdf-{v}-{p}-{s}.dat")
                with open(fn, "w") as f:
                    for i, x in enumerate(q):
                        f.write(f"{x} {i / max(1, len(q) - 1)}\n")
                plines.append(f"'plot-data/cdf-{v}-{p}-{s}.dat' using 1:2 with lines ls {styles[p]} lw 2 title '{gp_text(LABEL[p])}'")
            if plines:
                panels.append(f"set title 'round trip, {size_name(s)} messages'\nplot {', '.join(plines)}")
        if panels:
            png = f"rtt-cdf-{v}.png"
            gnuplot(f"""set terminal pngcairo size {650 * len(panels) + 250},600 font 'sans,11'
set output '{png}'
set multiplot layout 1,{len(panels)} title "Round-trip time CDF, single round trips, {title(v)}\\n{{/*0.8 {sub}}}"
set logscale x
set format x '10^{{%L}}'
set xlabel 'round trip (µs)'
set ylabel 'fraction of round trips'
set yrange [0:1]
set grid
set key bottom right
{chr(10).join(panels)}
unset multiplot
""", out) and made.append(png)
    tp = [r for r in scale_rows if r["field"] == "tput_mb_s"]
    if tp:
        fn = os.path.join(dd, "scale.dat")
        with open(fn, "w") as f:
            first = tp[0]
            if first["alone"]:
                f.write(f"1 {first['alone']} {first['alone']}\n")
            for r in tp:
                if (r["path"], r["size"]) == (first["path"], first["size"]):
                    f.write(f"{r['guests'] // 2} {r['per_pair_mean']} {r['aggregate']}\n")
        png = "scale.png"
        gnuplot(f"""set terminal pngcairo size 800,550 font 'sans,11'
set output '{png}'
set title "Scaling: {gp_text(LABEL.get(first['path'], first['path'])).replace(chr(92), chr(92) * 2)}, {size_name(first['size'])} messages, pairs streaming at once\\n{{/*0.8 {sub}}}"
set xlabel 'pairs streaming at once'
set ylabel 'MB/s'
set xtics ("1 (pair 0 alone)" 1, "2 (4 guests)" 2, "4 (8 guests)" 4)
set xrange [0.5:4.5]
set yrange [0:*]
set grid
set key top left
plot 'plot-data/scale.dat' using 1:2 with linespoints lw 2 pt 7 title 'per pair (mean)', \\
     '' using 1:3 with linespoints lw 2 pt 5 title 'aggregate'
""", out) and made.append(png)
    return made


def main():
    out = sys.argv[1]
    meta = {}
    mp = os.path.join(out, "meta.env")
    if os.path.exists(mp):
        with open(mp) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    meta[k] = v.strip("'\"")
    recs, scale_recs = [], []
    for d in sorted(os.listdir(out)):
        p = os.path.join(out, d)
        if not os.path.isdir(p):
            continue
        if d.startswith("scale-"):
            for g in sorted(os.listdir(p)):
                if g.startswith("guest") and g.endswith(".tap"):
                    scale_recs += parse_tap(os.path.join(p, g))
        elif os.path.exists(os.path.join(p, "guest1.tap")):
            recs += parse_tap(os.path.join(p, "guest1.tap"))
    summary = summarise(recs)
    variants = [v for v in ("doorbell", "plain", "vsock") if any(k[0] == v for k in summary)]
    sizes = sorted({k[2] for k in summary})
    L = [f"## make bench, {meta.get('date', '')}", ""]
    L.append(f"commit {meta.get('commit', '?')}; bench kernel {meta.get('kernel', '?')}; "
             f"guests: TCG, 1 vCPU, 256 MiB, clock `{meta.get('clock', '?')}`; host: {meta.get('host', '?')}; "
             f"load average before/after: {meta.get('load_before', '?')} / {meta.get('load_after', '?')}; "
             f"settings: {meta.get('settings', '?')}")
    L.append("")
    for v in variants:
        L += main_tables(summary, v, sizes)
        L.append("")
    if "plain" in variants and "doorbell" in variants:
        L += plain_vs_doorbell(summary, sizes)
        L.append("")
    vv_rows = []
    if "vsock" in variants:
        t, vv_rows = vsock_vs_raw(summary, sizes)
        L += t
        L.append("")
    sc = scale_summary(scale_recs)
    scale_rows = []
    if sc:
        t, scale_rows = scale_tables(sc)
        L += t
        L.append("")
    made = plots(out, summary, variants, sizes, scale_rows, meta)
    L.append("Plots: " + ", ".join(made) if made else "Plots: none (gnuplot missing or failed)")
    L.append("")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L))
    js = {
        "meta": meta,
        "measurements": recs,
        "scale_measurements": scale_recs,
        "summary": [dict(variant=k[0], path=k[1], size=k[2], **v) for k, v in sorted(summary.items())],
        "scale": scale_rows,
        "vsock_vs_raw": vv_rows,
    }
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(js, f, indent=1)
    print("\n".join(L))


if __name__ == "__main__":
    main()

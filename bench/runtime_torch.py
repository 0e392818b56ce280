#!/usr/bin/env python3
"""The PyTorch peer of bench_runtime: single-input latency, batch-256
throughput and load-and-build cost of an S-member posterior, built three
ways from the weights `bench_runtime --setup DIR` wrote:

  loop     S nn.Module members called one after another
  bmm      (dense-only architectures) all members at once, torch.baddbmm
           per layer (the shared input expanded over the members)
  grouped  (architectures with conv2d) all members at once: one convolution
           with S*O filters for the first conv (shared input), grouped
           convolutions (groups=S) after it, torch.baddbmm for the dense layers
  vmap     functorch.vmap of one member's functional forward over the
           stacked weights

Each variant is verified against DIR/<case>.probs.f32 (the member softmax
probabilities edgebayes computed; max abs diff <= 1e-4) before anything is
timed; a mismatch exits 1 without timing. Prints one JSON line per variant
and a final "fastest" line (lowest median latency). See
docs/bench-runtime-peer.md.

  /usr/bin/python3 bench/runtime_torch.py --dir DIR --case mlp-s30 --threads 2
"""
import time

_T0 = time.perf_counter()  # before any other import: the child's process start

import argparse, ctypes, json, math, os, resource, subprocess, sys

TOL = 1e-4
STATE_FORMAT = "edgebayes-runtime-torch/1"


# ---------------------------------------------------------------- inputs

def parse_arch(text):
    """eb_arch text -> (input (h, w, c), [layer dicts with resolved shapes])."""
    shape, layers = None, []
    for item in text.replace("\n", ";").split(";"):
        item = item.split("#", 1)[0].split()
        if not item:
            continue
        op = item[0]
        if op == "input":
            h, w, c = (int(v) for v in item[1].split("x"))
            shape = (h, w, c)
            cur = shape
            continue
        if shape is None:
            raise ValueError("architecture: the first item must be 'input HxWxC'")
        h, w, c = cur
        if op == "conv2d":
            o = int(item[1])
            layers.append({"op": "conv", "in": cur, "c": c, "o": o})
            cur = (h - 2, w - 2, o)
        elif op == "dense":
            if h != 1 or w != 1:
                raise ValueError("architecture: dense on a %dx%dx%d input; add 'flatten'" % cur)
            o = int(item[1])
            layers.append({"op": "dense", "in": cur, "i": c, "o": o})
            cur = (1, 1, o)
        elif op == "maxpool":
            layers.append({"op": "maxpool", "in": cur})
            cur = (h // 2, w // 2, c)
        elif op == "relu":
            layers.append({"op": "relu", "in": cur})
        elif op == "flatten":
            layers.append({"op": "flatten", "in": cur})
            cur = (1, 1, h * w * c)
        else:
            raise ValueError("architecture: '%s' is not supported by the PyTorch peer" % op)
    if shape is None or not layers:
        raise ValueError("architecture: no input or no layers")
    return shape, layers


def n_params(layers):
    n = 0
    for L in layers:
        if L["op"] == "conv":
            n += L["o"] * 9 * L["c"] + L["o"]
        elif L["op"] == "dense":
            n += L["o"] * L["i"] + L["o"]
    return n


def read_case(d, case):
    with open(os.path.join(d, case + ".json")) as f:
        meta = json.load(f)
    shape, layers = parse_arch(meta["arch_text"])
    S, K = int(meta["S"]), int(meta["K"])
    if n_params(layers) != K:
        raise ValueError("%s.json: K=%d but the architecture has %d parameters"
                         % (case, K, n_params(layers)))
    return meta, shape, layers, S, K


def read_f32(path, count=None):
    import torch
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if count is not None and len(data) != 4 * count:
        raise ValueError("%s: %d bytes, expected %d floats" % (path, len(data), count))
    t = torch.frombuffer(data, dtype=torch.float32)
    return t if sys.byteorder == "little" else t.byteswap()


def torch_params(layers, flat):
    """(S, K) edgebayes layout -> stacked PyTorch-layout tensors, 2 per
    parameterised layer: conv (S,O,C,3,3) and (S,O); dense (S,out,in) and
    (S,out), the `in` index moved from NHWC flatten order to NCHW."""
    S = flat.shape[0]
    out, off, pending = [], 0, None  # pending: the (h, w, c) flatten came from
    for L in layers:
        if L["op"] == "conv":
            o, c = L["o"], L["c"]
            w = flat[:, off:off + o * 9 * c].reshape(S, o, 3, 3, c).permute(0, 1, 4, 2, 3)
            off += o * 9 * c
            out += [w.contiguous(), flat[:, off:off + o].contiguous()]
            off += o
        elif L["op"] == "dense":
            o, i = L["o"], L["i"]
            w = flat[:, off:off + o * i].reshape(S, o, i)
            if pending is not None:
                h, wd, c = pending
                w = w.reshape(S, o, h, wd, c).permute(0, 1, 4, 2, 3).reshape(S, o, i)
            off += o * i
            out += [w.contiguous(), flat[:, off:off + o].contiguous()]
            off += o
            pending = None
        elif L["op"] == "flatten":
            pending = L["in"]
    return out


def input_tensor(shape, x):
    h, w, c = shape
    return x.reshape(1, h, w, c).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW


# ---------------------------------------------------------------- builds

def build_loop(layers, params):
    """S independent nn.Sequential members, built from the state's slices."""
    import torch
    nn = torch.nn
    skip_init = torch.nn.utils.skip_init
    S = params[0].shape[0]
    members = []
    for s in range(S):
        mods, p = [], 0
        for L in layers:
            # skip_init: no random initialisation of weights overwritten next
            if L["op"] == "conv":
                m = skip_init(nn.Conv2d, L["c"], L["o"], 3)
            elif L["op"] == "dense":
                m = skip_init(nn.Linear, L["i"], L["o"])
            elif L["op"] == "maxpool":
                m = nn.MaxPool2d(2)
            elif L["op"] == "relu":
                m = nn.ReLU()
            else:
                m = nn.Flatten()
            if L["op"] in ("conv", "dense"):
                with torch.no_grad():
                    m.weight.copy_(params[p][s])
                    m.bias.copy_(params[p + 1][s])
                p += 2
            mods.append(m)
        net = nn.Sequential(*mods).eval()
        net.requires_grad_(False)
        members.append(net)

    def predict(x):
        probs = torch.stack([torch.softmax(m(x), dim=-1) for m in members])
        return probs, probs.mean(0)
    return predict


def build_batched(layers, params):
    """All members in one pass: activations are (B, S*C, H, W) in the
    convolutional part (member s owns channels s*C..s*C+C-1) and (S, B, F)
    in the dense part."""
    import torch
    F = torch.nn.functional
    S = params[0].shape[0]
    steps, p, shared = [], 0, True  # shared: the activation is still the input
    for L in layers:
        op = L["op"]
        if op == "conv":
            w = params[p].reshape(S * L["o"], L["c"], 3, 3)
            b = params[p + 1].reshape(S * L["o"])
            steps.append(("conv", w, b, 1 if shared else S))
            p += 2
            shared = False
        elif op == "dense":
            w, b = params[p], params[p + 1]
            # per member: (S, B, i) @ (S, i, o) + (S, 1, o); a shared input
            # is expanded (stride 0), the weights are a transposed view
            steps.append(("dense_shared" if shared else "dense", w.transpose(1, 2),
                          b.reshape(S, 1, L["o"])))
            p += 2
            shared = False
        elif op == "flatten":
            steps.append(("flatten_shared",) if shared else ("flatten", L["in"]))
        else:
            steps.append((op,))

    def predict(x):
        for st in steps:
            k = st[0]
            if k == "conv":
                x = F.conv2d(x, st[1], st[2], groups=st[3])
            elif k == "dense_shared":
                x = torch.baddbmm(st[2], x.expand(S, -1, -1), st[1])
            elif k == "dense":
                x = torch.baddbmm(st[2], x, st[1])
            elif k == "flatten_shared":
                x = x.reshape(x.shape[0], -1)
            elif k == "flatten":
                h, w, c = st[1]
                x = x.reshape(x.shape[0], S, c * h * w).transpose(0, 1)  # (S, B, C*H*W)
            elif k == "relu":
                x = torch.relu(x)
            elif k == "maxpool":
                x = F.max_pool2d(x, 2)
        probs = torch.softmax(x, dim=-1)
        return probs, probs.mean(0)
    return predict


def build_vmap(layers, params):
    """functorch.vmap of one member's functional forward over stacked weights."""
    import torch
    import functorch
    F = torch.nn.functional

    def member(ps, x):
        p = 0
        for L in layers:
            op = L["op"]
            if op == "conv":
                x = F.conv2d(x, ps[p], ps[p + 1])
                p += 2
            elif op == "dense":
                x = F.linear(x, ps[p], ps[p + 1])
                p += 2
            elif op == "relu":
                x = F.relu(x)
            elif op == "maxpool":
                x = F.max_pool2d(x, 2)
            else:
                x = x.flatten(1)
        return torch.softmax(x, dim=-1)

    batched = functorch.vmap(member, in_dims=(0, None))
    ps = tuple(params)

    def predict(x):
        probs = batched(ps, x)
        return probs, probs.mean(0)
    return predict


def variants_for(layers):
    conv = any(L["op"] == "conv" for L in layers)
    return ["loop", "grouped" if conv else "bmm", "vmap"]


BUILDERS = {"loop": build_loop, "bmm": build_batched, "grouped": build_batched,
            "vmap": build_vmap}


# ---------------------------------------------------------------- platform

def set_threads(threads):
    import torch
    torch.set_num_threads(threads)
    lib = openblas()
    if lib is not None:
        try:
            lib.openblas_set_num_threads(ctypes.c_int(threads))
        except AttributeError:
            pass


def openblas_path():
    """The OpenBLAS library mapped into this process (torch's), or ""."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libopenblas"):
                    return path
    except OSError:
        pass
    return ""


def openblas():
    """The libopenblas.so.0 torch loaded (dlopen by soname returns the one
    already mapped), or None when torch loaded no OpenBLAS: then dlopen
    would load another library than the one torch runs."""
    if not openblas_path():
        return None
    try:
        return ctypes.CDLL("libopenblas.so.0")
    except OSError:
        return None


def blas_info():
    import torch
    lib_path = openblas_path()
    lib = openblas()
    if lib is not None:
        try:
            lib.openblas_get_config.restype = ctypes.c_char_p
            lib.openblas_get_corename.restype = ctypes.c_char_p
            blas = lib.openblas_get_config().decode()
            core = lib.openblas_get_corename().decode()
            nthreads = lib.openblas_get_num_threads()
        except AttributeError:
            lib = None
    if lib is None:
        cfg = torch.__config__.show()
        blas = ";".join(w for w in cfg.replace(",", "\n").split("\n")
                        if "BLAS_INFO" in w or "MKL" in w).strip() or "unknown"
        core = next((l.split(":", 1)[1].strip() for l in cfg.splitlines()
                     if "CPU capability" in l), "unknown")
        nthreads = None
    variant = os.environ.get("EB_OPENBLAS_VARIANT", "")
    if not variant:
        d = os.path.basename(os.path.dirname(lib_path))
        variant = d[len("openblas-"):] if d.startswith("openblas-") else ("default" if lib_path else "")
    return {"blas": blas, "core": core, "blas_lib": lib_path, "openblas_variant": variant,
            "openblas_threads": nthreads}


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def rss_bytes(field="VmRSS"):
    """/proc/self/status's VmRSS (resident now) or VmHWM (this process
    image's peak), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- state

def state_path(d, case):
    return os.path.join(d, case + ".torch.pt")


def ensure_state(d, case, meta, params):
    """torch.save the stacked PyTorch-layout weights once per .f32 (keyed by
    its size and mtime), for the load-and-build measurement."""
    import torch
    st = os.stat(os.path.join(d, case + ".f32"))
    key = {"format": STATE_FORMAT, "f32_size": st.st_size, "f32_mtime_ns": st.st_mtime_ns,
           "arch_text": meta["arch_text"], "S": int(meta["S"])}
    path = state_path(d, case)
    if os.path.exists(path):
        try:
            old = torch.load(path)
            if all(old.get(k) == v for k, v in key.items()):
                return path
        except Exception:
            pass
    tmp = path + ".tmp%d" % os.getpid()
    torch.save(dict(key, params=list(params)), tmp)
    os.replace(tmp, path)
    return path


def child_load(a):
    """Fresh process: import torch, load the saved state, build the
    variant, predict once. Prints one JSON line."""
    t_imp = time.perf_counter()
    import torch
    if a.child_load == "vmap":
        import functorch  # noqa: F401  (part of this variant's import cost)
    t_loaded = time.perf_counter()
    rss_import = peak_rss_bytes()
    set_threads(a.threads)
    state = torch.load(state_path(a.dir, a.case))
    _, shape, layers, S, _ = read_case(a.dir, a.case)
    predict = BUILDERS[a.child_load](layers, state["params"])
    x = input_tensor(shape, read_f32(os.path.join(a.dir, "input.f32"), shape[0] * shape[1] * shape[2]))
    with torch.inference_mode():
        probs, _ = predict(x)
    t_first = time.perf_counter()
    startup = time.monotonic() - a.spawn_monotonic if a.spawn_monotonic else None
    rss, rss_now, hwm = peak_rss_bytes(), rss_bytes(), rss_bytes("VmHWM")
    ref = read_f32(os.path.join(a.dir, a.case + ".probs.f32"), S * 10).reshape(S, -1)
    diff = float((probs.reshape(S, -1) - ref).abs().max())
    print(json.dumps({"import_s": t_loaded - t_imp, "load_s": t_first - t_loaded,
                      "startup_s": startup, "interpreter_s": t_imp - _T0,
                      "peak_rss_bytes": rss, "rss_after_import_bytes": rss_import,
                      "rss_bytes": rss_now, "vm_hwm_bytes": hwm,
                      "max_abs_diff": diff}))
    return 0 if diff <= TOL else 1


def drop_cache(path):
    """Evicts path's pages from the page cache (fsync, then
    POSIX_FADV_DONTNEED, as edgebayes's cold load does) and returns the
    bytes still resident by util-linux's fincore, or None without it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    try:
        r = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES",
                            path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout.split() else None
    except (OSError, ValueError):
        return None


def measure_load(a, variant, cold=False):
    """Median over fresh processes. cold: the saved state's pages are
    dropped from the page cache before each child (torch's own libraries
    stay cached: import_s is the warm import either way)."""
    runs = []
    for _ in range(a.load_runs):
        resident = drop_cache(state_path(a.dir, a.case)) if cold else None
        cmd = [sys.executable, os.path.abspath(__file__), "--dir", a.dir, "--case", a.case,
               "--threads", str(a.threads), "--child-load", variant,
               "--spawn-monotonic", repr(time.monotonic())]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("load-and-build child for %s/%s failed (exit %d): %s"
                               % (a.case, variant, r.returncode, r.stdout.strip()))
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        runs[-1]["resident_after_drop_bytes"] = resident

    def med(k):
        v = sorted(r[k] for r in runs if r[k] is not None)
        return v[len(v) // 2] if v else None
    out = {k: med(k) for k in ("load_s", "import_s", "startup_s", "peak_rss_bytes",
                               "vm_hwm_bytes", "rss_after_import_bytes", "rss_bytes")}
    if cold:
        res = [r["resident_after_drop_bytes"] for r in runs]
        # verified: every child started with none of the state resident
        out["cold_verified"] = (1 if all(x == 0 for x in res) else 0) if None not in res else None
    return out


# ---------------------------------------------------------------- timing

def time_latency(predict, x, min_queries, min_seconds, max_seconds):
    warm_end = time.perf_counter() + min(0.25, min_seconds / 4)
    for i in range(1000):
        predict(x)
        if i >= 4 and time.perf_counter() > warm_end:
            break
    ts, start = [], time.perf_counter()
    while True:
        t = time.perf_counter()
        predict(x)
        e = time.perf_counter()
        ts.append(e - t)
        el = e - start
        if (len(ts) >= min_queries and el >= min_seconds) or (el >= max_seconds and len(ts) >= 20):
            break
    ts.sort()
    return ts[len(ts) // 2], ts[max(0, math.ceil(0.99 * len(ts)) - 1)], len(ts)


def time_throughput(predict, xb, min_seconds):
    predict(xb)
    ts, start = [], time.perf_counter()
    while len(ts) < 3 or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        predict(xb)
        ts.append(time.perf_counter() - t)
    ts.sort()
    return xb.shape[0] / ts[len(ts) // 2]


# ---------------------------------------------------------------- main

class Case:
    """The case's weights in PyTorch layout, its input, a batch whose row 0
    is that input, and edgebayes's member probabilities."""

    def __init__(self, a):
        import torch
        self.meta, self.shape, self.layers, self.S, K = read_case(a.dir, a.case)
        h, w, c = self.shape
        flat = read_f32(os.path.join(a.dir, a.case + ".f32"), self.S * K).reshape(self.S, K)
        self.ref = read_f32(os.path.join(a.dir, a.case + ".probs.f32")).reshape(self.S, -1)
        self.params = torch_params(self.layers, flat)
        self.x = input_tensor(self.shape, read_f32(os.path.join(a.dir, "input.f32"), h * w * c))
        g = torch.Generator().manual_seed(1)
        self.xb = torch.rand((a.batch,) + tuple(self.x.shape[1:]), generator=g)
        self.xb[0] = self.x[0]


def verify(a, case, variants):
    """Build each variant and check it before anything is timed: the single
    input against edgebayes's member probabilities (and their mean), and
    the batched path (row 0 against them, all rows against the first
    variant). Returns the predictors, or None on a mismatch."""
    import torch
    S, ref = case.S, case.ref
    predictors = {v: BUILDERS[v](case.layers, case.params) for v in variants}
    bad, base = [], None
    with torch.inference_mode():
        for v in variants:
            probs, mean = predictors[v](case.x)
            d1 = float((probs.reshape(S, -1) - ref).abs().max())
            d2 = float((mean.reshape(-1) - ref.mean(0)).abs().max())
            pb, _ = predictors[v](case.xb[:16])
            d3 = float((pb[:, 0, :] - ref).abs().max())
            d4 = float((pb - base).abs().max()) if base is not None else 0.0
            if base is None:
                base = pb
            print("runtime_torch: verify %s/%s: max abs diff %.2e (members) %.2e (mean) "
                  "%.2e (batch row 0) %.2e (batch vs %s)" % (a.case, v, d1, d2, d3, d4, variants[0]),
                  file=sys.stderr)
            if not max(d1, d2, d3, d4) <= TOL:
                bad.append(v)
    if bad:
        print("runtime_torch: %s: %s disagree with %s.probs.f32 beyond %g; not timing"
              % (a.case, ",".join(bad), a.case, TOL), file=sys.stderr)
        return None
    return predictors


def child_setup(a, variants):
    """Fresh process: verify every variant, then torch.save the state the
    load children read. Run apart so that the parent stays small: a child's
    ru_maxrss starts from its parent's peak (Linux keeps it across
    fork/vfork and exec)."""
    set_threads(a.threads)
    case = Case(a)
    if verify(a, case, variants) is None:
        return 1
    ensure_state(a.dir, a.case, case.meta, case.params)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="directory bench_runtime --setup wrote")
    ap.add_argument("--case", required=True, help="e.g. mlp-s30")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--min-queries", type=int, default=200)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="stop a latency series here even below --min-queries")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--throughput-seconds", type=float, default=1.0)
    ap.add_argument("--load-runs", type=int, default=3,
                    help="fresh processes per variant for load_s/import_s/RSS (0: skip)")
    ap.add_argument("--verify-only", action="store_true")
    ap.add_argument("--child-load", help=argparse.SUPPRESS)
    ap.add_argument("--child-setup", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--spawn-monotonic", type=float, default=0.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.dir = os.path.abspath(a.dir)
    if a.child_load:
        return child_load(a)
    meta, _, layers, S, _ = read_case(a.dir, a.case)  # no torch yet
    variants = variants_for(layers)
    if a.variants:
        want = a.variants.split(",")
        variants = [v for v in variants if v in want]
    if a.child_setup:
        return child_setup(a, variants)

    loads = {}
    if a.load_runs > 0 and not a.verify_only:
        # Verify and save the state in a fresh process, then measure the
        # load children while this process is still small (see child_setup).
        cmd = [sys.executable, os.path.abspath(__file__), "--dir", a.dir, "--case", a.case,
               "--threads", str(a.threads), "--batch", str(a.batch), "--child-setup"]
        if a.variants:
            cmd += ["--variants", a.variants]
        if subprocess.run(cmd).returncode != 0:
            return 1
        for v in variants:
            loads[v] = measure_load(a, v)
            cold = measure_load(a, v, cold=True)
            loads[v]["load_cold_s"] = cold["load_s"]
            loads[v]["cold_verified"] = cold["cold_verified"]

    import torch
    set_threads(a.threads)
    case = Case(a)
    predictors = verify(a, case, variants)
    if predictors is None:
        return 1
    if a.verify_only:
        return 0
    info = blas_info()
    rows = []
    for v in variants:
        predict = predictors[v]
        with torch.inference_mode():
            med, p99, n = time_latency(predict, case.x, a.min_queries, a.min_seconds, a.max_seconds)
            tput = time_throughput(predict, case.xb, a.throughput_seconds)
        load = loads.get(v, {})
        row = {"side": "pytorch", "case": a.case, "variant": v, "S": S, "arch": meta.get("arch", ""),
               "threads": a.threads, "latency_median_s": med, "latency_p99_s": p99,
               "queries": n, "throughput_inputs_per_s": tput, "batch": a.batch}
        for k in ("load_s", "load_cold_s", "cold_verified", "import_s", "startup_s",
                  "peak_rss_bytes", "vm_hwm_bytes", "rss_after_import_bytes", "rss_bytes"):
            row[k] = load.get(k)
        row.update(blas=info["blas"], core=info["core"], openblas_variant=info["openblas_variant"],
                   blas_lib=info["blas_lib"], openblas_threads=info["openblas_threads"],
                   torch=torch.__version__)
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = min(rows, key=lambda r: r["latency_median_s"])
    print(json.dumps(dict(best, variant="fastest", fastest_variant=best["variant"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

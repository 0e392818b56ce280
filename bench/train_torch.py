#!/usr/bin/env python3
"""One training epoch of Fashion-MNIST in PyTorch, the recipe of
bench/train.c: SGD with momentum 0.9, lr 0.05, batch 128, a fresh
initialisation per timed epoch, median images/s over --epochs epochs.
Reads the same IDX files edgebayes trains on. Prints one JSON line with the
BLAS PyTorch loaded (the OpenBLAS library and its core type)."""
import argparse, gzip, json, math, os, struct, sys, time

import numpy as np
import torch


def idx(path):
    data = gzip.open(path).read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def blas_info():
    """The OpenBLAS shared object mapped into this process, and its core."""
    lib = "unknown"
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            name = os.path.basename(path)
            if "openblas" in path and (name.startswith("libblas") or name.startswith("libopenblas")):
                lib = path
                break
    core = "unknown"
    try:
        import ctypes
        handle = ctypes.CDLL(lib)
        handle.openblas_get_corename.restype = ctypes.c_char_p
        core = handle.openblas_get_corename().decode()
    except OSError:
        pass
    return lib, core


def model(arch):
    nn = torch.nn
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256),
                             nn.ReLU(), nn.Linear(256, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=["mlp", "cnn"], default="mlp")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x = torch.from_numpy(idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"))
                         .astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz")).astype(np.int64))
    n = x.shape[0]
    rates = []
    for epoch in range(a.epochs):
        torch.manual_seed(epoch + 1)
        net = model(a.arch)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        order = torch.randperm(n)
        total, t0 = 0.0, time.perf_counter()
        for i in range(0, n, 128):
            idx_ = order[i:i + 128]
            opt.zero_grad()
            loss = loss_fn(net(x[idx_]), y[idx_])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx_)
        rates.append(n / (time.perf_counter() - t0))
        if not total / n < 0.9 * math.log(10):
            print("train_torch: epoch did not learn", file=sys.stderr)
            return 1
    rates.sort()
    median = rates[len(rates) // 2] if len(rates) % 2 else 0.5 * sum(rates[len(rates) // 2 - 1:][:2])
    lib, core = blas_info()
    print(json.dumps({"side": "pytorch", "arch": a.arch, "threads": a.threads, "epochs": a.epochs,
                      "images_per_sec": round(median, 1), "torch": torch.__version__,
                      "blas": lib, "core": core}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Generates a synthetic build context: N files (default 50,000) totalling ~SIZE MB (default 800)
in a tree of directories, half compressible text and half incompressible bytes, deterministic
for a given seed. Usage: gen-context.py DIR [--files N] [--mb SIZE] [--seed S]"""
import argparse, os, random

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("--files", type=int, default=50_000)
p.add_argument("--mb", type=int, default=800)
p.add_argument("--seed", type=int, default=1)
a = p.parse_args()
rnd = random.Random(a.seed)
avg = a.mb * 1024 * 1024 // a.files
words = [("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))) for _ in range(4000)]
text_pool = " ".join(rnd.choice(words) for _ in range(400_000)).encode()
rand_pool = rnd.randbytes(16 * 1024 * 1024)
os.makedirs(a.dir, exist_ok=True)
with open(os.path.join(a.dir, "Dockerfile"), "w") as f:
    f.write("FROM scratch\nCOPY tree/ /data/\n")
for i in range(a.files):
    d = os.path.join(a.dir, "tree", f"d{i % 500:03d}", f"s{(i // 500) % 10}")
    os.makedirs(d, exist_ok=True)
    size = max(0, int(rnd.expovariate(1 / avg)))
    pool = text_pool if i % 2 == 0 else rand_pool
    off = rnd.randrange(0, len(pool) - min(size, len(pool) - 1))
    data = pool[off:off + size]
    while len(data) < size:
        data += pool[: size - len(data)]
    with open(os.path.join(d, f"f{i}.{'txt' if i % 2 == 0 else 'bin'}"), "wb") as f:
        f.write(data)

#!/usr/bin/env python3
"""Generates a synthetic fleet: N apps over one base image, as a strata workspace.

    gen-fleet.py DIR --apps N [--files F] [--kb K] [--seed S] [--run CMD] [--base REF]
    gen-fleet.py DIR --link-base

DIR/strata.toml builds every `apps/*` context (tags `{name}:latest`). Each app has F source
files (default 4) totalling about K KB (default 300; half text, half random bytes, different per
app, deterministic for a seed) and a Dockerfile:

    FROM oci-layout://base:1          (--base)
    COPY src/ /app/
    RUN echo 'app:x:1000:1000::/app:/bin/sh' >> /etc/passwd && chown -R app /app
                                      (--run; depends on the base: its passwd, its tools;
                                       e.g. `useradd -u 1000 app && chown -R app /app` on Debian)

The base is the OCI layout DIR/base (tag `1`): build or copy it there, then run
`gen-fleet.py DIR --link-base`, which hard-links it into every app's context as `base/` (strata
only reads layouts inside the build context, and hard links keep N copies free). Moving the tag
(exporting a patched base to DIR/base with the same tag) needs `--link-base` again."""
import argparse
import os
import random
import shutil


def link_base(root):
    src = os.path.join(root, "base")
    if not os.path.isfile(os.path.join(src, "index.json")):
        raise SystemExit(f"error: no OCI layout at {src}\nhint: export the base image there first")
    apps = os.path.join(root, "apps")
    for app in sorted(os.listdir(apps)):
        dst = os.path.join(apps, app, "base")
        shutil.rmtree(dst, ignore_errors=True)
        for dirpath, _dirs, files in os.walk(src):
            rel = os.path.relpath(dirpath, src)
            os.makedirs(os.path.join(dst, rel), exist_ok=True)
            for f in files:
                os.link(os.path.join(dirpath, f), os.path.join(dst, rel, f))


def generate(a):
    rnd = random.Random(a.seed)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
             for _ in range(2000)]
    os.makedirs(os.path.join(a.dir, "apps"), exist_ok=True)
    with open(os.path.join(a.dir, "strata.toml"), "w") as f:
        f.write('[defaults]\ntags = ["{name}:latest"]\n\n[[image]]\ncontext = "apps/*"\n')
    per_file = max(1, a.kb * 1024 // a.files)
    for i in range(a.apps):
        app = os.path.join(a.dir, "apps", f"app{i:04d}")
        src = os.path.join(app, "src")
        os.makedirs(src, exist_ok=True)
        with open(os.path.join(app, "Dockerfile"), "w") as f:
            f.write(f"FROM {a.base}\nCOPY src/ /app/\nRUN {a.run}\n")
        with open(os.path.join(app, ".dockerignore"), "w") as f:
            f.write("base\n")
        for j in range(a.files):
            if j % 2 == 0:
                text = f"# app {i} file {j}\n" + " ".join(rnd.choice(words) for _ in range(per_file // 6))
                data = text.encode()[:per_file]
                name = f"mod{j}.py"
            else:
                data = rnd.randbytes(per_file)
                name = f"asset{j}.bin"
            sub = os.path.join(src, "lib" if j % 3 == 2 else "")
            os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, name), "wb") as f:
                f.write(data)
    if os.path.isfile(os.path.join(a.dir, "base", "index.json")):
        link_base(a.dir)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--apps", type=int)
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--kb", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--run", default="echo 'app:x:1000:1000::/app:/bin/sh' >> /etc/passwd && chown -R app /app")
    p.add_argument("--base", default="oci-layout://base:1")
    p.add_argument("--link-base", action="store_true")
    a = p.parse_args()
    if a.link_base:
        link_base(a.dir)
    elif a.apps:
        generate(a)
    else:
        p.error("give --apps N (generate) or --link-base")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Collect every Istio networking document ringway reads from istio/istio and
istio/api into the snapshot under tests/corpus/ (issue 10).

    scripts/istio-corpus.py ISTIO_CHECKOUT API_CHECKOUT [--out tests/corpus]

Each argument is a checkout (work tree) or a bare git directory (read at HEAD
with `git ls-tree` / `git cat-file`, as the /work/.mirror snapshots are).

Kept: YAML documents whose top-level `apiVersion` is `networking.istio.io/...`
and whose `kind` is Gateway, VirtualService, DestinationRule, ServiceEntry or
WorkloadEntry, and List documents (`kind: List`, `VirtualServiceList`, ...)
holding at least one of those. Sources:

  istio/istio  every *.yaml, *.yml, *.yaml.golden, *.yml.golden file; files
               holding `{{` (Go templates) are skipped whole.
  istio/api    the ```yaml blocks in the `//` comments of
               networking/v1alpha3/*.proto (lines holding only `...`, the
               documentation's "rest omitted", are left out), and the CRD validation test data
               tests/testdata/*.yaml.
In CRD validation test data, a document's `_err:` line (the error Istio's CRD
validation expects) becomes a `# istio _err:` comment, so the document itself
is what ringway judges.

Identical documents (same text after trimming) are kept once, at their first
source in path order; the header of that copy lists the other sources.

Output: one file per source file, tests/corpus/<repo>/<path with / as __>.yaml,
each document introduced by `--- # id: <repo>:<path>#<index>` (index: 0-based
position among the YAML documents of the source file, or among the ```yaml
blocks of a proto file). tests/istio_corpus.rs reads these files. The commits
go to tests/corpus/SOURCES.txt.

Python 3 standard library and git only.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

KINDS = {"Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry"}
YAML_SUFFIXES = (".yaml", ".yml", ".yaml.golden", ".yml.golden")
API_VERSION = re.compile(r"""^apiVersion:\s*["']?networking\.istio\.io/""", re.M)
ANY_API_VERSION = re.compile(r"""^\s*-?\s*apiVersion:\s*["']?networking\.istio\.io/""", re.M)
KIND = re.compile(r"""^kind:\s*["']?([A-Za-z]+)""", re.M)
ITEM_KIND = re.compile(r"""^\s*-?\s*kind:\s*["']?([A-Za-z]+)""", re.M)
SEPARATOR = re.compile(r"^---(\s|$)")
ERR_LINE = re.compile(r"^(_err:.*)$", re.M)


class Source:
    """A repository read from a work tree or a bare git directory."""

    def __init__(self, path, name):
        self.name = name
        self.path = path
        git_dir = None
        if os.path.isdir(os.path.join(path, ".git")) or os.path.isfile(os.path.join(path, ".git")):
            self.tree = path
            git_dir = None
        elif os.path.isfile(os.path.join(path, "HEAD")) and os.path.isdir(os.path.join(path, "objects")):
            self.tree = None
            git_dir = path
        else:
            self.tree = path
        self.git = ["git", "--git-dir", git_dir] if git_dir else ["git", "-C", path]
        try:
            self.commit = subprocess.run(
                self.git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True
            ).stdout.strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            self.commit = "unknown"

    def files(self):
        if self.tree is not None:
            out = []
            for root, dirs, names in os.walk(self.tree):
                dirs[:] = sorted(d for d in dirs if d != ".git")
                for n in names:
                    out.append(os.path.relpath(os.path.join(root, n), self.tree))
            return sorted(p.replace(os.sep, "/") for p in out)
        listing = subprocess.run(
            self.git + ["ls-tree", "-r", "-z", "--name-only", "HEAD"],
            check=True, capture_output=True,
        ).stdout.decode("utf-8", "surrogateescape")
        return sorted(p for p in listing.split("\0") if p)

    def read_all(self, paths):
        """{path: text} for `paths` (undecodable files are left out)."""
        texts = {}
        if self.tree is not None:
            for p in paths:
                try:
                    with open(os.path.join(self.tree, p), "rb") as f:
                        texts[p] = f.read().decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    pass
            return texts
        request = "".join("HEAD:%s\n" % p for p in paths).encode()
        out = subprocess.run(
            self.git + ["cat-file", "--batch"], input=request, check=True, capture_output=True
        ).stdout
        pos = 0
        for p in paths:
            eol = out.index(b"\n", pos)
            header = out[pos:eol].split()
            pos = eol + 1
            if len(header) < 3 or header[1] != b"blob":
                continue
            size = int(header[2])
            body = out[pos:pos + size]
            pos += size + 1
            try:
                texts[p] = body.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return texts


def split_documents(text):
    """The YAML documents of a stream, by `---` lines (as kubectl does)."""
    docs, cur = [], []
    for line in text.splitlines():
        if SEPARATOR.match(line):
            docs.append("\n".join(cur))
            cur = []
            rest = line[3:].strip()
            if rest and not rest.startswith("#"):
                cur.append(rest)
        elif line.rstrip() == "...":
            docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    docs.append("\n".join(cur))
    return docs


def wanted(doc):
    """Whether ringway should read `doc`: one of the five kinds, or a List of them."""
    kind = KIND.search(doc)
    if not kind:
        return False
    kind = kind.group(1)
    if kind == "List" or kind.endswith("List"):
        if not ANY_API_VERSION.search(doc):
            return False
        return any(k in KINDS for k in ITEM_KIND.findall(doc))
    return bool(API_VERSION.search(doc)) and kind in KINDS


def proto_blocks(text):
    """The ```yaml blocks of the `//` comments of a proto file, comment marks removed."""
    blocks, cur = [], None
    for line in text.splitlines():
        s = line.strip()
        if not s.startswith("//"):
            if cur is not None:
                blocks.append(cur)
                cur = None
            continue
        body = s[2:]
        if cur is None:
            if body.strip().startswith("```yaml") or body.strip().startswith("```yml"):
                cur = []
            continue
        if body.strip().startswith("```"):
            blocks.append(cur)
            cur = None
            continue
        if body.strip() == "...":
            continue  # "rest omitted" in the documentation: not YAML
        cur.append(body)
    out = []
    for b in blocks:
        indents = [len(l) - len(l.lstrip(" ")) for l in b if l.strip()]
        cut = min(indents) if indents else 0
        out.append("\n".join(l[cut:] for l in b))
    return out


def err_comment(doc):
    """CRD validation test data (istio/api tests/testdata, copied to istio/istio
    pkg/config/validation/testdata/crds) marks an invalid document with a
    top-level `_err:` key: keep it as a comment."""
    return ERR_LINE.sub(lambda m: "# istio " + m.group(1), doc)


def mangle(path):
    return path.replace("/", "__")


def collect(istio, api):
    """[(source, path, [(index, doc)])], and statistics."""
    stats = {"template_files": 0}
    found = []

    paths = [p for p in istio.files() if p.endswith(YAML_SUFFIXES)]
    texts = istio.read_all(paths)
    for p in paths:
        text = texts.get(p)
        if text is None or "networking.istio.io" not in text:
            continue
        if "{{" in text:
            stats["template_files"] += 1
            continue
        docs = [(i, d) for i, d in enumerate(split_documents(text)) if wanted(d)]
        docs = [(i, err_comment(d)) for i, d in docs]
        if docs:
            found.append((istio, p, docs))

    api_files = api.files()
    protos = [p for p in api_files if re.match(r"networking/v1alpha3/[^/]+\.proto$", p)]
    tests = [p for p in api_files if re.match(r"tests/testdata/[^/]+\.ya?ml$", p)]
    texts = api.read_all(protos + tests)
    for p in protos:
        docs = [
            (i, d)
            for i, block in enumerate(proto_blocks(texts.get(p, "")))
            for d in split_documents(block)
            if wanted(d)
        ]
        # A block holding several documents keeps the block index for each; make ids unique.
        numbered, seen = [], {}
        for i, d in docs:
            n = seen.get(i, 0)
            seen[i] = n + 1
            numbered.append((i if n == 0 else "%d.%d" % (i, n), d))
        if numbered:
            found.append((api, p, numbered))
    for p in tests:
        docs = []
        for i, d in enumerate(split_documents(texts.get(p, ""))):
            d = err_comment(d)
            if wanted(d):
                docs.append((i, d))
        if docs:
            found.append((api, p, docs))
    return found, stats


def write(found, sources, out_dir, stats):
    for repo in ("istio", "api"):
        shutil.rmtree(os.path.join(out_dir, repo), ignore_errors=True)
    first = {}  # trimmed text -> id of the kept copy
    also = {}  # id of the kept copy -> [other ids]
    kept = []  # (source, path, [(id, doc)])
    counts = {}
    for src, path, docs in found:
        keep = []
        for i, d in docs:
            doc_id = "%s:%s#%s" % (src.name, path, i)
            key = d.strip()
            if key in first:
                also.setdefault(first[key], []).append(doc_id)
                continue
            first[key] = doc_id
            keep.append((doc_id, d))
        c = counts.setdefault(src.name, [0, 0])
        c[0] += len(docs)
        c[1] += len(keep)
        if keep:
            kept.append((src, path, keep))
    total_bytes = 0
    for src, path, keep in kept:
        short = src.name.split("/")[1]
        target = os.path.join(out_dir, short, mangle(path) + ("" if path.endswith((".yaml", ".yml")) else ".yaml"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        lines = [
            "# Istio networking documents of %s@%s %s" % (src.name, src.commit, path),
            "# Generated by scripts/istio-corpus.py; do not edit (see tests/corpus/README.md).",
        ]
        for doc_id, d in keep:
            lines.append("--- # id: %s" % doc_id)
            for other in also.get(doc_id, []):
                lines.append("# same document: %s" % other)
            lines.append(d.strip("\n"))
        body = "\n".join(lines) + "\n"
        total_bytes += len(body.encode())
        with open(target, "w") as f:
            f.write(body)
    with open(os.path.join(out_dir, "SOURCES.txt"), "w") as f:
        for src in sources:
            f.write("%s %s\n" % (src.name, src.commit))
    for name, (n, k) in sorted(counts.items()):
        print("%s: %d documents, %d after removing duplicates" % (name, n, k))
    print("skipped %d istio/istio files holding Go templates" % stats["template_files"])
    print("wrote %d files, %d bytes" % (len(kept), total_bytes))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("istio")
    ap.add_argument("api")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "corpus"))
    args = ap.parse_args()
    istio = Source(args.istio, "istio/istio")
    api = Source(args.api, "istio/api")
    found, stats = collect(istio, api)
    write(found, [istio, api], os.path.normpath(args.out), stats)


if __name__ == "__main__":
    sys.exit(main())

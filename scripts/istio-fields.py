#!/usr/bin/env python3
"""Derive config/istio-api/fields.txt from istio/api's protos.

Usage: scripts/istio-fields.py ISTIO_API_CHECKOUT [COMMIT] > config/istio-api/fields.txt

Reads the networking messages ringway loads (Gateway, VirtualService,
DestinationRule, ServiceEntry, WorkloadEntry; v1, v1beta1 and v1alpha3 are
the same messages) and istio.type.v1beta1's WorkloadSelector, and writes
one line per message and field, with protobuf's JSON (lowerCamelCase)
names and each field's type resolved the way protoc resolves it (innermost
scope first), and one line per enum with its values. ringway validates
every document against this list (src/config/schema.rs), and a unit test
checks that the serde model accepts exactly these fields.
"""

import re
import sys
from pathlib import Path

FILES = [
    ("istio.networking.v1alpha3", "networking/v1alpha3/gateway.proto"),
    ("istio.networking.v1alpha3", "networking/v1alpha3/virtual_service.proto"),
    ("istio.networking.v1alpha3", "networking/v1alpha3/destination_rule.proto"),
    ("istio.networking.v1alpha3", "networking/v1alpha3/service_entry.proto"),
    ("istio.networking.v1alpha3", "networking/v1alpha3/workload_entry.proto"),
    # ServiceEntry.workloadSelector's message lives here.
    ("istio.networking.v1alpha3", "networking/v1alpha3/sidecar.proto"),
    ("istio.type.v1beta1", "type/v1beta1/selector.proto"),
]

ROOTS = ["Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry"]

SCALARS = {
    "string", "bool", "bytes", "double", "float",
    "int32", "int64", "uint32", "uint64", "sint32", "sint64",
    "fixed32", "fixed64", "sfixed32", "sfixed64",
}


def json_name(name):
    """protoc's default JSON name: drop each '_' and upper-case the next letter."""
    out, upper = [], False
    for c in name:
        if c == "_":
            upper = True
            continue
        out.append(c.upper() if upper else c)
        upper = False
    return "".join(out)


def strip_comments(text):
    # Line comments first: their text holds hosts like "ns1/*".
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|[A-Za-z_][A-Za-z0-9_.]*|\d+|[{}\[\]<>;=,()]|\S')


def parse(package, text, messages, enums):
    tokens = TOKEN.findall(strip_comments(text))
    scope = []  # (kind, name)
    pending_fields = []  # (scope path, field name, type, label)
    i = 0

    def path():
        return ".".join(n for _, n in scope if n is not None)

    def skip_statement(i):
        """Index after the ';' that ends the statement at i (options may hold braces)."""
        depth = 0
        while True:
            if tokens[i] == "{":
                depth += 1
            elif tokens[i] == "}":
                depth -= 1
            elif tokens[i] == ";" and depth == 0:
                return i + 1
            i += 1

    while i < len(tokens):
        t = tokens[i]
        if t in ("message", "enum") and i + 2 < len(tokens) and tokens[i + 2] == "{":
            scope.append((t, tokens[i + 1]))
            full = package + "." + path()
            if t == "message":
                messages.setdefault(full, [])
            else:
                enums.setdefault(full, [])
            i += 3
            continue
        if t == "oneof" and tokens[i + 2] == "{":
            scope.append(("oneof", None))
            i += 3
            continue
        if t == "}":
            scope.pop()
            i += 1
            continue
        if t in ("syntax", "package", "import", "option", "reserved", "extensions"):
            i = skip_statement(i)
            continue
        kinds = [k for k, _ in scope]
        if kinds and kinds[-1] == "enum":
            # NAME = N [options];
            name = t
            i = skip_statement(i)
            if name != "option":
                enums[package + "." + path()].append(name)
            continue
        if kinds and kinds[-1] in ("message", "oneof"):
            label = ""
            if t in ("repeated", "optional"):
                label = t
                i += 1
                t = tokens[i]
            if t == "map":
                # map < K , V > name = N ;
                key, value = tokens[i + 2], tokens[i + 4]
                name = tokens[i + 6]
                ftype = "map<%s,%s>" % (key, value)
                field_type = value
            else:
                field_type = t
                name = tokens[i + 1]
                ftype = None
            i = skip_statement(i)
            pending_fields.append((package, path(), name, field_type, ftype, label))
            continue
        i += 1
    return pending_fields


def resolve(package, scope, name, known):
    if name in SCALARS or name.startswith("google.protobuf."):
        return name
    if name.startswith("."):
        return name[1:]
    if "." in name and name.split(".")[0] == "istio":
        return name
    parts = scope.split(".") if scope else []
    while True:
        candidate = ".".join([package] + parts + [name])
        if candidate in known:
            return candidate
        if not parts:
            break
        parts.pop()
    # Another package's message (status types): kept as written, and an
    # error below should one of the five kinds reach it.
    return "?" + name


def short(full):
    for prefix in ("istio.networking.v1alpha3.",):
        if full.startswith(prefix):
            return full[len(prefix):]
    return full


def main():
    root = Path(sys.argv[1])
    commit = sys.argv[2] if len(sys.argv) > 2 else "unknown"
    messages, enums, fields = {}, {}, []
    for package, rel in FILES:
        fields += parse(package, (root / rel).read_text(), messages, enums)
    known = set(messages) | set(enums)
    for package, scope, name, field_type, mapped, label in fields:
        resolved = resolve(package, scope, field_type, known)
        if mapped:
            shown = "map<string,%s>" % short(resolved)
        else:
            shown = ("repeated " if label == "repeated" else "") + short(resolved)
        messages[package + "." + scope].append((json_name(name), shown))
    print("# Istio's networking API as ringway validates it: generated by")
    print("# scripts/istio-fields.py from istio/api %s (%s)." % (commit, ", ".join(r for _, r in FILES)))
    print("# message NAME, then one indented line per field: JSON name, type;")
    print("# enum NAME VALUES... Do not edit by hand: rerun the script.")
    # Only what the five kinds reach.
    reach, stack = set(), ["istio.networking.v1alpha3." + k for k in ROOTS]
    types = {}
    for full, entries in messages.items():
        types[full] = [t for _, t in entries]
    while stack:
        full = stack.pop()
        if full in reach:
            continue
        reach.add(full)
        for shown in types.get(full, []):
            t = shown.replace("repeated ", "")
            if t.startswith("map<string,"):
                t = t[len("map<string,"):-1]
            for candidate in (t, "istio.networking.v1alpha3." + t):
                if candidate in messages or candidate in enums:
                    stack.append(candidate)
    for full in reach:
        for shown in types.get(full, []):
            if "?" in shown:
                raise SystemExit("%s: cannot resolve %s" % (full, shown))
    for full in sorted(m for m in messages if m in reach):
        print("message %s" % short(full))
        for name, shown in messages[full]:
            print("  %s %s" % (name, shown))
    for full in sorted(e for e in enums if e in reach):
        print("enum %s %s" % (short(full), " ".join(enums[full])))


main()
